"""The decoder-side enhancer: stage shapes, determinism, frozen prior, train steps, rasters.

Tiny configurations only (``TINY_CONFIG``); the whole file runs in well under two
minutes on a CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from core.models.code_lookup import CodeLookup
from core.models.hpin import Enhancer
from core.models.vqgan import TINY_CONFIG, VQGAN, EnhancerConfig
from core.options import CompressParams, DecompressParams, EnhanceParams

CFG = TINY_CONFIG


def _seeded(cls, seed=0):
    torch.manual_seed(seed)
    return cls(CFG).eval()


# ---------------------------------------------------------------- shapes and determinism

def test_config_roundtrip():
    assert EnhancerConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
    assert EnhancerConfig().pad_multiple == 64


def test_vqgan_shapes_and_determinism():
    net = _seeded(VQGAN)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        y1, idx1, loss = net(x)
        y2, idx2, _ = net(x)
    assert y1.shape == x.shape
    assert idx1.shape == (2, 8, 12) and idx1.max() < CFG.n_codes
    assert torch.equal(y1, y2) and torch.equal(idx1, idx2)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # the quantised codes are codebook entries
    zq = net.encode(x)[0]
    assert torch.allclose(zq, net.quantizer.lookup(idx1), atol=1e-6)


def test_lookup_shapes_and_determinism():
    net = _seeded(CodeLookup)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats, logits, z_l = net(x)
        _, logits2, _ = net(x)
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8]
    assert logits.shape == (1, CFG.n_codes, 8, 8)
    assert z_l.shape == (1, CFG.code_dim, 8, 8)
    assert torch.equal(logits, logits2)


def test_enhancer_any_size_deterministic_and_fidelity():
    net = _seeded(Enhancer)
    x = torch.rand(1, 3, 70, 45)
    a = net.enhance(x, 0.5)
    b = net.enhance(x, 0.5)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    # MCM outputs start at zero: an untrained HPIN is the pure code lookup at any w
    assert torch.allclose(net.enhance(x, 0.0), net.enhance(x, 1.0))
    for p in net.fusion.parameters():
        p.data.normal_(0, 0.1)
    assert not torch.allclose(net.enhance(x, 0.0), net.enhance(x, 1.0))
    # per-sample fidelity
    x2 = torch.rand(2, 3, 32, 32)
    out, logits, z_l = net(x2, torch.tensor([0.0, 1.0]))
    assert out.shape == x2.shape and logits.shape == (2, CFG.n_codes, 4, 4)


def test_input_skip_gate():
    from dataclasses import replace

    cfg = replace(CFG, input_skip=True)
    assert EnhancerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    torch.manual_seed(0)
    net = Enhancer(cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = net(x, 0.0)[0]
        # untrained gate is 0.5 and MCMs start at zero: w = 1 is halfway between decode and input
        assert torch.allclose(net(x, 1.0)[0], (plain + x) / 2, atol=1e-6)
        # a closed gate leaves the codebook decode; per-sample w
        net.skip.net[-1].bias.fill_(-1e4)
        assert torch.allclose(net(x, torch.tensor([0.0, 1.0]))[0], plain, atol=1e-6)
    # old configs (no key) still load without the gate
    d = CFG.to_dict()
    d.pop("input_skip")
    assert Enhancer(EnhancerConfig.from_dict(d)).skip is None


# ---------------------------------------------------------------- training pipeline

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_weights_module):
    """Stage 1 -> pair cache -> stage 2 -> stage 3 -> export, each for a couple of steps."""
    from training import lq_pairs, train_codebook, train_hpin, train_lookup

    d = tmp_path_factory.mktemp("enh")
    data = "tests/data/neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
    common = ["--config", "tiny", "--threads", "1", "--batch", "2", "--crop", "64", "--val-every", "2",
              "--val-size", "64", "--val-limit", "2", "--log-every", "1", "--ckpt-every", "1"]
    assert train_codebook.main(["--data", data, "--val", data, "--out", str(d / "s1"), "--steps", "2",
                                "--lpips-weight", "0", "--restart-every", "1", *common]) == 0
    for name, extra in (("pairs", []), ("val", ["--center"])):
        assert lq_pairs.main(["--data", data, "--elic", tiny_weights_module, "--out", str(d / f"{name}.npz"),
                              "--count", "4", "--crop", "64", "--batch", "2", "--threads", "1", *extra]) == 0
    pairs = ["--pairs", str(d / "pairs.npz"), "--val-pairs", str(d / "val.npz")]
    assert train_lookup.main([*pairs, "--codebook", str(d / "s1" / "last.pt"), "--out", str(d / "s2"),
                              "--steps", "2", *common]) == 0
    assert train_hpin.main([*pairs, "--codebook", str(d / "s1" / "last.pt"), "--lookup", str(d / "s2" / "last.pt"),
                            "--out", str(d / "s3"), "--steps", "2", "--lpips-weight", "0",
                            "--fuse-levels", "0", "1", "2", "3", "--input-skip", *common]) == 0
    # resume continues from the checkpoint
    assert train_hpin.main([*pairs, "--codebook", str(d / "s1" / "last.pt"), "--out", str(d / "s3"), "--steps", "3",
                            "--lpips-weight", "0", "--resume", *common]) == 0
    weights = d / "enhancer.safetensors"
    assert train_hpin.main(["--out", str(d / "s3"), "--export", str(weights)]) == 0
    return d, weights


@pytest.fixture(scope="module")
def tiny_weights_module(tmp_path_factory) -> str:
    from core.models import REGISTRY, build_model, save_weights

    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec).eval()
    net.update(force=True)
    path = tmp_path_factory.mktemp("elic") / "elic-tiny.safetensors"
    save_weights(net, spec, path)
    return str(path)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_train_steps_log_and_checkpoint(pipeline):
    d, _ = pipeline
    for stage, steps in (("s1", 2), ("s2", 2), ("s3", 3)):
        ck = _load(d / stage / "last.pt")
        assert ck["step"] == steps
        lines = [json.loads(x) for x in (d / stage / "log.jsonl").read_text().splitlines()]
        assert any("val" in rec for rec in lines)
        assert all(np.isfinite(rec["loss"]) for rec in lines if "loss" in rec)


def test_model_card_from_run_folders(pipeline, tmp_path):
    """The card lists each stage's steps from its checkpoint and the weights' real sha256."""
    from core.models import file_sha256
    from training import enhancer_card

    d, weights = pipeline
    card = tmp_path / "card.md"
    assert enhancer_card.main(["--weights", str(weights), "--runs", str(d / "s1"), str(d / "s2"), str(d / "s3"),
                               "--hardware", "test CPU", "--notes", "## Reproduce", "--out", str(card)]) == 0
    text = card.read_text()
    assert file_sha256(weights) in text and "test CPU" in text and "## Reproduce" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 1 ", "| 2 ", "| 3 "))]
    assert [row.split("|")[2].strip() for row in rows] == ["2", "2", "3"]


def test_schedule_follows_the_wall_time_budget(tmp_path):
    """With --max-minutes, the LR schedule reaches its end when the time does, not only at --steps."""
    from training.enhance_common import Run, lr_at

    run = Run(str(tmp_path / "r"), max_minutes=1.0)
    run.step = 10
    assert run.schedule_step(1000) == 10  # just started: the real step
    run.start -= 45  # three quarters of the budget spent
    assert 740 <= run.schedule_step(1000) <= 760
    run.start -= 15
    assert run.schedule_step(1000) >= 1000
    assert lr_at(run.schedule_step(1000), 1000, 1e-3) == pytest.approx(1e-4)
    assert Run(str(tmp_path / "s")).schedule_step(1000) == 0  # no budget: steps only


def test_codebook_and_decoder_frozen_in_stages_2_and_3(pipeline):
    d, _ = pipeline
    s1 = _load(d / "s1" / "last.pt")["model"]
    s2 = _load(d / "s2" / "last.pt")["model"]
    s3 = _load(d / "s3" / "last.pt")["model"]
    prior = [k for k in s1 if k.startswith(("quantizer.", "decoder."))]
    assert prior and any(k.startswith("decoder.") for k in prior)
    for k in prior:
        assert torch.equal(s1[k], s2[k]), k
        assert torch.equal(s1[k], s3[k]), k
    # stage 2 trained the lookup; stage 3 trained the fusion and E_L but not the Transformer
    assert torch.equal(s2["lookup.head.weight"], s3["lookup.head.weight"])
    assert any(k not in s2 or not torch.equal(s2[k], s3[k]) for k in s3 if k.startswith("fusion."))
    assert any(not torch.equal(s2[k], s3[k]) for k in s3 if k.startswith("lookup.encoder."))


def test_stage2_and_3_parameters_have_no_grad_on_prior(pipeline):
    """The optimisers of stages 2 and 3 hold no prior parameter."""
    d, _ = pipeline
    for stage in ("s2", "s3"):
        ck = _load(d / stage / "last.pt")
        n_opt = sum(len(g["params"]) for g in ck["opt"]["param_groups"])
        net = Enhancer(EnhancerConfig.from_dict(ck["config"]))
        n_prior = sum(1 for m in net.prior_modules() for _ in m.parameters())
        n_all = sum(1 for _ in net.parameters())
        assert n_opt <= n_all - n_prior


# ---------------------------------------------------------------- rasters

def _write(path, data, **kw):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=str(data.dtype), crs="EPSG:32633", transform=from_origin(500000, 4100000, 0.5, 0.5), **kw)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def _georef(path):
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height, ds.count, ds.dtypes, ds.nodata


def test_enhance_raster_keeps_georeferencing(pipeline, tmp_path, neon_rgb):
    from core.enhance import enhance_raster

    _, weights = pipeline
    out = tmp_path / "enh.tif"
    res = enhance_raster(neon_rgb, out, EnhanceParams(enhancer=str(weights), fidelity=0.7, window=128, overlap=16))
    assert _georef(out) == _georef(neon_rgb)
    assert res["fidelity"] == 0.7 and res["windows"] == 16
    with rasterio.open(out) as ds:
        assert ds.read().std() > 0


def test_enhance_jpeg_geotiff_and_cli(pipeline, tmp_path, neon_rgb):
    """A JPEG-compressed GeoTIFF (another codec) is enhanced with the CLI subcommand."""
    from core.tile_codec import main

    _, weights = pipeline
    with rasterio.open(neon_rgb) as ds:
        data, crs, transform = ds.read(), ds.crs, ds.transform
    src = tmp_path / "jpeg.tif"
    with rasterio.open(src, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", crs=crs, transform=transform, compress="JPEG", jpeg_quality=20,
                       photometric="YCBCR", tiled=True, blockxsize=128, blockysize=128) as ds:
        ds.write(data)
    out = tmp_path / "jpeg.enh.tif"
    assert main(["enhance", str(src), "-o", str(out), "--enhancer", str(weights), "--fidelity", "1",
                 "--quiet"]) == 0
    assert _georef(out) == _georef(src)
    assert main(["enhance", str(src), "-o", str(out), "--enhancer", str(weights), "--quiet"]) == 1  # exists


def test_enhance_keeps_nodata_and_uint16(pipeline, tmp_path):
    from core.enhance import enhance_raster

    _, weights = pipeline
    rng = np.random.default_rng(0)
    data = rng.integers(100, 2000, size=(1, 90, 130)).astype(np.uint16)
    data[:, :10, :] = 0
    src = tmp_path / "pan.tif"
    _write(src, data, nodata=0)
    out = tmp_path / "pan.enh.tif"
    enhance_raster(src, out, EnhanceParams(enhancer=str(weights), window=64, overlap=16))
    assert _georef(out) == _georef(src)
    with rasterio.open(out) as ds:
        got = ds.read()
    assert (got[:, :10, :] == 0).all()  # nodata pixels copied unchanged
    assert got[:, 10:].min() >= 100 and got[:, 10:].max() <= 1999  # within the band's range


def test_windows_blend_without_seams_when_identity(tmp_path, neon_rgb, identity_enhancer):
    """With an identity enhancer the blended output equals the input: the window ramps sum to one."""
    import core.enhance.raster as er

    out = tmp_path / "id.tif"
    er.enhance_raster(neon_rgb, out, EnhanceParams(window=96, overlap=24))
    with rasterio.open(neon_rgb) as a, rasterio.open(out) as b:
        assert np.array_equal(a.read(), b.read())


def test_decompress_without_enhancer_weights_still_decodes(tmp_path, neon_rgb, tiny_weights):
    from core.codec.compress import compress_raster
    from core.enhance import decompress_enhanced

    c = tmp_path / "a.crsic"
    compress_raster(neon_rgb, c, CompressParams(model=tiny_weights, quality=1, tile=256, overlap=0))
    res = decompress_enhanced(c, tmp_path / "a.tif", DecompressParams(
        model=tiny_weights, enhancement=EnhanceParams(enhancer=str(tmp_path / "missing.safetensors"))))
    assert res["enhanced"] is False and "not found" in res["enhancement"]
    res = decompress_enhanced(c, tmp_path / "b.tif", DecompressParams(model=tiny_weights, enhance=False))
    assert res["enhanced"] is False
    assert _georef(tmp_path / "a.tif") == _georef(tmp_path / "b.tif")


def test_decompress_enhanced(pipeline, tmp_path, neon_rgb, tiny_weights):
    from core.codec.compress import compress_raster
    from core.enhance import decompress_enhanced

    _, weights = pipeline
    c = tmp_path / "a.crsic"
    compress_raster(neon_rgb, c, CompressParams(model=tiny_weights, quality=1, tile=256, overlap=0))
    phases = set()
    res = decompress_enhanced(c, tmp_path / "e.tif", DecompressParams(
        model=tiny_weights, enhance=True, enhancement=EnhanceParams(enhancer=str(weights), fidelity=0.3)),
        progress=lambda phase, done, total: phases.add(phase))
    assert res["enhanced"] is True and res["fidelity"] == 0.3 and phases == {"decode", "enhance"}
    assert _georef(tmp_path / "e.tif") == _georef(neon_rgb)
    # the same pixels as the two-step path: plain decode to a GeoTIFF, then enhance that file
    from core.codec.decompress import decompress_raster
    from core.enhance import enhance_raster
    from core.format.container import ContainerReader
    from core.format.normalization import BandRange

    decompress_raster(c, tmp_path / "plain.tif", model=tiny_weights)
    with ContainerReader(c) as reader:
        ranges = [BandRange(*r) for r in reader.header.ranges]
    enhance_raster(tmp_path / "plain.tif", tmp_path / "two_step.tif",
                   EnhanceParams(enhancer=str(weights), fidelity=0.3), ranges=ranges)
    with rasterio.open(tmp_path / "e.tif") as a, rasterio.open(tmp_path / "two_step.tif") as b:
        assert np.array_equal(a.read(), b.read())
    # COG output through the same path
    res = decompress_enhanced(c, tmp_path / "e_cog.tif", DecompressParams(
        model=tiny_weights, enhance=True, cog=True, enhancement=EnhanceParams(enhancer=str(weights))))
    with rasterio.open(tmp_path / "e_cog.tif") as ds:
        assert ds.driver == "GTiff" and ds.overviews(1) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_the_default_enhancement_range_is_one_lambda_for_every_model():
    """The shipped enhancers serve the rates they were trained at: lambda <= 0.002, which is
    quality 4 of elic-lite(-s) and quality 5 of elic-v2 and elic-v3 (one level lower to start)."""
    from core.models import ENHANCERS, REGISTRY
    from core.models.registry import quality_at_lambda

    spec = ENHANCERS["enhancer-fast"]
    assert spec.max_default_quality(REGISTRY["elic-lite-s"].lambdas) == pytest.approx(4.0)
    assert spec.max_default_quality(REGISTRY["elic-v2"].lambdas) == pytest.approx(5.0)
    assert spec.max_default_quality(REGISTRY["elic-v3"].lambdas) == pytest.approx(5.0)
    assert quality_at_lambda((0.001, 0.004), 0.002) == pytest.approx(1.5)  # log-linear between levels
    assert quality_at_lambda((0.001, 0.004), 0.016) == pytest.approx(3.0)  # extrapolated past the top


def test_shipped_enhancer_runs_by_default_only_at_the_qualities_it_serves(tmp_path, neon_rgb):
    """With the shipped weights and the default model: quality <= 4 is enhanced, quality 5 is not
    unless forced."""
    from core.codec.compress import compress_raster
    from core.models import ENHANCERS, REGISTRY
    from core.options import DEFAULT_ENHANCER, DEFAULT_MODEL
    from core.tile_codec import main

    assert ENHANCERS[DEFAULT_ENHANCER].max_default_quality(REGISTRY[DEFAULT_MODEL].lambdas) == pytest.approx(4.0)
    low, high = tmp_path / "q1.crsic", tmp_path / "q5.crsic"
    compress_raster(neon_rgb, low, CompressParams(quality=1))
    compress_raster(neon_rgb, high, CompressParams(quality=5))
    outs = {}
    for name, args in {"low": [low], "high": [high], "forced": [high, "--enhance"], "off": [low, "--no-enhance"]}.items():
        outs[name] = tmp_path / f"{name}.tif"
        assert main(["decompress", str(args[0]), "-o", str(outs[name]), "--quiet", "--json", *map(str, args[1:])]) == 0
    plain_high = tmp_path / "plain_high.tif"
    assert main(["decompress", str(high), "-o", str(plain_high), "--no-enhance", "--quiet"]) == 0
    with rasterio.open(outs["high"]) as a, rasterio.open(plain_high) as b, rasterio.open(outs["forced"]) as f:
        assert np.array_equal(a.read(), b.read())  # quality 5: plain decoding by default
        assert not np.array_equal(f.read(), b.read())  # --enhance changes pixels
    with rasterio.open(outs["low"]) as e, rasterio.open(outs["off"]) as p:
        assert not np.array_equal(e.read(), p.read())  # quality 1: enhanced by default
    assert _georef(outs["low"]) == _georef(neon_rgb)


def test_evaluator_has_an_enhanced_variant_of_our_codec(neon_rgb):
    """core.evaluate's "ours+enhance": same bits as "ours", enhanced pixels, same shape."""
    from core.evaluate import CODECS, EvalOptions

    with rasterio.open(neon_rgb) as ds:
        img = np.ascontiguousarray(ds.read(window=((0, 200), (0, 300))).transpose(1, 2, 0))
    plain, enhanced = CODECS["ours"](EvalOptions()), CODECS["ours+enhance"](EvalOptions())
    bits = plain.encode(img, 1.0)
    assert enhanced.encode(img, 1.0) == bits
    a, b = plain.decode(bits, img.shape[:2]), enhanced.decode(bits, img.shape[:2])
    assert a.shape == b.shape == img.shape and b.dtype == np.uint8
    assert 0 < np.abs(a.astype(int) - b.astype(int)).mean() < 20


