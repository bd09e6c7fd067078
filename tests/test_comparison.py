"""Before/after tools of the library: area-of-interest decoding, per-tile maps, difference rasters."""

from __future__ import annotations

import json
import sqlite3
import struct

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds
from shapely.geometry import Polygon, box, mapping, shape

from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.codec.tile_map import footprints, tile_quality, write_quality_map, write_tile_map
from core.errors import BadInput, CodecError
from core.format.container import ContainerReader
from core.compare.difference import DIFF_NODATA, difference_raster
from core.options import CompressParams, DecompressParams


@pytest.fixture(scope="module")
def coded(tmp_path_factory, tiny_weights, neon_rgb_module):
    """NEON RGB (nodata 255) coded in 16 tiles of 128 px, and its full decode."""
    d = tmp_path_factory.mktemp("coded")
    c, full = d / "a.crsic", d / "full.tif"
    compress_raster(neon_rgb_module, c, CompressParams(model=tiny_weights, quality=1.5, tile=128, overlap=0))
    decompress_raster(c, full, model=tiny_weights)
    return c, full


@pytest.fixture(scope="module")
def neon_rgb_module():
    from testdata import TEST_DATA

    return TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"


def _triangle(ds, inset=5.0):
    b = ds.bounds
    return Polygon([(b.left + inset, b.bottom + inset), (b.left + 25, b.bottom + 8), (b.left + 15, b.top - 12)])


def _same_window(full_path, part_path):
    """(part's pixels, the full decode's pixels at the same place, part's mask)."""
    with rasterio.open(part_path) as p, rasterio.open(full_path) as f:
        win = from_bounds(*p.bounds, transform=f.transform).round_offsets().round_lengths()
        assert p.crs == f.crs
        assert p.transform.almost_equals(rasterio.windows.transform(win, f.transform))
        return p.read(), f.read(window=win), p.read_masks(1) > 0, p.nodata


# ---------------------------------------------------------------- area of interest

def test_aoi_geojson_in_wgs84_decodes_only_its_tiles(coded, tiny_weights, tmp_path, neon_rgb_module):
    c, full = coded
    with rasterio.open(neon_rgb_module) as ds:
        tri = _triangle(ds)
        crs = ds.crs
    aoi = tmp_path / "aoi.geojson"  # RFC 7946: longitude/latitude, no crs member
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": transform_geom(crs, "EPSG:4326", mapping(tri))}]}))
    res = decompress_raster(c, tmp_path / "aoi.tif", model=tiny_weights, aoi=str(aoi))
    assert res["tiles_skipped"] > 0 and res["tiles"] + res["tiles_skipped"] < 16
    part, ref, valid, nodata = _same_window(full, tmp_path / "aoi.tif")
    assert nodata == 255
    inside = valid & (part != 255).any(axis=0)
    assert inside.sum() > 5000 and (~valid).sum() > 5000
    np.testing.assert_array_equal(part[:, valid], ref[:, valid])  # inside: exactly the full decode
    assert (part[:, ~valid] == 255).all()  # outside: nodata
    # the pixels marked inside are those whose centre lies in the triangle
    with rasterio.open(tmp_path / "aoi.tif") as p:
        rows, cols = np.nonzero(valid)
        xs, ys = rasterio.transform.xy(p.transform, rows[::97], cols[::97])
    assert all(tri.buffer(0.15).contains(shapely.Point(x, y)) for x, y in zip(xs, ys))


