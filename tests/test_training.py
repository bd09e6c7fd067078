"""ELIC training: the loss falls, checkpoints reload exactly, resume continues, export loads."""

from __future__ import annotations

import json

import numpy as np
import torch

from core.models import REGISTRY, build_model, load_model
from training.data import CropSampler, list_images
from training.train_elic import main as train_main
from training.train_elic import rd_loss


def test_loss_falls_on_real_crops(neon_rgb):
    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec)
    lambdas = torch.tensor(spec.lambdas)
    x = CropSampler([neon_rgb], crop=64, seed=0).batch(4)
    levels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss, _, _ = rd_loss(net, x, levels, lambdas)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_crop_sampler_reads_geotiffs_and_normalises_uint16(tmp_path, neon_rgb):
    import rasterio

    with rasterio.open(neon_rgb) as s:
        data = s.read().astype(np.uint16) * 4 + 1000
        profile = s.profile
    profile.update(dtype="uint16")
    p16 = tmp_path / "img16.tif"
    with rasterio.open(p16, "w", **profile) as d:
        d.write(data)
    paths = list_images([tmp_path])
    assert paths == [p16]
    batch = CropSampler(paths, crop=64, seed=1).batch(3)
    assert batch.shape == (3, 3, 64, 64)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    assert float(batch.max()) > 0.5  # stretched by min..max, not divided by 65535


def test_checkpoint_reloads_to_identical_outputs_and_resumes(tmp_path, neon_rgb):
    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--ckpt-every", "2", "--log-every", "1", "--threads", "1"]
    assert train_main(common + ["--steps", "4", "--val", str(neon_rgb), "--val-every", "4", "--val-size", "128"]) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 4

    spec = REGISTRY["elic-tiny"]
    a, b = build_model(spec).eval(), build_model(spec).eval()
    a.load_state_dict(ck["model"])
    b.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(a(x, torch.tensor([1.0]))["x_hat"].numpy(), b(x, torch.tensor([1.0]))["x_hat"].numpy())

    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert any("val" in r and set(r["val"]) == {"q1", "q2"} for r in log)

    assert train_main(common + ["--steps", "6", "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 6

    weights = tmp_path / "tiny.safetensors"
    assert train_main(["--model", "elic-tiny", "--out", str(out), "--export", str(weights)]) == 0
    loaded = load_model(str(weights))
    assert loaded.spec.name == "elic-tiny" and loaded.net.log_gain.shape == (2, spec.M)
