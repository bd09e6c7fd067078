"""The committed containers (formats 1, 2 and 3) decode to known pixels, and compressing their
source again gives the same bytes: format changes are deliberate, old files stay readable."""

from __future__ import annotations

import hashlib

import pytest

import golden
from core.codec.compress import compress_raster
from core.codec.decompress import container_info, decompress_raster
from core.models import file_sha256
from core.options import CompressParams

VERSIONS = sorted(golden.GOLDENS)


@pytest.fixture(autouse=True)
def reference_runtime(monkeypatch):
    """The goldens are torch's bytes and pixels (the reference runtime); tests/test_runtime.py
    decodes them under the others."""
    from core.options import RUNTIME_ENV

    monkeypatch.setenv(RUNTIME_ENV, "torch")


def test_seeded_test_model_is_the_golden_one(tiny_weights):
    assert file_sha256(tiny_weights) == golden.WEIGHTS_SHA256


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_container_decodes_to_known_pixels(tmp_path, tiny_weights, version):
    g = golden.GOLDENS[version]
    assert hashlib.sha256(g.path.read_bytes()).hexdigest() == g.container_sha256
    assert container_info(g.path)["format"] == version
    out = tmp_path / "decoded.tif"
    decompress_raster(g.path, out, model=tiny_weights)
    assert golden.pixels_sha256(out) == g.decoded_sha256


@pytest.mark.parametrize("version", VERSIONS)
def test_compressing_the_golden_source_gives_the_same_bytes(tmp_path, tiny_weights, version):
    g = golden.GOLDENS[version]
    src = golden.make_source(tmp_path / "golden_source.tif")
    out = tmp_path / "again.crsic"
    compress_raster(src, out, CompressParams(model=tiny_weights, **g.settings))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == g.container_sha256


def test_format_2_catches_tiles_moved_with_their_checksums(tmp_path, tiny_weights):
    """A crafted file that swaps two tiles (payloads and checksums, all CRCs recomputed) is a
    desync in format 2: each tile's symbols CRC starts at its index."""
    from dataclasses import replace

    from core.errors import DesyncError
    from fuzzing import Parts

    import rasterio
    from rasterio.windows import Window

    src = tmp_path / "two_tiles.tif"  # two 128 px tiles without overlap: same shape, swappable
    with rasterio.open(golden.SOURCE) as ds:
        profile = dict(ds.profile, width=256, height=128, tiled=False)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        data = ds.read(window=Window(0, 0, 256, 128))
    with rasterio.open(src, "w", **profile) as out:
        out.write(data)
    original = tmp_path / "two.crsic"
    compress_raster(src, original, CompressParams(model=tiny_weights, quality=1.5, tile=128, overlap=0))
    decompress_raster(original, tmp_path / "two.tif", model=tiny_weights)
    parts = Parts.parse(original.read_bytes())
    assert len(parts.payloads) == 2
    payloads, crcs = list(parts.payloads), list(parts.symbols_crcs)
    payloads[0], payloads[1] = payloads[1], payloads[0]
    crcs[0], crcs[1] = crcs[1], crcs[0]
    moved = tmp_path / "moved.crsic"
    moved.write_bytes(replace(parts, payloads=payloads, symbols_crcs=crcs).build())
    with pytest.raises(DesyncError):
        decompress_raster(moved, tmp_path / "moved.tif", model=tiny_weights)
    assert not (tmp_path / "moved.tif").exists()