def test_aoi_wkt_any_crs_and_a_raster_without_nodata_gets_a_mask(tmp_path, tiny_weights, neon_rgb_module):
    src = tmp_path / "nonodata.tif"
    with rasterio.open(neon_rgb_module) as ds:
        prof = dict(ds.profile, nodata=None)
        data = ds.read()
        tri, crs = _triangle(ds), ds.crs
    with rasterio.open(src, "w", **prof) as out:
        out.write(data)
    c = tmp_path / "b.crsic"
    compress_raster(src, c, CompressParams(model=tiny_weights, quality=1.5, tile=128, overlap=0))
    decompress_raster(c, tmp_path / "full.tif", model=tiny_weights)
    web = shape(transform_geom(crs, "EPSG:3857", mapping(tri)))
    (tmp_path / "a.wkt").write_text(f"SRID=3857;{web.wkt}")  # EWKT names its CRS
    decompress_raster(c, tmp_path / "a.tif", model=tiny_weights, aoi=str(tmp_path / "a.wkt"))
    # plain WKT: in the raster's CRS unless told; inline text works too
    decompress_raster(c, tmp_path / "b.tif", model=tiny_weights, aoi=tri.wkt)
    decompress_raster(c, tmp_path / "c.tif", model=tiny_weights, aoi=web.wkt, aoi_crs="EPSG:3857")
    masks = []
    for name in ("a.tif", "b.tif", "c.tif"):
        part, ref, valid, nodata = _same_window(tmp_path / "full.tif", tmp_path / name)
        assert nodata is None and (~valid).sum() > 5000  # outside: masked (internal mask)
        np.testing.assert_array_equal(part[:, valid], ref[:, valid])
        with rasterio.open(tmp_path / "full.tif") as f, rasterio.open(tmp_path / name) as p:
            win = from_bounds(*p.bounds, transform=f.transform).round_offsets().round_lengths()
            whole = np.zeros(f.shape, bool)
            whole[win.toslices()] = valid
        masks.append(whole)
    # the reprojected polygon's edges are densified, so the masks agree up to a few boundary pixels
    assert np.count_nonzero(masks[0] != masks[1]) < 60 and np.array_equal(masks[0], masks[2])


def test_aoi_reaches_the_enhanced_decode(coded, tiny_weights, tmp_path, neon_rgb_module, monkeypatch,
                                        identity_enhancer):
    from core.enhance import decompress_enhanced

    monkeypatch.setattr("core.enhance.decode.enhancement_reason", lambda params, quality, lambdas: None)
    c, full = coded
    with rasterio.open(neon_rgb_module) as ds:
        tri = _triangle(ds)
    res = decompress_enhanced(c, tmp_path / "e.tif", DecompressParams(model=tiny_weights, enhance=True,
                                                                      aoi=tri.wkt))
    assert res["enhanced"] and res["tiles_skipped"] > 0
    part, ref, valid, _ = _same_window(full, tmp_path / "e.tif")
    np.testing.assert_array_equal(part[:, valid], ref[:, valid])
    assert (part[:, ~valid] == 255).all() and (~valid).sum() > 5000


def test_aoi_problems_are_one_line(coded, tiny_weights, tmp_path):
    c, _ = coded
    with pytest.raises(BadInput, match="outside the raster"):
        decompress_raster(c, tmp_path / "x.tif", model=tiny_weights, aoi="POLYGON((0 0, 1 0, 1 1, 0 0))")
    with pytest.raises(BadInput, match="no polygon"):
        decompress_raster(c, tmp_path / "x.tif", model=tiny_weights,
                          aoi='{"type": "Point", "coordinates": [-81.98, 29.69]}')
    with pytest.raises(BadInput, match="no such area-of-interest file"):
        decompress_raster(c, tmp_path / "x.tif", model=tiny_weights, aoi=str(tmp_path / "missing.geojson"))
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(BadInput, match="not valid GeoJSON"):
        decompress_raster(c, tmp_path / "x.tif", model=tiny_weights, aoi=str(tmp_path / "bad.geojson"))
    with pytest.raises(BadInput, match="unknown CRS"):
        decompress_raster(c, tmp_path / "x.tif", model=tiny_weights, aoi="POLYGON((0 0, 1 0, 1 1, 0 0))",
                          aoi_crs="EPSG:99999999")
    with pytest.raises(BadInput, match="not both"):
        DecompressParams(aoi="a.geojson", bbox=(0, 0, 1, 1)).validate()
    assert not (tmp_path / "x.tif").exists()


