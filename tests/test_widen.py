"""Growing a trained ELIC into a wider architecture keeps what it computes (training/widen.py)."""

from __future__ import annotations

import math

import pytest
import torch

from core.models import REGISTRY, ModelSpec, build_model
from training.train_elic import level_weights, likelihood_bits
from training.widen import widen_state

WIDE = ModelSpec(name="wide-tiny", N=24, M=80, groups=(8, 8, 32, 32), lambdas=REGISTRY["elic-tiny"].lambdas)


def _trained_tiny():
    torch.manual_seed(1)
    net = build_model(REGISTRY["elic-tiny"])
    with torch.no_grad():  # random but not fresh: move every weight off its initial value
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _run(net, x, level):
    with torch.no_grad():
        out = net(x, torch.tensor([float(level)]))
    bpp = float(likelihood_bits(out["likelihoods"]).sum()) / (x.shape[2] * x.shape[3])
    return out["x_hat"], bpp


def test_widened_model_reconstructs_identically_at_about_the_same_rate(one_torch_thread):
    old = _trained_tiny()
    wide = build_model(WIDE)
    wide.load_state_dict(widen_state(old.state_dict(), REGISTRY["elic-tiny"], WIDE))
    wide.eval()
    x = torch.rand(1, 3, 128, 128)
    for level in (0, 1):
        x_old, bpp_old = _run(old, x, level)
        x_new, bpp_new = _run(wide, x, level)
        mse = float((x_old - x_new).pow(2).mean())
        assert mse == 0 or 10 * math.log10(1 / mse) > 80  # same reconstruction
        # new latent and hyper-latent channels start as zeros coded with near-certain densities
        assert bpp_old <= bpp_new < bpp_old * 1.01 + 0.002


def test_growing_the_latent_alone_leaves_no_saddle(one_torch_thread):
    """M grows, N does not (no new synthesis channels): the zero weights that read the new
    latents get a gradient at once (the synthesis' attention block at M has new outputs fed
    by the old latents), and from the second step the rows that write the new latents do."""
    spec = REGISTRY["elic-tiny"]
    m_only = ModelSpec(name="m-only", N=spec.N, M=spec.M + 32, groups=(*spec.groups, 32), lambdas=spec.lambdas)
    wide = build_model(m_only)
    wide.load_state_dict(widen_state(_trained_tiny().state_dict(), spec, m_only))
    wide.train()
    writer = [m for m in wide.g_a if isinstance(m, torch.nn.Conv2d)][-1]
    reader = next(m for m in wide.g_s if isinstance(m, torch.nn.ConvTranspose2d))
    opt = torch.optim.Adam(wide.parameters(), 1e-4)
    for step in range(2):
        opt.zero_grad()
        x = torch.rand(2, 3, 64, 64)
        out = wide(x, torch.tensor([1.0, 1.0]))
        ((out["x_hat"] - x) ** 2).mean().backward()
        assert reader.weight.grad[spec.M:].abs().sum() > 0
        assert (writer.weight.grad[spec.M:].abs().sum() > 0) == (step > 0)  # zero readers pass nothing back
        opt.step()


def test_new_groups_must_come_after_the_old_ones():
    bad = ModelSpec(name="bad", N=24, M=80, groups=(32, 8, 8, 32), lambdas=REGISTRY["elic-tiny"].lambdas)
    with pytest.raises(ValueError, match="must start with the old groups"):
        widen_state(_trained_tiny().state_dict(), REGISTRY["elic-tiny"], bad)


def test_level_weights_favour_high_rates_linearly():
    w = level_weights(5, 3.0)
    assert w.tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert level_weights(4, 1.0).tolist() == [1.0] * 4
