"""The shipped ELIC weights: registered, intact, and better than JPEG on real imagery."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from PIL import Image

from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.compare.quality import raster_psnr
from core.models import DEFAULT_MODEL, REGISTRY, WEIGHTS_DIR, file_sha256, load_model
from core.options import CompressParams
from testdata import TEST_DATA

NEON = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"


def test_shipped_weights_match_registry():
    spec = REGISTRY[DEFAULT_MODEL]
    path = WEIGHTS_DIR / spec.weights_file
    assert path.exists(), "shipped weights missing"
    assert spec.sha256 == file_sha256(path)
    loaded = load_model(DEFAULT_MODEL)
    assert loaded.spec.levels == len(spec.lambdas) == 6


def jpeg_at_least(rgb: np.ndarray, bpp: float) -> tuple[float, float]:
    """(bpp, PSNR) of the smallest-quality JPEG whose file is at least ``bpp``."""
    h, w, _ = rgb.shape
    for q in range(2, 96):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        jbpp = buf.tell() * 8 / (h * w)
        if jbpp >= bpp:
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(float)
            return jbpp, 10 * np.log10(255**2 / ((dec - rgb) ** 2).mean())
    raise AssertionError("JPEG never reached the rate")


@pytest.fixture(scope="module")
def rate_points(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shipped")
    points = {}
    for q in (0, 1, 3, 6):
        c = tmp / f"q{q}.crsic"
        res = compress_raster(NEON, c, CompressParams(quality=q))
        d = tmp / f"q{q}.tif"
        decompress_raster(c, d)  # plain ELIC decoding (no enhancement)
        points[q] = (res["bpp"], raster_psnr(str(NEON), str(d)), d)
    return points


def test_rate_and_quality_grow_with_level(rate_points):
    """Including quality 0, extrapolated one level below the trained ones."""
    bpps = [rate_points[q][0] for q in (0, 1, 3, 6)]
    psnrs = [rate_points[q][1] for q in (0, 1, 3, 6)]
    assert bpps == sorted(bpps) and bpps[-1] < 2.0
    assert psnrs == sorted(psnrs)


def test_beats_jpeg_at_the_same_file_size(rate_points):
    with rasterio.open(NEON) as ds:
        rgb = ds.read().transpose(1, 2, 0)
    for q in (0, 1, 3):
        bpp, psnr, _ = rate_points[q]
        jbpp, jpsnr = jpeg_at_least(rgb, bpp)
        assert psnr > jpsnr, f"quality {q}: {psnr:.2f} dB at {bpp:.3f} bpp, JPEG {jpsnr:.2f} dB at {jbpp:.3f} bpp"


def test_colours_are_kept(rate_points):
    with rasterio.open(NEON) as s, rasterio.open(rate_points[6][2]) as d:
        a, b = s.read().astype(float), d.read().astype(float)
    assert np.abs(a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))).max() < 4


def test_target_bpp_is_approached(tmp_path):
    """The rate search interpolates between trained levels (needs monotone, trained levels)."""
    lo = compress_raster(NEON, tmp_path / "lo.crsic", CompressParams(quality=2))["bpp"]
    hi = compress_raster(NEON, tmp_path / "hi.crsic", CompressParams(quality=4))["bpp"]
    assert hi > lo
    target = (lo + hi) / 2
    res = compress_raster(NEON, tmp_path / "t.crsic", CompressParams(target_bpp=target))
    assert 2 < res["quality"] < 4
    assert abs(res["bpp"] - target) < 0.15 * (hi - lo)


def test_a_target_out_of_the_chosen_models_reach_is_coded_at_its_nearest_quality_with_a_note(tmp_path, capsys):
    from core.cli import main as cli_main
    from core.options import HIGH_RATE_MODEL

    assert REGISTRY[HIGH_RATE_MODEL].lambdas[-1] > REGISTRY[DEFAULT_MODEL].lambdas[-1]
    top = compress_raster(NEON, tmp_path / "top.crsic", CompressParams(quality=6))
    assert top["rate_note"] is None and top["model"] == DEFAULT_MODEL
    res = compress_raster(NEON, tmp_path / "high.crsic", CompressParams(model=DEFAULT_MODEL, target_bpp=8.0))
    assert res["quality"] == 6 and res["bpp"] == top["bpp"]  # the top quality, the same file
    assert res["rate_note"].startswith(f"8 bpp is above what {DEFAULT_MODEL} codes this raster at its top quality")
    assert res["rate_note"].endswith(f"--model {HIGH_RATE_MODEL} reaches higher rates")
    low = compress_raster(NEON, tmp_path / "low.crsic", CompressParams(target_bpp=0.001))
    assert low["quality"] < 1 and "is below what" in low["rate_note"] and low["model"] == DEFAULT_MODEL
    assert cli_main(["compress", str(NEON), "-o", str(tmp_path / "cli.crsic"), "--target-bpp", "8", "--quiet",
                     "--model", DEFAULT_MODEL]) == 0
    err = capsys.readouterr().err
    assert f"note: 8 bpp is above what {DEFAULT_MODEL} codes this raster" in err and len(err.splitlines()) == 1


def test_with_no_model_chosen_a_target_above_the_default_models_reach_is_coded_by_the_high_rate_model(tmp_path):
    """Only the rate search's choice changes: the container names the high-rate model, lands
    near the target and decodes with that model; the note says which model coded it and why."""
    from core.format.container import ContainerReader
    from core.options import HIGH_RATE_MODEL

    top = compress_raster(NEON, tmp_path / "top.crsic", CompressParams(quality=6))["bpp"]
    target = round(1.4 * top, 3)
    res = compress_raster(NEON, tmp_path / "auto.crsic", CompressParams(target_bpp=target))
    assert res["model"] == HIGH_RATE_MODEL and 0.85 < res["bpp"] / target < 1.15, (res["bpp"], target)
    note = f"coded with {HIGH_RATE_MODEL}: {target:g} bpp is above what {DEFAULT_MODEL} codes this raster at its top "
    assert res["rate_note"].startswith(note + "quality (about ") and res["rate_note"].endswith(" bpp)")
    predicted = float(res["rate_note"][len(note + "quality (about "):-len(" bpp)")])  # from sample tiles
    assert abs(predicted / top - 1) < 0.05, (predicted, top)
    with ContainerReader(tmp_path / "auto.crsic") as reader:
        assert reader.header.model.name == HIGH_RATE_MODEL
    decompress_raster(tmp_path / "auto.crsic", tmp_path / "auto.tif")
    assert raster_psnr(NEON, tmp_path / "auto.tif") > raster_psnr(NEON, _decoded(tmp_path, "top"))


def test_a_quality_above_the_default_models_levels_names_the_high_rate_model(tmp_path, capsys):
    from core.cli import main as cli_main
    from core.options import HIGH_RATE_MODEL

    top = len(REGISTRY[DEFAULT_MODEL].lambdas)
    out = tmp_path / "q.crsic"
    assert cli_main(["compress", str(NEON), "-o", str(out), "--quality", str(top + 1)]) != 0
    err = capsys.readouterr().err.strip()
    assert err == (f"error: quality must be between 0 and {top}, got {top + 1:.1f} for {DEFAULT_MODEL}; --model "
                   f"{HIGH_RATE_MODEL} has {len(REGISTRY[HIGH_RATE_MODEL].lambdas)} levels, for higher rates")
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written


def _decoded(tmp_path, stem: str):
    decompress_raster(tmp_path / f"{stem}.crsic", tmp_path / f"{stem}.tif")
    return tmp_path / f"{stem}.tif"


def test_elic_v2_is_shipped_and_reaches_higher_rates(tmp_path):
    """The registered alternative: intact, its 11 levels load, and its top quality codes
    the sample at a higher rate and PSNR than the default model's top quality."""
    spec = REGISTRY["elic-v2"]
    path = WEIGHTS_DIR / spec.weights_file
    assert spec.sha256 == file_sha256(path)
    assert load_model("elic-v2").spec.levels == len(spec.lambdas) == 11
    points = {}
    for model, q in ((DEFAULT_MODEL, 6), ("elic-v2", 6), ("elic-v2", 11)):
        c, d = tmp_path / f"{model}_{q}.crsic", tmp_path / f"{model}_{q}.tif"
        res = compress_raster(NEON, c, CompressParams(quality=q, model=model))
        decompress_raster(c, d)
        points[model, q] = (res["bpp"], raster_psnr(str(NEON), str(d)))
    top_default, mid_v2, top_v2 = points[DEFAULT_MODEL, 6], points["elic-v2", 6], points["elic-v2", 11]
    # on this 0.1 m forest the extra levels buy little (saturation, see its card), but they buy some
    assert top_v2[0] > 1.5 * top_default[0] and top_v2[1] > top_default[1] + 0.3, points
    assert abs(mid_v2[1] - top_default[1]) < 1.5, points  # the shared levels code alike


def test_elic_v3_candidate_is_intact_and_codes_the_sample_at_every_level_it_claims(tmp_path):
    """The campaign's candidate (issue 20): intact, grown to 11 levels, its top level codes the
    sample at least as well as elic-v2's top level (its higher ceiling is why it exists)."""
    spec = REGISTRY["elic-v3"]
    assert spec.sha256 == file_sha256(WEIGHTS_DIR / spec.weights_file)
    assert load_model("elic-v3").spec.levels == len(spec.lambdas) == 11
    points = {}
    for model, q in (("elic-v3", 1), ("elic-v3", 11), ("elic-v2", 11)):
        c, d = tmp_path / f"{model}_{q}.crsic", tmp_path / f"{model}_{q}.tif"
        res = compress_raster(NEON, c, CompressParams(quality=q, model=model))
        decompress_raster(c, d)
        points[model, q] = (res["bpp"], raster_psnr(str(NEON), str(d)))
    assert points["elic-v3", 1][0] < points["elic-v3", 11][0] / 5, points
    assert points["elic-v3", 11][1] >= points["elic-v2", 11][1], points