# ---------------------------------------------------------------- per-tile maps

def _gpkg_features(path, table):
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        (srs,) = con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (table,)).fetchone()
        cur = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()
    for r in rows:
        blob = r.pop("geom")
        assert blob[:2] == b"GP" and struct.unpack("<i", blob[4:8])[0] == srs
        r["geometry"] = shapely.from_wkb(blob[8 + 32:])
    return srs, rows


def test_tile_footprints_partition_the_raster_with_bytes_and_bpp(coded, tmp_path, neon_rgb_module):
    c, _ = coded
    res = write_tile_map(c, tmp_path / "tiles.geojson")
    doc = json.loads((tmp_path / "tiles.geojson").read_text())
    assert res["tiles"] == len(doc["features"]) == 16 and "32617" in doc["crs"]["properties"]["name"]
    geoms = [shape(f["geometry"]) for f in doc["features"]]
    with rasterio.open(neon_rgb_module) as ds, ContainerReader(c) as reader:
        bounds, payload = box(*ds.bounds), reader.payload_bytes
        pixels = ds.width * ds.height
    assert shapely.union_all(geoms).symmetric_difference(bounds).area < 1e-6
    assert abs(sum(g.area for g in geoms) - bounds.area) < 1e-6  # no double cover
    props = [f["properties"] for f in doc["features"]]
    assert sum(p["bytes"] for p in props) == payload == res["bytes"]
    bits = sum(p["bpp"] * g.area / 0.01 for p, g in zip(props, geoms))  # 0.1 m pixels
    assert bits == pytest.approx(payload * 8) and payload * 8 / pixels == pytest.approx(bits / pixels)
    # the same as a GeoPackage that GDAL reads (checked in tests/qgis with OGR)
    write_tile_map(c, tmp_path / "tiles.gpkg")
    srs, rows = _gpkg_features(tmp_path / "tiles.gpkg", "tiles")
    assert srs == 32617 and [r["bytes"] for r in rows] == [p["bytes"] for p in props]
    assert all(r["geometry"].equals(g) for r, g in zip(rows, geoms))
    with pytest.raises(CodecError, match="exists"):
        write_tile_map(c, tmp_path / "tiles.gpkg")
    with pytest.raises(BadInput, match=".geojson or .gpkg"):
        write_tile_map(c, tmp_path / "tiles.shp")


def test_footprint_cuts_follow_the_overlaps():
    from core.format.header import Header, ModelRef

    h = Header(width=300, height=130, dtype="uint8", bands=(1,), ranges=((0.0, 255.0),),
               transform=(1, 0, 0, 0, -1, 0), tile=128, overlap=16, tile_rows=2, tile_cols=3,
               model=ModelRef("x", "0" * 64))
    fps = footprints(h)
    assert [(f.x0, f.x1) for f in fps[:3]] == [(0, 120), (120, 232), (232, 300)]
    assert [(f.y0, f.y1) for f in fps[::3]] == [(0, 120), (120, 130)]  # the second row starts at 112