def test_strip_enhancer_output_does_not_depend_on_strip_heights(pipeline):
    """Strips of any heights (the stitcher's, a file reader's) give the same pixels as one strip,
    and finished strips come out before the input ends (bounded memory)."""
    from core.enhance import StripEnhancer
    from core.format.normalization import BandRange
    from core.models import load_enhancer

    _, weights = pipeline
    net = load_enhancer(str(weights)).net
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, size=(3, 150, 100)).astype(np.uint8)
    invalid = np.zeros((150, 100), bool)
    invalid[:7, :20] = True

    def run(heights):
        enh = StripEnhancer(net, 0.5, 100, 150, [BandRange(0, 255)] * 3, "uint8", None, window=64, overlap=16)
        starts = np.cumsum([0, *heights])[:-1]
        strips = [(int(y), values[:, y : y + h], invalid[y : y + h]) for y, h in zip(starts, heights)]
        out, first_out_after = [], None
        fed = 0

        def feed():
            nonlocal fed
            for s in strips:
                fed += 1
                yield s

        for row, v, inv in enh.run(feed()):
            if first_out_after is None:
                first_out_after = fed
            out.append(v)
        return np.concatenate(out, axis=1), first_out_after

    whole, _ = run([150])
    pieces, first = run([10, 33, 1, 50, 56])
    assert np.array_equal(whole, pieces)
    assert first < 5  # a strip was finished before the last input strip arrived
    assert np.array_equal(whole[:, invalid], values[:, invalid])  # invalid pixels pass through


