"""The analyst's side (issue 23): no band is lost, sizes are shown one way, any GDAL
dataset name is read, the default quality is measured, and the worker's self-test codes
a real tile."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from core.errors import BadInput
from core.options import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_LEVELS,
    DEFAULT_QUALITY,
    MAX_DEFAULT_BANDS,
    CompressParams,
    format_bytes,
    sizes_text,
)
from testdata import ROOT, shared_fixture

NAIP = "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif"


def _write(path: Path, data: np.ndarray, **extra) -> Path:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name,
                   crs="EPSG:32617", transform=rasterio.transform.from_origin(500000, 3300000, 1, 1))
    profile.update(extra)
    colorinterp = profile.pop("colorinterp", None)
    descriptions = profile.pop("descriptions", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


# ---------------------------------------------------------------- every band, by default

def test_naip_four_bands_round_trip_with_nir(tmp_path, one_torch_thread):
    """Real NAIP pixels (R, G, B, NIR), no band chosen: four bands come back, in order, with
    their descriptions, colour interpretation and nodata, and the NIR band is NIR."""
    from core.codec.compress import compress_raster
    from core.codec.decompress import decompress_raster

    naip = shared_fixture(NAIP)
    with rasterio.open(naip) as ds:
        data = ds.read(window=Window(300, 200, 256, 256))
    names, ci = ["red", "green", "blue", "near infrared"], [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                                          ColorInterp.undefined]
    src = _write(tmp_path / "naip4.tif", data, nodata=0, colorinterp=ci, descriptions=names, photometric="RGB",
                 alpha="UNSPECIFIED")
    res = compress_raster(src, tmp_path / "naip4.crsic", CompressParams(tile=256, overlap=0, quality=DEFAULT_QUALITY))
    assert res["bands"] == [1, 2, 3, 4]
    # what each band group costs: NIR is a group of its own, and the groups add up to the payload
    from core.codec.decompress import container_info
    from core.format.container import ContainerReader

    info = container_info(tmp_path / "naip4.crsic")
    assert [g["bands"] for g in info["band_groups"]] == [[1, 2, 3], [4]]
    with ContainerReader(tmp_path / "naip4.crsic") as reader:
        payload = reader.payload_bytes
    shape_and_mask_headers = 10 * info["tiles"]  # u32 mask length + 3 x u16 shape per tile
    assert sum(g["bytes"] for g in info["band_groups"]) + info["mask_bytes"] + shape_and_mask_headers == payload
    assert all(g["bytes"] > 100 for g in info["band_groups"])
    decompress_raster(tmp_path / "naip4.crsic", tmp_path / "out.tif")
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.count == 4
        assert list(out.descriptions) == names
        assert list(out.colorinterp) == ci
        assert out.nodata == 0
        dec = out.read().astype(float)
    ref = data.astype(float)
    # each decoded band is closest to its own source band (order kept; NIR is not a copy of blue)
    for b in range(4):
        errors = [np.abs(dec[b] - ref[k]).mean() for k in range(4)]
        assert int(np.argmin(errors)) == b, (b, errors)
    nir_psnr = 10 * np.log10(255**2 / np.mean((dec[3] - ref[3]) ** 2))
    assert nir_psnr > 25, nir_psnr


def test_naip_fixture_codes_four_bands_by_default(tmp_path):
    """The whole NAIP fixture with no band chosen: the header lists 4 of 4 bands."""
    from core.format.raster_io import open_raster, select_bands

    with open_raster(shared_fixture(NAIP)) as ds:
        assert select_bands(ds, None) == [1, 2, 3, 4]


def test_six_band_landsat_codes_six(neon_rgb):
    from core.format.raster_io import open_raster, select_bands

    with open_raster(Path(neon_rgb).parent / "landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif") as ds:
        assert select_bands(ds, None) == [1, 2, 3, 4, 5, 6]


def test_alpha_band_is_the_mask_not_a_coded_band(tmp_path):
    from core.format.raster_io import has_mask, open_raster, select_bands

    data = np.full((4, 64, 64), 100, np.uint8)
    src = _write(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with open_raster(src) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
        bands = select_bands(ds, None)
        assert bands == [1, 2, 3] and has_mask(ds, bands)


def test_above_the_limit_a_one_line_error_asks_for_bands(tmp_path):
    from core.format.raster_io import open_raster, select_bands

    n = MAX_DEFAULT_BANDS + 1
    src = _write(tmp_path / "cube.tif", np.zeros((n, 64, 64), np.uint8))
    with open_raster(src) as ds:
        with pytest.raises(BadInput) as err:
            select_bands(ds, None)
        assert select_bands(ds, [1, 2, 3]) == [1, 2, 3]  # an explicit choice works
    msg = str(err.value)
    assert "\n" not in msg and "--bands" in msg and f"{n} bands" in msg and "cube.tif" in msg


def test_cli_refuses_a_cube_without_bands_in_one_line(tmp_path):
    src = _write(tmp_path / "cube.tif", np.zeros((MAX_DEFAULT_BANDS + 4, 64, 64), np.uint8))
    run = subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(src)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--bands" in lines[0], run.stderr
    assert not (tmp_path / "cube.crsic").exists()


# ---------------------------------------------------------------- sizes

def test_one_size_convention():
    assert [format_bytes(n) for n in (0, 999, 1000, 8_499, 593_600, 2_765_026, 1_200_000_000)] == [
        "0 B", "999 B", "1.0 kB", "8.5 kB", "593.6 kB", "2.77 MB", "1.20 GB"]
    text = sizes_text(2_700_968, 20_600, 2_765_026)
    assert text == ("raw data 2.70 MB, input file 2.77 MB, container 20.6 kB; "
                    "ratio 131.1:1 against the raw data")


def test_compress_reports_raw_input_and_container_sizes(tmp_path, neon_rgb, one_torch_thread):
    """The numbers behind the line: raw data from the pixels, the input file from the disk,
    the container from the disk, and a ratio that is their quotient."""
    from core.codec.compress import compress_raster
    from core.codec.decompress import container_info

    vrt = tmp_path / "neon.vrt"
    shutil.copy(neon_rgb, tmp_path / "neon.tif")
    rasterio.shutil.copy(str(tmp_path / "neon.tif"), str(vrt), driver="VRT")
    res = compress_raster(vrt, tmp_path / "n.crsic", CompressParams(tile=256, overlap=0, quality=0))
    assert res["raw_bytes"] == 400 * 400 * 3
    assert res["bytes"] == (tmp_path / "n.crsic").stat().st_size
    # a VRT's input is its XML and the file it points at, labelled as several files
    assert res["input_label"] == "input files"
    assert res["input_bytes"] == vrt.stat().st_size + (tmp_path / "neon.tif").stat().st_size
    assert res["ratio"] == pytest.approx(res["raw_bytes"] / res["bytes"])
    info = container_info(tmp_path / "n.crsic")
    assert info["raw_bytes"] == res["raw_bytes"] and info["ratio"] == pytest.approx(res["ratio"])


# ---------------------------------------------------------------- any GDAL dataset name

@pytest.fixture
def gdal_names(tmp_path, neon_rgb):
    """The NEON raster as a /vsizip/ path, a /vsigzip/ path, a GeoPackage table and a
    GeoPackage of two tables."""
    tif = tmp_path / "neon.tif"
    shutil.copy(neon_rgb, tif)
    with zipfile.ZipFile(tmp_path / "neon.zip", "w") as zf:
        zf.write(tif, "inner/neon.tif")
    (tmp_path / "neon.tif.gz").write_bytes(gzip.compress(tif.read_bytes()))
    gpkg = tmp_path / "two.gpkg"
    with rasterio.open(tif) as src:
        data, crs, transform = src.read(), src.crs, src.transform
    for table, extra in (("a", {}), ("b", {"APPEND_SUBDATASET": "YES"})):
        with rasterio.open(gpkg, "w", driver="GPKG", width=400, height=400, count=3, dtype="uint8", crs=crs,
                           transform=transform, RASTER_TABLE=table, TILE_FORMAT="PNG", **extra) as dst:
            dst.write(data)
    return {"zip": f"/vsizip/{tmp_path}/neon.zip/inner/neon.tif", "gzip": f"/vsigzip/{tmp_path}/neon.tif.gz",
            "table": f"GPKG:{gpkg}:b", "two": str(gpkg), "tif": str(tif), "dir": tmp_path}


def test_gdal_names_open_with_their_files(gdal_names):
    from core.format.raster_io import input_file_bytes, local_files, open_raster

    tmp = gdal_names["dir"]
    ref = rasterio.open(gdal_names["tif"]).read()
    for key, archive, label in (("zip", "neon.zip", "input archive"), ("gzip", "neon.tif.gz", "input archive"),
                                ("table", "two.gpkg", "input file")):
        assert local_files(gdal_names[key]) == [tmp / archive]
        with open_raster(gdal_names[key]) as ds:
            assert np.array_equal(ds.read([1, 2, 3]), ref), key  # the same pixels, whatever the wrapper
            assert input_file_bytes(ds) == ((tmp / archive).stat().st_size, label)


def test_a_file_of_several_rasters_names_one(gdal_names):
    from core.format.raster_io import open_raster

    with pytest.raises(BadInput, match=r"holds 2 rasters: name one, e\.g\. GPKG:.*two\.gpkg:a"):
        open_raster(gdal_names["two"])


def test_missing_archive_is_one_line(gdal_names):
    from core.format.raster_io import open_raster

    with pytest.raises(BadInput, match="no such file"):
        open_raster(f"/vsizip/{gdal_names['dir']}/nothere.zip/a.tif")


def test_cli_compresses_inside_a_zip_next_to_it(gdal_names, one_torch_thread):
    """Through the CLI's own default output: a container beside the zip, named after the raster."""
    from core.tile_codec import main

    assert main(["compress", gdal_names["zip"], "--quality", "0", "--tile", "256", "--overlap", "0",
                 "--threads", "1", "--quiet"]) == 0
    out = gdal_names["dir"] / "neon.crsic"
    from core.codec.decompress import container_info

    info = container_info(out)
    assert info["source_name"] == "neon.tif" and info["bands"] == [1, 2, 3]


