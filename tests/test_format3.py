"""Format 3: tiles without overlap, entropy-coded on their own, synthesised across borders."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from core.codec.compress import compress_raster
from core.codec.decompress import container_info, decompress_raster
from core.codec.jobs import serial_map
from core.codec.latent_tiles import decode_stream, ring, whole_synthesis
from core.errors import BadInput, CodecError, CorruptContainer, DesyncError
from core.format.container import ContainerReader
from core.format.output import partial_path
from core.format.tiling import TileGrid
from core.options import CompressParams
from testdata import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TILE = 128


@pytest.fixture(scope="module")
def f3(tmp_path_factory, tiny_weights, neon_rgb_path):
    """The NEON raster (400 x 400, a nodata mask) as a format-3 container of 128 px tiles."""
    out = tmp_path_factory.mktemp("f3") / "neon.crsic"
    compress_raster(neon_rgb_path, out, CompressParams(model=tiny_weights, quality=1.5, tile=TILE))
    return out


@pytest.fixture(scope="module")
def neon_rgb_path():
    from testdata import TEST_DATA

    return TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"


@pytest.fixture(scope="module")
def full_decode(f3, tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("f3dec") / "full.tif"
    decompress_raster(f3, out, model=tiny_weights)
    with rasterio.open(out) as ds:
        return ds.read()


def test_format_3_is_the_default_and_has_no_overlap(f3):
    info = container_info(f3)
    assert info["format"] == 3 and info["portable"] and info["overlap"] == 0
    assert info["latent_margin"] >= 1 and info["analysis_margin"] % 16 == 0
    assert CompressParams().format == 3


def test_stitched_tiles_match_one_whole_raster_synthesis(f3, tiny_weights):
    """No blend bands: the tiles, each synthesised with its neighbours' latents, put side by
    side are the synthesis of the whole raster's latent (>= 45 dB)."""
    with ContainerReader(f3) as reader:
        h = reader.header
    grid = TileGrid(h.width, h.height, h.tile, h.overlap)
    stitched = np.zeros((3, h.height, h.width), np.float32)
    for index, values, _ in decode_stream(str(f3), h, grid, list(grid), tiny_weights, "cpu", serial_map):
        t = grid.tile_at(index // grid.n_cols, index % grid.n_cols)
        stitched[:, t.y0 : t.y1, t.x0 : t.x1] = values
    whole = whole_synthesis(str(f3), tiny_weights)
    mse = float(((stitched - whole) ** 2).mean())
    assert mse == 0 or 10 * math.log10(1 / mse) >= 45


@pytest.mark.parametrize("window", [(100, 90, 150, 130), (0, 0, 60, 60), (300, 330, 100, 70)])
def test_window_pixels_equal_the_full_decode(f3, tiny_weights, full_decode, tmp_path, window):
    out = tmp_path / "w.tif"
    res = decompress_raster(f3, out, model=tiny_weights, window=window)
    x, y, w, h = window
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(), full_decode[:, y : y + h, x : x + w])
    grid = TileGrid(400, 400, TILE, 0)
    assert res["tiles"] == len(grid.tiles_in(rasterio.windows.Window(*window)))


def test_window_reads_only_its_tiles_and_their_ring(f3, tiny_weights, tmp_path, monkeypatch):
    read = []
    original = ContainerReader.read_tile
    monkeypatch.setattr(ContainerReader, "read_tile", lambda self, i: read.append(i) or original(self, i))
    decompress_raster(f3, tmp_path / "w.tif", model=tiny_weights, window=(0, 0, 60, 60))
    assert sorted(read) == [0, 1, 4, 5]  # tile 0 and the three neighbours its margin reaches
    grid = TileGrid(400, 400, TILE, 0)
    assert [t.index for t in ring(grid, [grid.tile_at(1, 1)], 4)] == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_format_2_is_still_written_and_read(tmp_path, tiny_weights, neon_rgb_path):
    out = tmp_path / "f2.crsic"
    compress_raster(neon_rgb_path, out, CompressParams(model=tiny_weights, quality=1.5, tile=TILE, overlap=16,
                                                       format=2))
    info = container_info(out)
    assert info["format"] == 2 and info["overlap"] == 16 and "latent_margin" not in info
    decompress_raster(out, tmp_path / "f2.tif", model=tiny_weights)


def test_format_3_refuses_overlap_and_odd_tiles():
    with pytest.raises(BadInput, match="do not overlap"):
        CompressParams(overlap=16).validate()
    with pytest.raises(BadInput, match="multiple of 64"):
        CompressParams(tile=200).validate()
    with pytest.raises(BadInput, match="format-3"):
        CompressParams(format=2, overlap=32, resume=True).validate()


