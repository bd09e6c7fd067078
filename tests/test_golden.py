"""The committed v1 container decodes to known pixels, and compressing its source again
gives the same bytes: format changes are deliberate, version 1 files stay readable."""

from __future__ import annotations

import hashlib

import golden
from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.models import file_sha256
from core.options import CompressParams


def test_seeded_test_model_is_the_golden_one(tiny_weights):
    assert file_sha256(tiny_weights) == golden.WEIGHTS_SHA256


def test_golden_container_decodes_to_known_pixels(tmp_path, tiny_weights):
    assert hashlib.sha256(golden.GOLDEN.read_bytes()).hexdigest() == golden.CONTAINER_SHA256
    out = tmp_path / "decoded.tif"
    decompress_raster(golden.GOLDEN, out, model=tiny_weights)
    assert golden.pixels_sha256(out) == golden.DECODED_SHA256


def test_compressing_the_golden_source_gives_the_same_bytes(tmp_path, tiny_weights):
    src = golden.make_source(tmp_path / "golden_source.tif")
    out = tmp_path / "again.crsic"
    compress_raster(src, out, CompressParams(model=tiny_weights, **golden.SETTINGS))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == golden.CONTAINER_SHA256