# ---------------------------------------------------------------- the default quality and Test worker

def test_default_quality_is_the_measured_one():
    """results/default_quality.json measured the default model at the default quality, and
    there it keeps MS-SSIM >= 0.95 on every raster, or the default is the model's top level."""
    res = json.loads((ROOT / "results/default_quality.json").read_text())
    assert res["model"] == DEFAULT_MODEL and res["default_quality"] == DEFAULT_QUALITY
    at_default = [p for p in res["points"] if p["quality"] == DEFAULT_QUALITY]
    assert {p["raster"] for p in at_default} == set(res["lowest_quality_reaching_target"])
    for p in at_default:
        assert p["ms_ssim_rgb"] >= res["target_ms_ssim"] or DEFAULT_QUALITY == DEFAULT_MODEL_LEVELS, p
    reached = [q for q in res["lowest_quality_reaching_target"].values() if q is not None]
    if len(reached) == len(res["lowest_quality_reaching_target"]):  # all reach it: the lowest that does
        assert DEFAULT_QUALITY == max(reached)


def test_self_test_codes_and_decodes_a_tile(one_torch_thread):
    from core.codec.selftest import MIN_PSNR, self_test

    res = self_test()
    assert res["device"] == "cpu" and res["model"] == DEFAULT_MODEL
    assert res["psnr"] >= MIN_PSNR and res["bytes"] > 100 and res["seconds"] > 0


def test_self_test_fails_with_garbage(monkeypatch, one_torch_thread):
    """A decoder that returns garbage (a broken install) fails the self-test with its reason."""
    from core.codec import selftest
    from core.errors import CodecError

    monkeypatch.setattr(selftest, "raster_psnr", lambda *a, **k: 6.0)
    with pytest.raises(CodecError, match="garbage"):
        selftest.self_test()
