"""Real jobs through the worker subprocess: compress + decode + before/after group, map-extent
decoding, worker errors as messages, and Cancel leaving no files behind."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import NEON, wait_for

GROUP = "Code-RSIC before/after"


def _add_layer(path, name):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _bgr_style(layer):
    """A distinctive style: bands 3,2,1 as RGB with a fixed stretch, 80 % opacity."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

    r = QgsMultiBandColorRenderer(layer.dataProvider(), 3, 2, 1)
    for band, setter in ((3, r.setRedContrastEnhancement), (2, r.setGreenContrastEnhancement),
                         (1, r.setBlueContrastEnhancement)):
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(10 * band)
        ce.setMaximumValue(200 + band)
        setter(ce)
    layer.setRenderer(r)
    layer.setOpacity(0.8)


def _accept_dialogs(monkeypatch):
    from coderic_qgis import dialogs

    for cls in (dialogs.CompressDialog, dialogs.DecompressDialog):
        monkeypatch.setattr(cls, "exec_", lambda self: (self.refresh(), not self.errors())[1])


def test_compress_task_adds_before_after_group_then_decode_extent(plugin, iface, qgis_app, neon_copy,
                                                                  tiny_weights, monkeypatch):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsProject,
        QgsRectangle,
    )

    layer = _add_layer(neon_copy, "neon")
    _bgr_style(layer)
    iface.setActiveLayer(layer)
    _accept_dialogs(monkeypatch)
    monkeypatch.setattr("coderic_qgis.dialogs.CompressDialog.params", _with(
        "coderic_qgis.dialogs.CompressDialog.params", model=tiny_weights, quality=1.5, tile=128, overlap=0))

    plugin.compress_action.trigger()  # the menu action, as a user would (dialog accepted as filled)
    task = plugin.last_task
    assert task is not None, plugin.last_message
    assert task.job["bands"] == [1, 2, 3]  # every band, in file order
    wait_for(task, qgis_app)
    assert task.succeeded, task.error

    # Both layers sit in the before/after group, decoded on top and shown; flipping works.
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup(GROUP)
    assert group is not None
    in_group = [n.layer() for n in group.findLayers()]
    assert in_group == [task.decoded_layer, layer]
    assert group.isMutuallyExclusive()
    decoded_node, original_node = group.findLayers()
    assert decoded_node.isVisible() and not original_node.isVisible()
    original_node.setItemVisibilityChecked(True)
    assert original_node.isVisible() and not decoded_node.isVisible()

    # Same style.
    dec = task.decoded_layer
    r, o = dec.renderer(), layer.renderer()
    assert r.type() == "multibandcolor"
    assert (r.redBand(), r.greenBand(), r.blueBand()) == (3, 2, 1)
    assert r.redContrastEnhancement().minimumValue() == o.redContrastEnhancement().minimumValue() == 30
    assert r.blueContrastEnhancement().maximumValue() == 201
    assert dec.opacity() == pytest.approx(0.8)
    assert dec.crs() == layer.crs() and dec.extent() == layer.extent()

    # The message bar reports the sizes (raw data, input file, container; one unit
    # convention), the ratio against the raw data, bpp and PSNR.
    level, text = plugin.last_message
    assert level == "success"
    for word in ("raw data 480.0 kB", "input file ", "container ", "against the raw data", "bpp", "PSNR",
                 "neon.crsic"):
        assert word in text, text
    assert "KB" not in text and "KiB" not in text
    assert iface.messageBar().currentItem() is not None
    assert os.path.exists(task.job["output"]) and os.path.exists(task.job["decode_to"])

    # "Decode current map extent": a canvas in another CRS showing the top-left quarter.
    canvas = iface.mapCanvas()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    canvas.setDestinationCrs(wgs84)
    e = layer.extent()
    quarter = QgsRectangle(e.xMinimum() + 2, e.center().y() + 2, e.center().x() - 2, e.yMaximum() - 2)
    to_map = QgsCoordinateTransform(layer.crs(), wgs84, QgsProject.instance())
    canvas.setExtent(to_map.transformBoundingBox(quarter))
    iface.setActiveLayer(dec)  # the container is found from the active decoded layer
    plugin.extent_action.trigger()
    etask = plugin.last_task
    assert etask is not task and "bbox" in etask.job and etask.job["bbox_crs"] == "EPSG:4326"
    wait_for(etask, qgis_app)
    assert etask.succeeded, etask.error
    col, row, w, h = etask.result["window"]
    assert w < 400 and h < 400 and w * h < 0.6 * 400 * 400, etask.result["window"]  # a part, not all
    assert etask.result["tiles"] < 16  # random access: only the tiles in view
    assert etask.decoded_layer in [n.layer() for n in group.findLayers()]
    assert etask.decoded_layer.renderer().redBand() == 3
    assert "tile(s)" in plugin.last_message[1]


