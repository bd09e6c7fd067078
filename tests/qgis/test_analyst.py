"""The analyst's side in QGIS (issue 23): every band ticked, any GDAL layer accepted or
refused with its reason, the quality presets, the set-up dialog's size estimate."""

from __future__ import annotations

import gzip
import shutil
import zipfile

import numpy as np
import pytest

from conftest import NEON, SHARED_FIXTURES

NAIP = SHARED_FIXTURES / "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif"


def _layer(source, name="layer", provider="gdal"):
    """A raster layer in the project (the dialogs offer the project's layers)."""
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(source), name, provider)
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture(autouse=True)
def empty_project(qgis_app):
    yield
    from qgis.core import QgsProject

    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def gdal_sources(tmp_path):
    """NEON as a VRT, a GeoPackage table, a file inside a zip, a gzip, and a GeoPackage of two tables."""
    from osgeo import gdal

    tif = tmp_path / "neon.tif"
    shutil.copy(NEON, tif)
    gdal.BuildVRT(str(tmp_path / "neon.vrt"), [str(tif)])
    gdal.Translate(str(tmp_path / "one.gpkg"), str(tif), format="GPKG", creationOptions=["RASTER_TABLE=neon"])
    for table, extra in (("a", []), ("b", ["APPEND_SUBDATASET=YES"])):
        gdal.Translate(str(tmp_path / "two.gpkg"), str(tif), format="GPKG",
                       creationOptions=[f"RASTER_TABLE={table}", *extra])
    with zipfile.ZipFile(tmp_path / "neon.zip", "w") as zf:
        zf.write(tif, "neon.tif")
    (tmp_path / "neon.tif.gz").write_bytes(gzip.compress(tif.read_bytes()))
    return {"vrt": str(tmp_path / "neon.vrt"), "gpkg": str(tmp_path / "one.gpkg"),
            "table": f"GPKG:{tmp_path}/two.gpkg:b", "zip": f"/vsizip/{tmp_path}/neon.zip/neon.tif",
            "gzip": f"/vsigzip/{tmp_path}/neon.tif.gz", "two": str(tmp_path / "two.gpkg"), "dir": tmp_path}


@pytest.mark.parametrize("kind", ["vrt", "gpkg", "table", "zip", "gzip"])
def test_any_gdal_layer_is_accepted_with_its_gdal_name(qgis_app, gdal_sources, kind):
    from coderic_qgis.dialogs import CompressDialog
    from coderic_qgis.layers import layer_source

    layer = _layer(gdal_sources[kind], kind)
    assert layer.isValid()
    source, reason = layer_source(layer)
    assert source == gdal_sources[kind] and reason is None  # what the worker opens, as GDAL names it
    dlg = CompressDialog(None, layer)
    try:
        assert dlg.params().input == gdal_sources[kind]
        assert not [e for e in dlg.errors() if "file" in e.lower() and "exists" not in e.lower()], dlg.errors()
        # outputs proposed beside the file on disk, named after the raster
        assert dlg.output.filePath().startswith(str(gdal_sources["dir"]))
        assert dlg.output.filePath().endswith(".crsic") and "/vsi" not in dlg.output.filePath()
    finally:
        dlg.deleteLater()


def test_the_worker_compresses_a_zip_layer(qgis_app, gdal_sources, worker_ready):
    """The GDAL name the dialog hands over opens in the worker's rasterio (its own GDAL), and
    the sizes come back labelled: raw data, the zip as the input archive, the container."""
    from coderic_qgis.layers import layer_source, summary_text
    from coderic_qgis.worker_client import WorkerProcess, find_worker

    source, _ = layer_source(_layer(gdal_sources["zip"]))
    out = gdal_sources["dir"] / "neon.crsic"
    job = {"action": "compress", "input": source, "output": str(out), "quality": 0, "tile": 256, "overlap": 0,
           "threads": 1}
    res = WorkerProcess(find_worker(worker_ready, "")).run(job, timeout=300)
    assert out.stat().st_size == res["bytes"] and res["bands"] == [1, 2, 3]
    assert res["raw_bytes"] == 400 * 400 * 3 and res["input_label"] == "input archive"
    assert res["input_bytes"] == (gdal_sources["dir"] / "neon.zip").stat().st_size
    text = summary_text(res, "neon")
    assert "raw data 480.0 kB, input archive " in text and "against the raw data" in text, text


def test_layers_that_cannot_be_coded_are_refused_with_the_reason(qgis_app, gdal_sources):
    from coderic_qgis.dialogs import validate_compress
    from coderic_qgis.jobs import CompressParams
    from coderic_qgis.layers import layer_source

    web = _layer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    source, reason = layer_source(web)
    assert source is None and "comes from a wms service, not a file" in reason
    assert validate_compress(CompressParams(input=""), web) == [reason]

    remote = _layer("/vsicurl/http://127.0.0.1:9/a.tif", "remote")
    source, reason = layer_source(remote)
    assert source is None and "not a file on this computer" in reason

    two = _layer(gdal_sources["two"], "two")  # a GeoPackage of two tables, opened as a whole
    source, reason = layer_source(two)
    assert source is None and reason and "two" in reason