def test_edge_windows_are_enhanced_at_full_size_over_real_context(pipeline):
    """Windows cut by the right and bottom edges grow inwards to the full window: the network sees
    one shape (one compiled network on OpenVINO) and the edge pixels get real context, not padding."""
    from core.enhance import StripEnhancer
    from core.enhance.windows import enhance_tile
    from core.format.normalization import BandRange
    from core.models import load_enhancer

    _, weights = pipeline
    net = load_enhancer(str(weights)).net
    shapes = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def enhance(self, x, fidelity, bf16=False):
            shapes.append(tuple(x.shape))
            return net.enhance(x, fidelity, bf16=bf16)

    rng = np.random.default_rng(2)
    values = rng.integers(0, 256, size=(3, 150, 100)).astype(np.uint8)
    ranges = [BandRange(0, 255)] * 3
    enh = StripEnhancer(Recording(), 0.5, 100, 150, ranges, "uint8", None, window=64, overlap=16)
    out = np.concatenate([v for _, v, _ in enh.run([(0, values, np.zeros((150, 100), bool))])], axis=1)
    assert len(shapes) == len(enh.grid) == 6 and set(shapes) == {(1, 3, 64, 64)}
    # the corner below and right of every other window: the last window's alone, unblended
    corner = np.stack([r.to_unit(v) for r, v in zip(ranges, values[:, 150 - 64 :, 100 - 64 :])])
    alone = enhance_tile(Recording(), corner, 0.5)[:, 112 - 86 :, 64 - 36 :]
    expected = np.stack([r.from_unit(v, "uint8") for r, v in zip(ranges, alone)])
    assert np.array_equal(out[:, 112:, 64:], expected)