def test_copy_style_remaps_bands(qgis_app, tmp_path):
    """Coding bands 2,3,4 of a 6-band raster shown as 4-3-2: the decoded file shows 3-2-1."""
    from osgeo import gdal
    from qgis.core import QgsMultiBandColorRenderer, QgsRasterLayer

    from coderic_qgis.layers import copy_style
    from conftest import TEST_DATA

    import shutil

    shutil.copyfile(TEST_DATA / "landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif", tmp_path / "landsat.tif")
    src = QgsRasterLayer(str(tmp_path / "landsat.tif"), "landsat", "gdal")
    src.setRenderer(QgsMultiBandColorRenderer(src.dataProvider(), 4, 3, 2))
    path = tmp_path / "three.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 32, 32, 3, gdal.GDT_Byte)
    ds = None
    dst = QgsRasterLayer(str(path), "three", "gdal")
    assert copy_style(src, dst, [2, 3, 4])
    r = dst.renderer()
    assert (r.redBand(), r.greenBand(), r.blueBand()) == (3, 2, 1)
    # a style showing a band that was not coded is not copied
    src.setRenderer(QgsMultiBandColorRenderer(src.dataProvider(), 5, 4, 3))
    dst2 = QgsRasterLayer(str(path), "three", "gdal")
    assert not copy_style(src, dst2, [2, 3, 4])


def _with(target, **overrides):
    """Wrap a params() method so tests can set options without clicking through widgets."""
    import importlib

    module, cls, meth = target.rsplit(".", 2)
    original = getattr(getattr(importlib.import_module(module), cls), meth)

    def params(self):
        p = original(self)
        for k, v in overrides.items():
            setattr(p, k, v)
        return p

    return params


def test_decompress_action_pairs_with_source_layer(plugin, iface, qgis_app, neon_copy, tiny_weights, tmp_path,
                                                   tiny_enhancer):
    """Decompress .crsic (enhanced): the decoded raster joins the layer the container was made from."""
    from qgis.core import QgsSettings

    import subprocess

    from conftest import worker_env
    from qgis.core import QgsProject

    from coderic_qgis._contract.options import EnhanceParams
    from coderic_qgis.jobs import DecompressParams

    container = tmp_path / "neon.crsic"
    subprocess.run([os.environ["CODERSIC_PYTHON"], "-m", "core.tile_codec", "compress", str(neon_copy), "-o",
                    str(container), "--model", tiny_weights, "--quality", "1", "--tile", "128", "--overlap", "0",
                    "--threads", "1", "--quiet"], env=worker_env(), check=True, capture_output=True)
    layer = _add_layer(neon_copy, "neon")
    QgsSettings().setValue("CodeRSIC/enhancer", tiny_enhancer)
    try:
        task = plugin.start_decompress(DecompressParams(container=str(container), output=str(tmp_path / "out.tif"),
                                                        model=tiny_weights, enhance=True,
                                                        enhancement=EnhanceParams(fidelity=0.7)))
        assert task.job["enhancer"] == tiny_enhancer and task.job["fidelity"] == 0.7
        wait_for(task, qgis_app)
    finally:
        QgsSettings().remove("CodeRSIC/enhancer")
    assert task.succeeded, task.error
    assert task.result["enhanced"] is True and task.result["fidelity"] == pytest.approx(0.7)
    assert sorted(os.listdir(tmp_path)) == ["neon.crsic", "neon.tif", "out.tif"]  # no leftovers
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP)
    assert [n.layer() for n in group.findLayers()] == [task.decoded_layer, layer]
    level, text = plugin.last_message
    assert level == "success" and "ratio" in text and "bpp" in text and "decode enhanced" in text