def test_every_band_is_ticked_including_nir(qgis_app):
    if not NAIP.exists():
        pytest.skip(f"{NAIP} is not here (shared fixtures)")
    from coderic_qgis.dialogs import CompressDialog

    layer = _layer(NAIP, "naip")
    dlg = CompressDialog(None, layer)
    try:
        assert dlg.selected_bands() == [1, 2, 3, 4]
        assert dlg.params().bands == [1, 2, 3, 4]
    finally:
        dlg.deleteLater()


def test_a_cube_above_the_limit_asks_for_a_choice(qgis_app, tmp_path):
    from osgeo import gdal

    from coderic_qgis._contract import options
    from coderic_qgis.dialogs import CompressDialog

    n = options.MAX_DEFAULT_BANDS + 2
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "cube.tif"), 64, 64, n, gdal.GDT_Byte)
    ds.SetGeoTransform((500000, 1, 0, 3300000, 0, -1))
    for b in range(1, n + 1):
        ds.GetRasterBand(b).WriteArray(np.full((64, 64), b, np.uint8))
    ds = None
    dlg = CompressDialog(None, _layer(tmp_path / "cube.tif", "cube"))
    try:
        assert dlg.selected_bands() == []
        errors = dlg.errors()
        assert any(f"has {n} bands" in e and "tick the bands" in e for e in errors), errors
        dlg.set_bands([1, 2, 3])
        assert not any("bands" in e.lower() for e in dlg.errors()), dlg.errors()
    finally:
        dlg.deleteLater()


def test_quality_presets(qgis_app):
    from coderic_qgis._contract import options
    from coderic_qgis.dialogs import CompressDialog

    dlg = CompressDialog(None, _layer(NEON, "neon"))
    try:
        assert dlg.quality.value() == options.DEFAULT_QUALITY
        assert dlg.preset.currentText().startswith("Keeps features")
        smallest = next(i for i in range(dlg.preset.count()) if dlg.preset.itemText(i).startswith("Smallest"))
        dlg.preset.setCurrentIndex(smallest)
        assert dlg.quality.value() == dict(options.QUALITY_PRESETS)["smallest"] and dlg.params().quality == 1.0
        dlg.quality.setValue(2.5)
        assert dlg.preset.currentText() == "Custom"
    finally:
        dlg.deleteLater()


def test_setup_dialog_says_what_it_will_download(qgis_app):
    from coderic_qgis.setup_env import choose_torch
    from coderic_qgis.setup_task import SetupDialog

    dlg = SetupDialog(None, pythons=([], []))
    try:
        text = dlg.estimate.text()
        choice = choose_torch()
        assert f"Download: {choice.download}" in text and f"on disk: {choice.disk}" in text
        assert choice.what in text
    finally:
        dlg.deleteLater()


@pytest.mark.parametrize("psnrs,labels", [([19.6], ["19.6 dB"]), ([19.6, 27.04], ["19.6 dB", "27.0 dB"]),
                                          ([19.6, 19.6], ["19.6 dB"]), ([30.6, 30.8], ["30.6 dB", "30.8 dB"])])
def test_quality_legend_for_one_or_two_tiles(qgis_app, tmp_path, psnrs, labels):
    """One class per distinct value, labelled with it; a lone tile is not painted 'worst' red."""
    import json

    from qgis.core import QgsVectorLayer

    from coderic_qgis.compare import style_quality

    features = [{"type": "Feature", "properties": {"psnr": p, "bytes": 100, "bpp": 0.5},
                 "geometry": {"type": "Polygon", "coordinates": [[[i, 0], [i + 1, 0], [i + 1, 1], [i, 1], [i, 0]]]}}
                for i, p in enumerate(psnrs)]
    path = tmp_path / "q.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    layer = QgsVectorLayer(str(path), "q", "ogr")
    style_quality(layer)
    ranges = layer.renderer().ranges()
    assert [r.label() for r in ranges] == labels
    for f in layer.getFeatures():  # every tile falls in a class
        assert any(r.lowerValue() <= f["psnr"] <= r.upperValue() for r in ranges)
    colors = [r.symbol().color() for r in ranges]
    if max(psnrs) - min(psnrs) < 1:  # one tile, or tiles alike: neither looks "worst" (red)
        assert all(not (c.red() > 150 and c.green() < 100) for c in colors), [c.name() for c in colors]
    else:  # 7 dB apart: the worse one red-ish, the better one green-ish
        assert colors[0].red() > colors[0].green() and colors[1].green() > colors[1].red()


def test_distinct_icons_and_short_layer_names(qgis_app):
    from coderic_qgis import plugin
    from coderic_qgis.layers import short_name

    assert plugin.SWIPE_ICON.is_file() and plugin.SWIPE_ICON.read_bytes() != plugin.ICON.read_bytes()
    long = "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029"
    short = short_name(long)
    assert len(short) == 24 and short.startswith("neon_rgb") and short.endswith("OSBS_029")
    assert short_name("naip") == "naip"
