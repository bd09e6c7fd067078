"""Growing a trained ELIC into a wider architecture keeps what it computes (training/widen.py)."""

from __future__ import annotations

import math

import pytest
import torch

from core.models import REGISTRY, ModelSpec, build_model
from training.train_elic import level_weights, likelihood_bits
from training.rate_proxy import rounded_rate
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
    """M grows, N does not (no new synthesis channels): the rows that write the new latents
    get the distortion's gradient from the first step (the synthesis reads the new channels
    with small fresh weights), and the weights that read them once they are no longer zero."""
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
        assert writer.weight.grad[spec.M:].abs().sum() > 0
        opt.step()
    with torch.no_grad():  # push the new latents off zero: the readers learn from them
        writer.weight[spec.M:] *= 1e4
    opt.zero_grad()
    out = wide(x, torch.tensor([1.0, 1.0]))
    ((out["x_hat"] - x) ** 2).mean().backward()
    assert reader.weight.grad[spec.M:].abs().sum() > 0


def test_new_groups_must_come_after_the_old_ones():
    bad = ModelSpec(name="bad", N=24, M=80, groups=(32, 8, 8, 32), lambdas=REGISTRY["elic-tiny"].lambdas)
    with pytest.raises(ValueError, match="must start with the old groups"):
        widen_state(_trained_tiny().state_dict(), REGISTRY["elic-tiny"], bad)


def test_level_weights_favour_high_rates_linearly():
    w = level_weights(5, 3.0)
    assert w.tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert level_weights(4, 1.0).tolist() == [1.0] * 4


def test_a_rounded_rate_group_gets_no_rate_gradient_and_its_true_rate(one_torch_thread):
    """With the rounded rate, a group's entropy model gives its latents no gradient (the
    noisy proxy does) and the rate of the rounded latents (what eval mode computes); the
    other groups keep the proxy; off again, the group has the proxy back."""
    from compressai.entropy_models import GaussianConditional

    net = _trained_tiny().train()
    codecs = net.latent_codec.latent_codec["y"].latent_codec
    last = len(REGISTRY["elic-tiny"].groups) - 1

    def entropy_models(k):
        return [m for m in codecs[f"y{k}"].modules() if isinstance(m, GaussianConditional)]

    def rate(model, training=None):
        torch.manual_seed(0)
        y = (3 * torch.randn(1, 8, 6, 6)).requires_grad_(True)
        scales, means = torch.full_like(y, 0.8), torch.zeros_like(y)
        _, lik = model(y, scales, means) if training is None else model(y, scales, means, training=training)
        bits = -torch.log2(lik).sum()
        bits.backward()
        return float(bits), float(y.grad.abs().sum())

    assert all(rate(m)[1] > 0 for k in range(last + 1) for m in entropy_models(k))
    rounded_rate(net, [last], True)
    for m in entropy_models(last):
        bits, grad = rate(m)
        assert grad == 0 and bits == rate(m, training=False)[0]
    assert all(rate(m)[1] > 0 for k in range(last) for m in entropy_models(k))
    rounded_rate(net, [last], False)
    assert all(rate(m)[1] > 0 for m in entropy_models(last))


def test_new_group_steps_scale_adams_step_on_the_new_groups_rows_only(one_torch_thread):
    """The same Adam step with --new-group-lr-scale 4: the rows that write, read and code the
    new group move four times as far; every other weight moves exactly as without it."""
    from training.new_group_lr import NewGroupSteps, new_group_slices

    def one_step(scale, freeze_rest=False):
        torch.manual_seed(3)
        net = build_model(WIDE).train()
        x, level = torch.rand(1, 3, 64, 64), torch.tensor([1.0])
        with torch.no_grad():
            net(x, level)  # the spatial contexts' masked convs zero their masked weights in place
        start = {k: v.clone() for k, v in net.state_dict().items()}
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        steps = NewGroupSteps(new_group_slices(net, WIDE.groups, 3), scale,
                              list(net.parameters()) if freeze_rest else None)
        out = net(x, level)
        (out["x_hat"].square().mean() + likelihood_bits(out["likelihoods"]).sum()).backward()
        steps.before()
        opt.step()
        steps.after()
        return {k: v - start[k] for k, v in net.state_dict().items()}, steps.targets

    plain, targets = one_step(1.0)
    boosted, _ = one_step(4.0)
    alone, _ = one_step(4.0, freeze_rest=True)  # --new-group-only: nothing else moves
    rows = {name: r for name, _, r in targets}
    new = slice(48, 80)  # group 3 of (8, 8, 32, 32)
    assert rows["g_a.13.weight"] == new and rows["g_s.1.weight"] == new  # the latent's writer and reader
    assert any(n.startswith("latent_codec.y.latent_codec.y3.") and r == slice(None) for n, r in rows.items())
    assert not any(".y0." in n or ".y1." in n or ".y2." in n for n in rows)
    for name, delta in plain.items():
        if name in rows:
            assert torch.allclose(boosted[name][rows[name]], 4 * delta[rows[name]], atol=1e-7), name
            rest = torch.ones(delta.shape[0], dtype=torch.bool)
            rest[rows[name]] = False
            assert torch.equal(boosted[name][rest], delta[rest]), name
            assert torch.allclose(alone[name][rows[name]], 4 * delta[rows[name]], atol=1e-7), name
            assert not alone[name][rest].any(), name
        else:
            assert torch.equal(boosted[name], delta), name
            assert not alone[name].any(), name
    assert plain["g_a.13.weight"][new].abs().sum() > 0
