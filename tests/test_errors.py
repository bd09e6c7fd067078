"""Bad input and faults: one-line errors, non-zero exit, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from core import tile_codec
from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.errors import CodecError
from core.format.container import ContainerReader
from core.options import CompressParams


def run_cli(capsys, *argv):
    code = tile_codec.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def container(tmp_path_factory, tiny_weights, neon_rgb):
    out = tmp_path_factory.mktemp("c") / "neon.crsic"
    compress_raster(neon_rgb, out, CompressParams(model=tiny_weights, quality=1, tile=128, overlap=0))
    return out


@pytest.fixture
def float_container(tmp_path_factory, tiny_weights, neon_rgb):
    """A format-1 container: float entropy parameters, the ones another machine can compute differently."""
    out = tmp_path_factory.mktemp("c1") / "neon_v1.crsic"
    compress_raster(neon_rgb, out, CompressParams(model=tiny_weights, quality=1, tile=128, overlap=16, format=1))
    return out


def assert_one_line_error(code, err, pattern):
    assert code == 1
    shown = [l.split("\r")[-1] for l in err.splitlines()]  # what a terminal shows after progress bars
    lines = [l for l in shown if l.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], err
    assert "Traceback" not in err


def test_missing_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nope.tif")
    assert_one_line_error(code, err, "no such file")


def test_not_a_raster(tmp_path, capsys, tiny_weights):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a raster")
    code, _, err = run_cli(capsys, "compress", bad, "--model", tiny_weights)
    assert_one_line_error(code, err, "not a raster")
    assert files(tmp_path) == ["notes.tif"]


def test_unsupported_dtype(tmp_path, capsys, tiny_weights, neon_rgb):
    with rasterio.open(neon_rgb) as s:
        profile = s.profile
        data = s.read().astype("float32")
    profile.update(dtype="float32")
    src = tmp_path / "float.tif"
    with rasterio.open(src, "w", **profile) as d:
        d.write(data)
    code, _, err = run_cli(capsys, "compress", src, "--model", tiny_weights, "--quality", 1)
    assert_one_line_error(code, err, "unsupported data type float32")
    assert files(tmp_path) == ["float.tif"]


def test_output_exists_needs_overwrite(tmp_path, capsys, tiny_weights, neon_rgb):
    out = tmp_path / "x.crsic"
    out.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "compress", neon_rgb, "-o", out, "--model", tiny_weights, "--quality", 1)
    assert_one_line_error(code, err, "output exists")
    assert out.read_bytes() == b"precious"
    code, out_text, _ = run_cli(capsys, "compress", neon_rgb, "-o", out, "--model", tiny_weights, "--quality", 1,
                                "--tile", 256, "--overwrite", "--quiet")
    assert code == 0 and "bpp" in out_text and "ratio" in out_text
    assert out.read_bytes()[:5] == b"CRSIC"


def test_bad_band_and_quality(capsys, tiny_weights, neon_rgb):
    code, _, err = run_cli(capsys, "compress", neon_rgb, "--model", tiny_weights, "--bands", "2,7")
    assert_one_line_error(code, err, "band 7 does not exist")
    code, _, err = run_cli(capsys, "compress", neon_rgb, "--model", tiny_weights, "--quality", 9)
    assert_one_line_error(code, err, "quality must be between 0 and 2")


def test_truncated_container(tmp_path, capsys, container, tiny_weights):
    data = container.read_bytes()
    cut = tmp_path / "cut.crsic"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "decompress", cut, "--model", tiny_weights)
    assert_one_line_error(code, err, "truncated")
    assert files(tmp_path) == ["cut.crsic"]


def test_no_enhance_with_fidelity_is_refused(tmp_path, capsys, container, tiny_weights):
    """--fidelity would be silently ignored with --no-enhance: refused, for one file and for a batch."""
    out = tmp_path / "out.tif"
    code, _, err = run_cli(capsys, "decompress", container, "-o", out, "--model", tiny_weights,
                           "--no-enhance", "--fidelity", "0.5")
    assert_one_line_error(code, err, "give --no-enhance or --fidelity, not both")
    code, _, err = run_cli(capsys, "batch", "decompress", container, "-o", tmp_path, "--model", tiny_weights,
                           "--no-enhance", "--fidelity", "0.5")
    assert_one_line_error(code, err, "give --no-enhance or --fidelity, not both")
    assert files(tmp_path) == []


def test_not_a_container(tmp_path, capsys, neon_rgb):
    fake = tmp_path / "fake.crsic"
    fake.write_bytes(neon_rgb.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "info", fake)
    assert_one_line_error(code, err, "not a Code-RSIC container")


def test_corrupted_tile_is_caught_by_checksum(tmp_path, capsys, container, tiny_weights):
    with ContainerReader(container) as r:
        entry = r.entries[2]
    data = bytearray(container.read_bytes())
    data[entry.offset + entry.length // 2] ^= 0xFF
    bad = tmp_path / "bad.crsic"
    bad.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "decompress", bad, "-o", tmp_path / "out.tif", "--model", tiny_weights)
    assert_one_line_error(code, err, "tile 2 is corrupt (checksum mismatch)")
    assert files(tmp_path) == ["bad.crsic"]


def test_container_made_with_other_weights(tmp_path, capsys, container):
    from core.models import REGISTRY, build_model, save_weights

    torch.manual_seed(1)
    other = build_model(REGISTRY["elic-tiny"]).eval()
    other.update(force=True)
    path = tmp_path / "other.safetensors"
    save_weights(other, REGISTRY["elic-tiny"], path)
    code, _, err = run_cli(capsys, "decompress", container, "-o", tmp_path / "o.tif", "--model", path)
    assert_one_line_error(code, err, "was made with model 'elic-tiny'")
    assert "pass the matching --model" in err
    assert files(tmp_path) == ["other.safetensors"]


def test_interrupted_job_leaves_nothing(tmp_path, tiny_weights, neon_rgb):
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress_raster(neon_rgb, tmp_path / "a.crsic", CompressParams(model=tiny_weights, quality=1, tile=128),
                        progress=interrupt)
    assert calls == [1, 2] and files(tmp_path) == []


def test_interrupted_decode_leaves_nothing(tmp_path, container, tiny_weights):
    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decompress_raster(container, tmp_path / "d.tif", model=tiny_weights, progress=interrupt)
    assert files(tmp_path) == []


def test_decoding_under_other_numeric_settings(tmp_path, container, tiny_weights):
    """Another thread count and oneDNN off (as on another machine): the per-tile symbol
    checksums must agree, or the desync must be reported - never silent garbage."""
    ref = tmp_path / "ref.tif"
    decompress_raster(container, ref, model=tiny_weights)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.backends.mkldnn.enabled = False
        other = tmp_path / "other.tif"
        try:
            decompress_raster(container, other, model=tiny_weights)
        except CodecError as exc:
            assert "desync" in str(exc) and "tiles" in str(exc)
            return
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = True
    with rasterio.open(ref) as a, rasterio.open(other) as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 2  # float noise in synthesis only, same symbols


def test_entropy_desync_is_detected_per_tile(tmp_path, capsys, float_container, tiny_weights):
    """Simulate a machine whose hyper-decoder arithmetic differs: symbols decode wrong (format 1;
    format 2 computes the probabilities in integers, see test_portable.py)."""
    container = float_container
    from core.codec.tile_coder import get_coder

    coder = get_coder(tiny_weights, "cpu")
    h_s = coder.model.net.latent_codec["hyper"].h_s
    saved = [p.detach().clone() for p in h_s.parameters()]
    try:
        with torch.no_grad():
            for p in h_s.parameters():
                p.mul_(1.05)
        code, _, err = run_cli(capsys, "decompress", container, "-o", tmp_path / "d.tif", "--model", tiny_weights)
    finally:
        with torch.no_grad():
            for p, s in zip(h_s.parameters(), saved):
                p.copy_(s)
    assert_one_line_error(code, err, "entropy decoding desync in")
    assert "tiles 0" in err
    assert files(tmp_path) == []