# ---------------------------------------------------------------- distillation

def test_pair_sampler_cuts_extra_arrays_from_the_same_place(tmp_path):
    """Teacher outputs (full size) and code maps (1/8) come out cut and turned with their pair."""
    from training.lq_pairs import PairSampler

    rng = np.random.default_rng(0)
    hq = rng.integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)
    np.savez(tmp_path / "p.npz", hq=hq, lq=255 - hq, level=np.zeros(3, np.float32))
    codes = hq[:, 0, 3::8, 5::8].astype(np.int64)  # one value per 8 x 8 cell
    sampler = PairSampler(str(tmp_path / "p.npz"), 32, seed=1, extra={"out": hq.copy(), "codes": codes})
    assert sampler.align == 8
    for _ in range(5):
        h, lq, out, c = sampler.batch(4)
        assert out.shape == h.shape == (4, 3, 32, 32) and c.shape == (4, 4, 4) and c.dtype == torch.int64
        assert torch.equal(out, h) and torch.allclose(lq, 1 - h)
        # each cut is on the 8-pixel grid, so the code map is the crop's own cells
        for i in range(4):
            crop = (h[i, 0] * 255).round().long()
            cells = {(int(crop[y, x]), (y // 8, x // 8)) for y in range(32) for x in range(32)}
            assert all((int(c[i, cy, cx]), (cy, cx)) in cells for cy in range(4) for cx in range(4))
    with pytest.raises(ValueError, match="line up"):
        PairSampler(str(tmp_path / "p.npz"), 32, extra={"bad": codes[:2]})


def test_a_student_starts_from_the_teacher_then_an_earlier_student_but_keeps_the_teachers_codebook():
    from core.models.hpin import Enhancer
    from core.models.vqgan import EnhancerConfig
    from training.distill_enhancer import student_from

    def net(channels):
        return Enhancer(EnhancerConfig(channels=channels, n_codes=16, code_dim=4, tf_dim=16, tf_layers=1,
                                       fuse_levels=(2, 3), input_skip=True))

    torch.manual_seed(0)
    teacher, earlier = net((8, 16, 24, 32)), net((4, 8, 16, 32))
    student, copied = student_from(net((4, 8, 40, 32)).cfg, teacher, earlier)
    mine, t, e = student.state_dict(), teacher.state_dict(), earlier.state_dict()
    assert torch.equal(mine["lookup.encoder.conv_in.weight"], e["lookup.encoder.conv_in.weight"])  # only the earlier fits
    assert torch.equal(mine["decoder.mid.0.weight"], e["decoder.mid.0.weight"])  # both fit: the later source
    assert torch.equal(mine["quantizer.embedding"], t["quantizer.embedding"])  # the prior stays the teacher's
    assert not torch.equal(t["quantizer.embedding"], e["quantizer.embedding"])
    fresh = "fusion.2.refine.pos.conv.weight"  # 40 channels at 1/4: neither fits
    assert fresh not in copied and mine[fresh].shape != t[fresh].shape and mine[fresh].shape != e[fresh].shape
    assert "lookup.encoder.conv_in.weight" in copied and "quantizer.embedding" in copied


def test_distilled_student_keeps_the_codebook_and_exports(pipeline, tmp_path):
    from core.models import load_enhancer
    from training import distill_enhancer

    d, teacher_path = pipeline
    teacher = load_enhancer(str(teacher_path)).net.float()
    out = tmp_path / "distill"
    args = ["--pairs", str(d / "pairs.npz"), "--val-pairs", str(d / "val.npz"), "--teacher", str(teacher_path),
            "--channels", "4", "8", "16", "32", "--fuse-levels", "2", "3", "--out", str(out),
            "--lpips-weight", "0", "--threads", "1", "--batch", "2", "--crop", "64",
            "--val-every", "2", "--val-size", "64", "--val-limit", "2", "--log-every", "1", "--ckpt-every", "1",
            "--w0-every", "2"]
    assert distill_enhancer.main([*args, "--steps", "2"]) == 0
    trained = [json.loads(x).get("w") for x in (out / "log.jsonl").read_text().splitlines()]
    assert [w for w in trained if w is not None] == [1.0, 0.0]  # every second step learns fidelity 0
    # the targets are the teacher's own output on the degraded crops, and its codes
    targets = np.load(out / "teacher.npz")
    lq = torch.from_numpy(np.load(d / "pairs.npz")["lq"]).float() / 255
    with torch.no_grad():
        t_out, logits, _ = teacher(lq, 1.0)
    assert np.abs(targets["out"].astype(int) - (t_out.clamp(0, 1) * 255).round().numpy().astype(int)).max() <= 1
    assert np.array_equal(targets["codes"], logits.argmax(1).numpy())
    # a restart continues (one more step), then the export is a loadable, slimmer enhancer
    assert distill_enhancer.main([*args, "--steps", "3", "--resume"]) == 0
    assert _load(out / "last.pt")["step"] == 3
    weights = tmp_path / "student.safetensors"
    assert distill_enhancer.main(["--out", str(out), "--export", str(weights)]) == 0
    student = load_enhancer(str(weights)).net
    assert student.cfg.channels == (4, 8, 16, 32) and student.cfg.fuse_levels == (2, 3)
    assert sorted(student.fusion) == ["2", "3"]
    assert torch.equal(student.quantizer.embedding, teacher.quantizer.embedding.to(student.quantizer.embedding.dtype))
    x = torch.rand(1, 3, 40, 72)
    y = student.float().enhance(x, 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(SystemExit, match="fidelity"):
        distill_enhancer.main([*args, "--steps", "1", "--w", "0.5"])
    from training import enhancer_card

    assert enhancer_card.main(["--weights", str(weights), "--runs", str(out)]) == 0
    card = weights.with_suffix(".md").read_text()
    assert "| distillation | 3 |" in card and "codebook" not in card


def test_shipped_fast_enhancer_keeps_the_teachers_prior_and_method():
    """enhancer-fast is a distilled Code-RSIC: the teacher's codebook, a lookup Transformer,
    HPIN fusion and the input gate, with slimmer stages and half the Transformer layers, and
    it carries its int8 network."""
    from core.models import ENHANCERS, load_enhancer

    fast_file, lite = load_enhancer("enhancer-fast"), load_enhancer("enhancer-lite").net
    fast = fast_file.net
    assert torch.equal(fast.quantizer.embedding, lite.quantizer.embedding)
    assert 0 < len(fast.lookup.layers) < len(lite.lookup.layers) and sorted(fast.fusion) == ["2", "3"]
    assert fast.skip is not None and fast.cfg.channels[:3] == (8, 16, 64)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(fast.decoder) < count(lite.decoder) and count(fast.fusion) < count(lite.fusion)
    assert ENHANCERS["enhancer-fast"].default_fidelity == ENHANCERS["enhancer-lite"].default_fidelity
    assert fast_file.int8_ir is not None and fast_file.int8_ir[0].startswith(b"<?xml")
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32))
    y = fast.float().enhance(x, 1.0)
    assert y.shape == x.shape and float((y - x).abs().mean()) < 0.2  # enhances, does not repaint


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
def test_bf16_enhancement_stays_close_to_f32(neon_rgb, monkeypatch):
    """On a CPU with native bf16 the enhancer computes in bf16 (options.PRECISION_ENV): codes
    whose logits nearly tie may flip, the rest of the picture stays within rounding of f32;
    ``--precision f32`` gives the f32 result exactly."""
    from core.enhance.windows import enhance_tile
    from core.models import load_enhancer
    from core.options import PRECISION_ENV

    net = load_enhancer("enhancer-lite").net.float()
    with rasterio.open(neon_rgb) as ds:
        unit = ds.read(window=((0, 128), (0, 128))).astype(np.float32) / 255
    x = torch.from_numpy(unit)[None]
    with torch.no_grad():
        f32, logits, _ = net(x, 1.0)
        b16, logits_b, _ = net(x, 1.0, bf16=True)
    assert b16.dtype == logits_b.dtype == torch.float32
    assert not torch.equal(logits, logits_b)  # really computed in bf16
    assert float((logits.argmax(1) == logits_b.argmax(1)).float().mean()) > 0.95
    err = (b16 - f32).abs()
    assert 0 < float(err.mean()) < 1 / 255 and float((err > 4 / 255).float().mean()) < 0.02
    monkeypatch.setenv(PRECISION_ENV, "f32")
    exact = enhance_tile(net, unit, 1.0)
    assert np.array_equal(exact, f32[0].clamp(0, 1).numpy())
    monkeypatch.setenv(PRECISION_ENV, "auto")
    auto = enhance_tile(net, unit, 1.0)
    assert np.allclose(auto, b16[0].clamp(0, 1).numpy(), atol=1e-6)
