"""The streaming codec: tiling, container, round trips, random access, georeferencing."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from testdata import shared_fixture
from core.codec.compress import compress_raster
from core.codec.decompress import container_info, decompress_raster
from core.format.container import ContainerReader
from core.format.tiling import TileGrid
from core.options import CompressParams


def opts(weights, **kw):
    base = dict(model=weights, quality=1.5, tile=128, overlap=0)
    base.update(kw)
    return CompressParams(**base)


def read_all(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds


# ------------------------------------------------------------------ tiling

@pytest.mark.parametrize("size,tile,overlap", [(400, 128, 16), (64, 128, 16), (1000, 256, 0), (513, 512, 64), (130, 64, 32)])
def test_grid_covers_raster_and_blend_weights_sum_to_one(size, tile, overlap):
    grid = TileGrid(size, size + 7, tile, overlap)
    total = np.zeros((size + 7, size), np.float64)
    for t in grid:
        assert t.width <= tile and t.height <= tile
        total[t.y0 : t.y1, t.x0 : t.x1] += grid.blend_weights(t)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_grid_rejects_bad_settings():
    from core.errors import CodecError

    with pytest.raises(CodecError, match="at least 64"):
        TileGrid(100, 100, 32, 0)
    with pytest.raises(CodecError, match="overlap"):
        TileGrid(100, 100, 128, 80)


# ------------------------------------------------------------------ round trips

def test_roundtrip_keeps_georeferencing_and_is_deterministic(tmp_path, tiny_weights, neon_rgb):
    out = tmp_path / "a.crsic"
    res = compress_raster(neon_rgb, out, opts(tiny_weights))
    assert res["bytes"] == out.stat().st_size and res["bpp"] > 0
    d1, d2 = tmp_path / "d1.tif", tmp_path / "d2.tif"
    decompress_raster(out, d1, model=tiny_weights)
    decompress_raster(out, d2, model=tiny_weights)
    a, prof, _ = read_all(d1)
    b, _, _ = read_all(d2)
    with rasterio.open(neon_rgb) as src:
        assert prof["crs"] == src.crs
        assert prof["transform"] == src.transform
        assert (prof["width"], prof["height"], prof["count"], prof["dtype"]) == (src.width, src.height, 3, "uint8")
        assert prof["nodata"] == src.nodata
    np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.partial"))


def test_container_header_is_self_describing(tmp_path, tiny_weights, neon_rgb):
    out = tmp_path / "a.crsic"
    compress_raster(neon_rgb, out, opts(tiny_weights))
    info = container_info(out)
    with rasterio.open(neon_rgb) as src:
        assert info["crs"] == src.crs.to_wkt()
        assert info["width"] == src.width and info["height"] == src.height
    assert info["bands"] == [1, 2, 3] and info["dtype"] == "uint8"
    assert info["ranges"] == [[0.0, 255.0]] * 3
    assert info["model"]["name"] == "elic-tiny" and len(info["model"]["sha256"]) == 64
    assert info["tile"] == 128 and info["overlap"] == 0 and info["quality"] == 1.5
    grid = TileGrid(src.width, src.height, 128, 0)
    with ContainerReader(out) as r:
        assert len(r.entries) == len(grid)
        assert all(e.length > 0 for e in r.entries)


def test_window_decode_equals_full_decode(tmp_path, tiny_weights, neon_rgb):
    out = tmp_path / "a.crsic"
    compress_raster(neon_rgb, out, opts(tiny_weights))
    full = tmp_path / "full.tif"
    decompress_raster(out, full, model=tiny_weights)
    whole, _, _ = read_all(full)
    win = (100, 90, 150, 120)  # crosses tile borders
    part = tmp_path / "part.tif"
    res = decompress_raster(out, part, window=win, model=tiny_weights)
    assert res["tiles"] < container_info(out)["tiles"]  # random access: not every tile
    got, prof, _ = read_all(part)
    np.testing.assert_array_equal(got, whole[:, 90:210, 100:250])
    with rasterio.open(full) as f:
        assert prof["transform"] == rasterio.windows.transform(Window(*win), f.transform)

    # the same window as a bounding box in the raster's CRS
    with rasterio.open(full) as f:
        bounds = rasterio.windows.bounds(Window(*win), f.transform)
    bb = tmp_path / "bbox.tif"
    decompress_raster(out, bb, bbox=bounds, model=tiny_weights)
    got_bb, _, _ = read_all(bb)
    np.testing.assert_array_equal(got_bb, got)


def test_multiband_selection_and_descriptions(tmp_path, tiny_weights):
    src = shared_fixture("landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif")
    out = tmp_path / "l7.crsic"
    compress_raster(src, out, opts(tiny_weights, bands=[4, 5, 6, 1]))
    dec = tmp_path / "l7.tif"
    decompress_raster(out, dec, model=tiny_weights)
    data, prof, _ = read_all(dec)
    assert prof["count"] == 4 and container_info(out)["bands"] == [4, 5, 6, 1]
    with rasterio.open(src) as s:
        assert prof["transform"] == s.transform and prof["crs"] == s.crs


def test_single_band_uint16_roundtrip_restores_dtype_and_range(tmp_path, tiny_weights, neon_rgb):
    # real imagery, widened to a 12-bit sensor range
    with rasterio.open(neon_rgb) as s:
        green = s.read(2).astype(np.uint16) * 8 + 100
        profile = s.profile
    profile.update(count=1, dtype="uint16", nodata=None)
    src = tmp_path / "pan16.tif"
    with rasterio.open(src, "w", **profile) as d:
        d.write(green, 1)
    out = tmp_path / "pan16.crsic"
    compress_raster(src, out, opts(tiny_weights))
    info = container_info(out)
    assert info["ranges"] == [[float(green.min()), float(green.max())]]
    dec = tmp_path / "pan16_decoded.tif"
    decompress_raster(out, dec, model=tiny_weights)
    data, prof, _ = read_all(dec)
    assert prof["dtype"] == "uint16" and data.shape == (1, *green.shape)
    assert data.min() >= green.min() and data.max() <= green.max()


def test_uint16_fixture_roundtrip(tmp_path, tiny_weights):
    src = shared_fixture("spacenet_ms4_uint16_utm31n_solaris_ms1_cast.tif")
    out = tmp_path / "ms.crsic"
    compress_raster(src, out, opts(tiny_weights, bands=[1, 2, 3, 4]))
    dec = tmp_path / "ms.tif"
    decompress_raster(out, dec, model=tiny_weights)
    data, prof, _ = read_all(dec)
    with rasterio.open(src) as s:
        assert prof["dtype"] == "uint16" and prof["count"] == 4 and prof["crs"] == s.crs
        orig = s.read()
    ranges = container_info(out)["ranges"]
    for b in range(4):
        assert ranges[b] == [float(orig[b].min()), float(orig[b].max())]


def test_nodata_pixels_come_back_as_nodata(tmp_path, tiny_weights, neon_rgb):
    with rasterio.open(neon_rgb) as s:
        data = s.read()
        profile = s.profile
    data = np.maximum(data, 1)  # keep 0 free for nodata
    data[:, :60, :] = 0
    data[:, 200:230, 300:] = 0
    profile.update(nodata=0)
    src = tmp_path / "nd.tif"
    with rasterio.open(src, "w", **profile) as d:
        d.write(data)
    out = tmp_path / "nd.crsic"
    compress_raster(src, out, opts(tiny_weights))
    dec = tmp_path / "nd_dec.tif"
    decompress_raster(out, dec, model=tiny_weights)
    got, prof, _ = read_all(dec)
    assert prof["nodata"] == 0
    invalid = (data == 0).all(axis=0)
    np.testing.assert_array_equal((got == 0).all(axis=0), invalid)  # exactly the nodata pixels
    assert not (got[:, ~invalid] == 0).any()  # valid pixels never decode to the nodata value


def test_cog_output(tmp_path, tiny_weights, neon_rgb):
    out = tmp_path / "a.crsic"
    compress_raster(neon_rgb, out, opts(tiny_weights))
    cog = tmp_path / "a_cog.tif"
    decompress_raster(out, cog, model=tiny_weights, cog=True)
    with rasterio.open(cog) as c, rasterio.open(neon_rgb) as s:
        assert c.profile["tiled"] and c.crs == s.crs and c.transform == s.transform
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crsic", "a_cog.tif"]