def test_summary_says_whether_the_decode_was_enhanced():
    from coderic_qgis.layers import summary_text

    compress = {"raw_bytes": 2050, "input_bytes": 2048, "bytes": 100, "ratio": 20.5, "bpp": 0.4, "psnr": 25.0}
    plain = summary_text(dict(compress, decode={"enhanced": False}), "a -> a.crsic")
    enhanced = summary_text(dict(compress, decode={"enhanced": True}), "a -> a.crsic")
    assert "PSNR 25.00 dB" in plain and "enhanced" not in plain
    assert "raw data 2.0 kB, input file 2.0 kB, container 100 B; ratio 20.5:1 against the raw data" in plain
    assert enhanced.startswith(plain) and enhanced.endswith("decode enhanced (codebook prior)")
    assert "decode enhanced" in summary_text({"container_bytes": 100, "bpp": 0.4, "enhanced": True}, "a.crsic")
    note = "8 bpp is above what elic-lite-s codes this raster at its top quality (about 0.793 bpp)"
    assert summary_text(dict(compress, rate_note=note), "a -> a.crsic") == plain.replace("0.400 bpp", f"0.400 bpp, {note}")
    assert summary_text(dict(compress, rate_note=None), "a -> a.crsic").endswith("PSNR 25.00 dB")


def test_worker_error_reaches_user_as_message(plugin, qgis_app, tmp_path, worker_ready):
    from coderic_qgis._contract.options import CONTAINER_MAGIC
    from coderic_qgis.jobs import DecompressParams

    bad = tmp_path / "bad.crsic"
    bad.write_bytes(CONTAINER_MAGIC + b"\x01\x00" + b"\xff" * 40)
    task = plugin.start_decompress(DecompressParams(container=str(bad), output=str(tmp_path / "bad.tif")))
    wait_for(task, qgis_app)
    assert not task.succeeded and not task.was_canceled
    level, text = plugin.last_message
    assert level == "critical"
    assert "bad.crsic" in text and ("truncated" in text or "header claims" in text) and "Traceback" not in text and "\n" not in text
    assert sorted(os.listdir(tmp_path)) == ["bad.crsic"]


def test_missing_worker_is_a_message(plugin, qgis_app, neon_copy):
    from qgis.core import QgsSettings

    from coderic_qgis.jobs import CompressParams

    QgsSettings().setValue("CodeRSIC/worker_python", "/nonexistent/bin/python")
    try:
        assert plugin.start_compress(CompressParams(input=str(neon_copy), output="x.crsic")) is None
        level, text = plugin.last_message
        assert level == "critical" and "does not exist" in text and "Settings" in text
        _, _, problem = plugin.worker_status()
        assert "does not exist" in problem
    finally:
        QgsSettings().remove("CodeRSIC/worker_python")


def _mosaic(src, dst, reps=2):
    """A bigger real-imagery raster: the NEON fixture repeated reps x reps times."""
    from osgeo import gdal

    s = gdal.Open(str(src))
    data = s.ReadAsArray()
    big = np.tile(data, (1, reps, reps))
    d = gdal.GetDriverByName("GTiff").Create(str(dst), big.shape[2], big.shape[1], big.shape[0], gdal.GDT_Byte)
    d.SetProjection(s.GetProjection())
    d.SetGeoTransform(s.GetGeoTransform())
    for i in range(big.shape[0]):
        d.GetRasterBand(i + 1).WriteArray(big[i])
    d = None


def test_cancel_kills_worker_and_leaves_no_files(plugin, iface, qgis_app, tmp_path, tiny_weights):
    import time

    from coderic_qgis.jobs import CompressParams

    src = tmp_path / "big.tif"
    _mosaic(NEON, src, 2)
    layer = _add_layer(src, "big")
    params = CompressParams(layer_id=layer.id(), input=str(src), bands=[1, 2, 3], quality=1, tile=64, overlap=0,
                            output=str(tmp_path / "big.crsic"), decoded_output=str(tmp_path / "big.decoded.tif"),
                            model=tiny_weights)
    task = plugin.start_compress(params)
    end = time.monotonic() + 300
    while task.progress() <= 0 and time.monotonic() < end:  # wait until tiles are being coded
        qgis_app.processEvents()
        time.sleep(0.01)
    assert 0 < task.progress() < 50, task.progress()
    task.cancel()
    wait_for(task, qgis_app)
    assert task.ok is False  # QGIS saw it terminated
    assert task.was_canceled and task.result is None
    proc = task._process.proc
    assert proc.poll() == 130  # the worker exited through its clean SIGTERM path
    assert sorted(os.listdir(tmp_path)) == ["big.tif"], os.listdir(tmp_path)
    level, text = plugin.last_message
    assert level == "info" and "canceled" in text and "no files" in text
    from qgis.core import QgsProject

    assert QgsProject.instance().layerTreeRoot().findGroup(GROUP) is None


def test_no_heavy_imports_in_qgis_process():
    assert "torch" not in sys.modules
    assert "rasterio" not in sys.modules
