"""Before/after tools through the worker: swipe, difference layer, tile quality layer, decode
selected area, and their Processing algorithms."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import wait_for

GROUP = "Code-RSIC before/after"


def _compressed_pair(plugin, qgis_app, neon_copy, tiny_weights):
    """neon compressed and decoded by the plugin: (original layer, decoded layer, group, task)."""
    from qgis.core import QgsProject, QgsRasterLayer

    from coderic_qgis.jobs import CompressParams

    layer = QgsRasterLayer(str(neon_copy), "neon", "gdal")
    QgsProject.instance().addMapLayer(layer)
    params = CompressParams(layer_id=layer.id(), input=str(neon_copy), output=str(neon_copy.with_suffix(".crsic")),
                            decoded_output=str(neon_copy.with_suffix(".decoded.tif")), bands=[1, 2, 3],
                            model=tiny_weights, quality=1.5, tile=128, overlap=0, enhance=False)
    task = plugin.start_compress(params)
    assert task is not None, plugin.last_message
    wait_for(task, qgis_app)
    assert task.succeeded, task.error
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP)
    return layer, task.decoded_layer, group, task


def _settle(canvas, app, item=None):
    canvas.refresh()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        app.processEvents()
        if not canvas.isDrawing():
            break
        time.sleep(0.02)
    canvas.waitWhileRendering()
    for _ in range(5):
        app.processEvents()
    if item is not None:
        item.wait()
        for _ in range(5):
            app.processEvents()


def _grab(canvas, app):
    app.processEvents()
    return canvas.grab().toImage()


def _region(img, x0, x1, y0, y1):
    return [img.pixel(x, y) for x in range(x0, x1, 7) for y in range(y0, y1, 7)]


def test_swipe_difference_quality_and_selected_area(plugin, iface, qgis_app, neon_copy, tiny_weights, monkeypatch):
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
        QgsVectorLayer,
    )
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    from coderic_qgis import dialogs
    from coderic_qgis.layers import PROP_ROLE

    original, decoded, group, _ = _compressed_pair(plugin, qgis_app, neon_copy, tiny_weights)
    assert decoded.customProperty("coderic/bands") == "1,2,3"
    canvas = iface.mapCanvas()
    iface.main.show()
    canvas.setDestinationCrs(original.crs())
    canvas.setExtent(original.extent())
    iface.setActiveLayer(decoded)

    # ---- swipe: the original is shown, the decoded layer drawn left of the divider
    plugin.swipe_action.trigger()
    tool = plugin.swipe_tool
    assert canvas.mapTool() is tool and plugin.swipe_action.isChecked()
    nodes = {n.layer(): n for n in group.findLayers()}
    assert nodes[original].isVisible() and not nodes[decoded].isVisible()
    _settle(canvas, qgis_app, tool.item)
    assert tool.item.image is not None and not tool.item.image.isNull()
    w, h = canvas.width(), canvas.height()

    def drag_to(x):
        for kind in (QEvent.MouseButtonPress, QEvent.MouseMove, QEvent.MouseButtonRelease):
            ev = QgsMapMouseEvent(canvas, kind, QPoint(x, h // 2), Qt.LeftButton, Qt.LeftButton)
            {QEvent.MouseButtonPress: tool.canvasPressEvent, QEvent.MouseMove: tool.canvasMoveEvent,
             QEvent.MouseButtonRelease: tool.canvasReleaseEvent}[kind](ev)

    drag_to(0)
    only_original = _grab(canvas, qgis_app)
    drag_to(w)
    only_decoded = _grab(canvas, qgis_app)
    drag_to(w // 2)
    assert tool.item.divider == w // 2
    half = _grab(canvas, qgis_app)
    rows = (10, h - 40)  # above the labels
    left, right = (10, w // 2 - 10), (w // 2 + 10, w - 10)
    assert _region(half, *left, *rows) == _region(only_decoded, *left, *rows)
    assert _region(half, *right, *rows) == _region(only_original, *right, *rows)
    assert _region(only_decoded, *left, *rows) != _region(only_original, *left, *rows)
    plugin.swipe_action.trigger()  # off: the decoded layer is shown again
    assert canvas.mapTool() is not tool and tool.item is None
    assert nodes[decoded].isVisible() and not nodes[original].isVisible()

    # ---- difference layer: a raster with a colour ramp, shown in the (still exclusive) group
    task = plugin.show_difference()
    wait_for(task, qgis_app)
    assert task.succeeded, task.error
    diff = task.decoded_layer
    assert task.job["bands"] == [1, 2, 3] and task.job["output"].endswith(".diff.tif")
    assert diff.customProperty(PROP_ROLE) == "difference" and diff.renderer().type() == "singlebandpseudocolor"
    assert diff.crs() == original.crs() and diff.extent() == original.extent()
    assert [n.layer() for n in group.findLayers()][0] is diff and group.isMutuallyExclusive()
    assert "mean |difference|" in plugin.last_message[1]

    # ---- tile quality layer: polygons graduated by PSNR over the decoded image
    iface.setActiveLayer(original)  # any layer of the group finds the pair
    task = plugin.show_quality()
    wait_for(task, qgis_app)
    assert task.succeeded, task.error
    quality = task.decoded_layer
    assert isinstance(quality, QgsVectorLayer) and quality.featureCount() == 16
    assert {"bytes", "bpp", "psnr"} <= set(quality.fields().names())
    renderer = quality.renderer()
    assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "psnr"
    assert len(renderer.ranges()) == 5 and quality.labelsEnabled()
    assert quality.crs() == original.crs()
    assert not group.isMutuallyExclusive()
    visible = {n.layer().name() for n in group.findLayers() if n.isVisible()}
    assert visible == {quality.name(), decoded.name()}
    from osgeo import ogr

    ds = ogr.Open(task.result["output"])
    assert ds.GetLayer(0).GetFeatureCount() == 16 and ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "32617"

    # ---- decode selected area: polygons of a layer in another CRS, one selected
    poly = QgsVectorLayer("Polygon?crs=EPSG:4326", "fields", "memory")
    e = original.extent()
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    to_wgs = QgsCoordinateTransform(original.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    inner = QgsGeometry.fromRect(QgsRectangle(e.xMinimum() + 4, e.yMinimum() + 4, e.xMinimum() + 18,
                                              e.yMinimum() + 15))
    inner.transform(to_wgs)
    other = QgsGeometry.fromRect(QgsRectangle(e.xMaximum() - 6, e.yMaximum() - 6, e.xMaximum() - 2, e.yMaximum() - 2))
    other.transform(to_wgs)
    feats = []
    for g in (inner, other):
        f = QgsFeature()
        f.setGeometry(g)
        feats.append(f)
    poly.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(poly)
    poly.selectByIds([next(poly.getFeatures()).id()])
    iface.setActiveLayer(poly)
    off = dialogs.ENHANCE_CHOICES.index(next(c for c in dialogs.ENHANCE_CHOICES if c[1] is False))
    monkeypatch.setattr(dialogs.DecompressDialog, "exec_", lambda self: (  # plain decoding, to compare pixels
        self.enhance.setCurrentIndex(off), self.refresh(), not self.errors())[2])
    plugin.area_action.trigger()
    task = plugin.last_task
    assert task is not None and task.job.get("aoi"), plugin.last_message
    aoi = json.loads(task.job["aoi"])
    assert aoi["crs"]["properties"]["name"] == "EPSG:4326" and len(aoi["features"]) == 1
    assert task.job["output"].endswith(".area-1.tif")
    wait_for(task, qgis_app)
    assert task.succeeded, task.error
    assert task.result["tiles"] < 16 and task.result["tiles_skipped"] >= 0
    area = task.decoded_layer
    assert "area" in area.name() and area in [n.layer() for n in group.findLayers()]
    assert "tile(s)" in plugin.last_message[1]
    from osgeo import gdal

    part, full = gdal.Open(task.result["output"]), gdal.Open(str(neon_copy.with_suffix(".decoded.tif")))
    gt, fgt = part.GetGeoTransform(), full.GetGeoTransform()
    col, row = round((gt[0] - fgt[0]) / fgt[1]), round((gt[3] - fgt[3]) / fgt[5])
    a = part.ReadAsArray()
    b = full.ReadAsArray(col, row, part.RasterXSize, part.RasterYSize)
    inside = (a != 255).any(axis=0)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(a[:, inside], b[:, inside])
    assert isinstance(area, QgsRasterLayer) and area.crs() == original.crs()


def test_comparison_actions_explain_what_they_need(plugin, iface, qgis_app):
    plugin.show_difference()
    assert plugin.last_message[0] == "warning" and "decoded layer" in plugin.last_message[1]
    plugin.swipe_action.trigger()
    assert not plugin.swipe_action.isChecked() and "decoded layer" in plugin.last_message[1]
    plugin.area_action.trigger()
    assert "Select one or more polygons" in plugin.last_message[1]


def test_processing_difference_quality_and_area(processing, plugin, qgis_app, neon_copy, tiny_weights, tmp_path):
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsProcessingFeatureSourceDefinition,
        QgsProject,
        QgsRasterLayer,
        QgsVectorLayer,
    )

    from test_tasks import _add_layer

    res = processing.run("coderic:compress", {"INPUT": str(neon_copy), "QUALITY": 1.5, "TILE": 128, "OVERLAP": 0,
                                              "MODEL": tiny_weights, "OUTPUT": str(tmp_path / "n.crsic")})
    container = res["OUTPUT"]
    res = processing.run("coderic:decompress", {"INPUT": container, "MODEL": tiny_weights,
                                                "OUTPUT": str(tmp_path / "n.tif")})
    decoded = res["OUTPUT"]
    res = processing.run("coderic:difference", {"INPUT": str(neon_copy), "OTHER": decoded,
                                                "OUTPUT": str(tmp_path / "d.tif")})
    assert res["MEAN_ABS_DIFF"] > 0 and QgsRasterLayer(res["OUTPUT"], "d", "gdal").isValid()
    res = processing.run("coderic:quality_map", {"CONTAINER": container, "INPUT": str(neon_copy), "OTHER": decoded,
                                                 "OUTPUT": str(tmp_path / "q.gpkg")})
    q = QgsVectorLayer(res["OUTPUT"], "q", "ogr")
    assert q.isValid() and q.featureCount() == 16 and res["PSNR_MIN"] <= res["PSNR_MAX"]
    src = _add_layer(neon_copy, "neon")
    poly = QgsVectorLayer(f"Polygon?crs={src.crs().authid()}", "aoi", "memory")
    e = src.extent()
    for rect in ((0, 0, 10, 10), (25, 25, 35, 35)):
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt(
            f"POLYGON(({e.xMinimum() + rect[0]} {e.yMinimum() + rect[1]}, {e.xMinimum() + rect[2]} "
            f"{e.yMinimum() + rect[1]}, {e.xMinimum() + rect[2]} {e.yMinimum() + rect[3]}, "
            f"{e.xMinimum() + rect[0]} {e.yMinimum() + rect[1]}))"))
        poly.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(poly)
    poly.selectByIds([1])
    res = processing.run("coderic:decompress_area", {
        "INPUT": container, "AREA": QgsProcessingFeatureSourceDefinition(poly.id(), selectedFeaturesOnly=True),
        "MODEL": tiny_weights, "OUTPUT": str(tmp_path / "area.tif")})
    out = QgsRasterLayer(res["OUTPUT"], "area", "gdal")
    assert out.isValid() and res["TILES"] < 16
    assert out.width() < 120 and out.height() < 120  # the selected triangle's window only
    with pytest.raises(Exception, match="no polygons|area of interest"):
        empty = QgsVectorLayer(f"Polygon?crs={src.crs().authid()}", "empty", "memory")
        QgsProject.instance().addMapLayer(empty)
        processing.run("coderic:decompress_area", {"INPUT": container, "AREA": empty.id(), "MODEL": tiny_weights,
                                                   "OUTPUT": str(tmp_path / "none.tif")})