def test_quality_map_measures_each_tile(coded, tmp_path, neon_rgb_module, tiny_weights):
    c, full = coded
    calls = []

    def fake_metric(a, b):
        calls.append(a.shape)
        assert a.dtype == b.dtype == np.uint8 and a.shape[2] == 3
        return float(np.abs(a.astype(int) - b).mean())

    res = write_quality_map(c, neon_rgb_module, full, tmp_path / "q.gpkg", metrics={"fake": fake_metric})
    assert res["tiles"] == 16 and res["metrics"] == ["psnr", "fake"] and len(calls) == 16
    _, rows = _gpkg_features(tmp_path / "q.gpkg", "tile_quality")
    with rasterio.open(neon_rgb_module) as s, rasterio.open(full) as d:
        for r in rows[:4]:
            minx, miny, maxx, maxy = r["geometry"].bounds
            win = from_bounds(minx, miny, maxx, maxy, transform=s.transform).round_offsets().round_lengths()
            a, b = s.read(window=win).astype(float), d.read(window=win).astype(float)
            valid = (s.read_masks(window=win) > 0).any(axis=0)  # valid in some band: core's rule
            mse = ((a[:, valid] - b[:, valid]) ** 2).mean()
            assert r["psnr"] == pytest.approx(10 * np.log10(255**2 / mse))
            assert r["valid_pixels"] == valid.sum() and r["fake"] is not None
    # a window decode: only the tiles it covers are measured
    decompress_raster(c, tmp_path / "win.tif", model=tiny_weights, window=(0, 0, 150, 100))
    _, part = tile_quality(c, neon_rgb_module, tmp_path / "win.tif")
    assert sorted(p["tile"] for _, p in part) == [0, 1]
    with pytest.raises(BadInput, match="is not the raster"):
        tile_quality(c, tmp_path / "win.tif", full)


def test_quality_map_lpips_when_the_metric_weights_are_set_up(coded, tmp_path, neon_rgb_module):
    from core.evaluation.tile_metrics import tile_metrics

    ready, missing = tile_metrics()
    if "lpips" not in ready:
        pytest.skip(missing["lpips"])
    c, full = coded
    _, rows = tile_quality(c, neon_rgb_module, full, metrics=ready)
    assert all(0 <= p["lpips"] <= 2 for _, p in rows if min(p["width"], p["height"]) >= 32)


# ---------------------------------------------------------------- difference raster

def test_difference_raster_streams_mean_abs_difference(coded, tmp_path, neon_rgb_module, tiny_weights, monkeypatch):
    import core.compare.difference as dm

    c, full = coded
    monkeypatch.setattr(dm, "BLOCK", 96)  # several windows, partial ones at the edges
    steps = []
    res = difference_raster(neon_rgb_module, full, tmp_path / "d.tif", progress=lambda d, t: steps.append(t))
    assert len(steps) == 25 and res["bands"] == [1, 2, 3]
    with rasterio.open(neon_rgb_module) as s, rasterio.open(full) as d, rasterio.open(tmp_path / "d.tif") as o:
        want = np.abs(s.read().astype(np.float32) - d.read().astype(np.float32)).mean(axis=0)
        valid = (s.read_masks() > 0).any(axis=0) & (d.read_masks() > 0).any(axis=0)
        got = o.read(1)
        assert o.crs == s.crs and o.transform == s.transform and o.nodata == DIFF_NODATA and o.dtypes[0] == "float32"
        np.testing.assert_allclose(got[valid], want[valid], rtol=1e-6)
        assert (got[~valid] == DIFF_NODATA).all()
        assert res["mean_abs_diff"] == pytest.approx(float(want[valid].mean()), rel=1e-5)
    # a window decode is compared where it lies
    decompress_raster(c, tmp_path / "w.tif", model=tiny_weights, window=(100, 50, 130, 90))
    difference_raster(neon_rgb_module, tmp_path / "w.tif", tmp_path / "dw.tif")
    with rasterio.open(tmp_path / "dw.tif") as o, rasterio.open(tmp_path / "d.tif") as whole:
        assert o.shape == (90, 130)
        np.testing.assert_array_equal(o.read(1), whole.read(1, window=Window(100, 50, 130, 90)))


def test_difference_raster_refuses_other_grids(coded, tmp_path, neon_rgb_module):
    _, full = coded
    with rasterio.open(full) as d:
        prof, data = d.profile, d.read()
    shifted = dict(prof, transform=prof["transform"] * rasterio.Affine.translation(0.5, 0))
    with rasterio.open(tmp_path / "s.tif", "w", **shifted) as o:
        o.write(data)
    with pytest.raises(BadInput, match="not aligned"):
        difference_raster(neon_rgb_module, tmp_path / "s.tif", tmp_path / "x.tif")
    with pytest.raises(BadInput, match="band"):
        difference_raster(neon_rgb_module, full, tmp_path / "x.tif", bands=[1, 2])
    assert not (tmp_path / "x.tif").exists()