def _damage_tile(src, dst, index: int):
    """Rewrite one tile's latent bytes, every checksum recomputed (a crafted or re-sectored file)."""
    from fuzzing import Parts

    parts = Parts.parse(src.read_bytes())
    payloads = list(parts.payloads)
    p = bytearray(payloads[index])
    for k in range(len(p) // 2, len(p) // 2 + 8):
        p[k] ^= 0x5A
    payloads[index] = bytes(p)
    dst.write_bytes(parts.__class__(**{**parts.__dict__, "payloads": payloads}).build())


def test_a_damaged_tile_is_named_and_never_spoils_a_neighbour(f3, tiny_weights, full_decode, tmp_path):
    bad = tmp_path / "bad.crsic"
    _damage_tile(f3, bad, 5)
    with pytest.raises((CorruptContainer, DesyncError), match="tile 5"):
        decompress_raster(bad, tmp_path / "all.tif", model=tiny_weights)
    assert not (tmp_path / "all.tif").exists()
    # a tile next to it needs its latents: refused, never decoded wrongly
    with pytest.raises((CorruptContainer, DesyncError), match="tile 5"):
        decompress_raster(bad, tmp_path / "next.tif", model=tiny_weights, window=(0, 0, 60, 60))
    # a window out of its reach decodes exactly as before
    out = tmp_path / "far.tif"
    decompress_raster(bad, out, model=tiny_weights, window=(390, 390, 10, 10))  # tile 15: ring 10, 11, 14, 15
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(), full_decode[:, 390:, 390:])


def test_a_tile_record_that_disagrees_with_the_index_is_corrupt(f3, tmp_path, tiny_weights):
    data = bytearray(f3.read_bytes())
    with ContainerReader(f3) as reader:
        offset = reader.entries[3].offset
    data[offset - 12] ^= 1  # the record's length field of tile 3
    bad = tmp_path / "rec.crsic"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptContainer, match="tile 3 .*record"):
        decompress_raster(bad, tmp_path / "o.tif", model=tiny_weights)


# ---------------------------------------------------------------- resume


def _params(tiny_weights, **kw):
    return CompressParams(model=tiny_weights, quality=kw.pop("quality", 1.5), tile=TILE, **kw)


@pytest.mark.parametrize("cut", [0.0, 0.37, 0.71, 0.999])
def test_resume_continues_a_cut_file_to_the_same_bytes(f3, tmp_path, tiny_weights, neon_rgb_path, cut):
    whole = f3.read_bytes()
    with ContainerReader(f3) as reader:
        index_offset = max(e.offset + e.length for e in reader.entries)
    out = tmp_path / "neon.crsic"
    partial_path(out).write_bytes(whole[: int(index_offset * cut)])
    res = compress_raster(neon_rgb_path, out, _params(tiny_weights, resume=True))
    assert out.read_bytes() == whole and not partial_path(out).exists()
    assert res["resumed_tiles"] < 16


def test_resume_refuses_a_partial_file_of_another_command(f3, tmp_path, tiny_weights, neon_rgb_path):
    out = tmp_path / "neon.crsic"
    other = f3.read_bytes()[:3000]
    partial_path(out).write_bytes(other)
    with pytest.raises(BadInput, match="another command"):
        compress_raster(neon_rgb_path, out, _params(tiny_weights, quality=2.0, resume=True))
    assert partial_path(out).read_bytes() == other and not out.exists()  # left for its own command
    compress_raster(neon_rgb_path, out, _params(tiny_weights, quality=2.0))  # without --resume: starts again
    assert container_info(out)["quality"] == 2.0 and not partial_path(out).exists()


def test_a_killed_cli_compress_resumes_byte_identically(f3, tmp_path, tiny_weights, neon_rgb_path):
    out = tmp_path / "killed.crsic"
    cmd = [sys.executable, "-m", "core.tile_codec", "compress", str(neon_rgb_path), "-o", str(out), "--quiet",
           "--model", tiny_weights, "--quality", "1.5", "--tile", str(TILE), "--threads", "1"]
    # kill -9 once the partial file holds a few tiles
    proc = subprocess.Popen(cmd, cwd=ROOT)
    part = partial_path(out)
    import time

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and part.stat().st_size > 4000:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    if out.exists():
        pytest.skip("the job finished before it could be killed")
    assert part.exists() and not out.exists()
    err = subprocess.run(cmd + ["--resume", "--quality", "2"], cwd=ROOT, capture_output=True, text=True)
    assert err.returncode == 1 and err.stderr.strip().count("\n") == 0
    assert err.stderr.startswith("error:") and "another command" in err.stderr
    subprocess.run(cmd + ["--resume"], cwd=ROOT, check=True)
    assert out.read_bytes() == f3.read_bytes()


def test_errors_name_the_file(tmp_path, tiny_weights):
    with pytest.raises(CodecError):
        decompress_raster(tmp_path / "none.crsic", tmp_path / "o.tif", model=tiny_weights)