# ---------------------------------------------------------------- command line and worker

def test_cli_aoi_tiles_quality_map_and_diff(coded, tiny_weights, tmp_path, neon_rgb_module, capsys):
    from core.tile_codec import main

    c, full = coded
    with rasterio.open(neon_rgb_module) as ds:
        tri = _triangle(ds)
    (tmp_path / "a.wkt").write_text(tri.wkt)
    assert main(["decompress", str(c), "-o", str(tmp_path / "a.tif"), "--aoi", str(tmp_path / "a.wkt"),
                 "--model", tiny_weights, "--no-enhance", "--quiet"]) == 0
    part, ref, valid, _ = _same_window(full, tmp_path / "a.tif")
    np.testing.assert_array_equal(part[:, valid], ref[:, valid])
    assert main(["info", str(c), "--tiles", str(tmp_path / "t.geojson"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tile_map"]["tiles"] == 16
    assert main(["diff", str(neon_rgb_module), str(tmp_path / "a.tif"), "--quiet"]) == 0
    assert (tmp_path / "a.diff.tif").exists()
    assert main(["roundtrip", str(neon_rgb_module), "--model", tiny_weights, "--quality", "1.5", "--tile", "128",
                 "--overlap", "0", "--quality-map", str(tmp_path / "q.geojson"), "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert res["quality_map"]["tiles"] == 16 and "psnr" in res["quality_map"]["metrics"]
    doc = json.loads((tmp_path / "q.geojson").read_text())
    assert all(f["properties"]["psnr"] > 0 for f in doc["features"])
    assert main(["decompress", str(c), "--aoi", str(tmp_path / "a.wkt"), "--window", "0", "0", "9", "9"]) == 1
    assert "not both" in capsys.readouterr().err


def test_worker_comparison_actions(coded, tiny_weights, tmp_path, neon_rgb_module):
    from test_worker import run_worker

    c, full = coded
    with rasterio.open(neon_rgb_module) as ds:
        tri, crs = _triangle(ds), ds.crs
    geo = {"type": "Feature", "properties": {}, "geometry": transform_geom(crs, "EPSG:4326", mapping(tri))}
    code, lines = run_worker({"action": "decompress", "input": str(c), "output": str(tmp_path / "a.tif"),
                              "model": tiny_weights, "aoi": geo, "threads": 1, "enhance": False})  # a GeoJSON object
    assert code == 0 and lines[-1]["tiles_skipped"] > 0, lines
    part, ref, valid, _ = _same_window(full, tmp_path / "a.tif")
    np.testing.assert_array_equal(part[:, valid], ref[:, valid])
    code, lines = run_worker({"action": "diff", "input": str(neon_rgb_module), "other": str(full),
                              "output": str(tmp_path / "d.tif")})
    assert code == 0 and lines[-1]["mean_abs_diff"] > 0 and lines[-2]["stage"] == "diff"
    code, lines = run_worker({"action": "tiles", "input": str(c), "output": str(tmp_path / "t.gpkg")})
    assert code == 0 and lines[-1]["format"] == "gpkg"
    code, lines = run_worker({"action": "quality_map", "input": str(c), "source": str(neon_rgb_module),
                              "decoded": str(full), "output": str(tmp_path / "q.gpkg"), "lpips": False,
                              "threads": 1})
    assert code == 0 and lines[-1]["tiles"] == 16 and lines[-1]["psnr_min"] > 0
    assert {ln["stage"] for ln in lines[:-1]} == {"quality"}
    code, lines = run_worker({"action": "quality_map", "input": str(c), "source": str(full),
                              "decoded": str(full), "output": str(tmp_path / "q.gpkg")})
    assert code == 1 and "exists" in lines[-1]["message"]
