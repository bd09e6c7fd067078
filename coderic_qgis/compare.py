"""Before/after comparisons on the QGIS side: which layers form a pair, and the layers the
worker's comparisons become (difference raster with a colour ramp, per-tile quality
polygons graduated by PSNR), all in the *Code-RSIC before/after* group.

Main thread only (called from the plugin and from ``QgsTask.finished``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsClassificationQuantile,
    QgsColorRampShader,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsLayerTreeGroup,
    QgsPalLayerSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

from .layers import GROUP_NAME, PROP_CONTAINER, PROP_ROLE, crs_text, layer_file_path

DIFF_RAMP = "Magma"  # QGIS's default style has it; dark = unchanged, bright = changed most
DIFF_CLASSES = 9  # colour stops of the difference ramp
QUALITY_RAMP = "RdYlGn"  # red = low PSNR (where compression hurts), green = high
QUALITY_FIELD = "psnr"
DIFF_NAME = "Difference |original - decoded|"
QUALITY_NAME = "Tile quality (PSNR)"
QUALITY_MIN_SPAN_DB = 6.0  # fewer tiles than classes: PSNR differences below this look alike
QUALITY_CLASSES = 5
QUALITY_OPACITY = 0.65  # the decoded image shows through the tiles
OUTLIER_FACTOR = 4.0  # the difference ramp ends at this many times the mean |difference| (or the max)


@dataclass
class Pair:
    """A decoded layer, the original it was made from, and the container behind the decoded one."""

    decoded: QgsRasterLayer
    original: QgsRasterLayer | None
    container: str
    group: QgsLayerTreeGroup | None

    @property
    def decoded_path(self) -> str | None:
        return layer_file_path(self.decoded)

    @property
    def original_path(self) -> str | None:
        return layer_file_path(self.original) if self.original is not None else None


def _group_of(layer) -> QgsLayerTreeGroup | None:
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id()) if layer is not None else None
    parent = node.parent() if node is not None else None
    return parent if isinstance(parent, QgsLayerTreeGroup) and parent.name() == GROUP_NAME else None


def find_pair(layer) -> Pair | None:
    """The before/after pair ``layer`` belongs to (the decoded layer, the original, or any
    layer of their group); else the first decoded layer of the project."""
    group = _group_of(layer)
    candidates = [n.layer() for n in group.findLayers()] if group is not None else [layer]
    decoded = next((c for c in candidates if isinstance(c, QgsRasterLayer)
                    and c.customProperty(PROP_ROLE) == "decoded" and c.customProperty(PROP_CONTAINER)), None)
    if decoded is None and group is None:
        decoded = next((c for c in QgsProject.instance().mapLayers().values() if isinstance(c, QgsRasterLayer)
                        and c.customProperty(PROP_ROLE) == "decoded" and c.customProperty(PROP_CONTAINER)), None)
        group = _group_of(decoded)
    if decoded is None:
        return None
    siblings = [n.layer() for n in group.findLayers()] if group is not None else []
    original = next((c for c in siblings if isinstance(c, QgsRasterLayer) and c.customProperty(PROP_ROLE)
                     == "original"), None)
    return Pair(decoded, original, str(decoded.customProperty(PROP_CONTAINER)), group)


def unique_path(base: Path, suffix: str) -> str:
    """``base`` + suffix, or base.2 + suffix ... when it exists."""
    path, n = Path(f"{base}{suffix}"), 1
    while path.exists():
        n += 1
        path = Path(f"{base}.{n}{suffix}")
    return str(path)


# ---------------------------------------------------------------- adding the results

def _insert(layer, group: QgsLayerTreeGroup | None, exclusive: bool):
    """Put ``layer`` at the top of the before/after group (or the project root), shown."""
    project = QgsProject.instance()
    if group is None:
        project.addMapLayer(layer)
        return project.layerTreeRoot().findLayer(layer.id())
    project.addMapLayer(layer, False)
    node = group.insertLayer(0, layer)
    group.setIsMutuallyExclusive(exclusive, 0 if exclusive else -1)
    node.setItemVisibilityChecked(True)
    node.setExpanded(True)  # its legend: the colour ramp or the PSNR classes
    for other in group.findLayers():
        if other is not node:
            other.setExpanded(False)
    return node


def style_difference(layer: QgsRasterLayer, result: dict) -> None:
    """One-band pseudocolour, 0 .. a few times the mean |difference| (or the max), Magma."""
    top = result.get("max_abs_diff") or 1.0
    mean = result.get("mean_abs_diff")
    if mean:
        top = min(top, OUTLIER_FACTOR * mean)
    ramp = QgsStyle.defaultStyle().colorRamp(DIFF_RAMP) or QgsGradientColorRamp(QColor("black"), QColor("yellow"))
    shader_fn = QgsColorRampShader(0.0, top, ramp, QgsColorRampShader.Interpolated)
    shader_fn.classifyColorRamp(DIFF_CLASSES)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(top)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def add_difference_layer(path: str, pair: Pair, result: dict) -> QgsRasterLayer:
    layer = QgsRasterLayer(path, DIFF_NAME, "gdal")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the difference raster {path}")
    style_difference(layer, result)
    layer.setCustomProperty(PROP_ROLE, "difference")  # no PROP_CONTAINER: it is not a decode of the container
    _insert(layer, pair.group, exclusive=pair.group is None or pair.group.isMutuallyExclusive())
    return layer


def style_quality(layer: QgsVectorLayer, field: str = QUALITY_FIELD) -> None:
    """Graduated by PSNR (quantiles, red = worst), semi-transparent, each tile labelled."""
    symbol = QgsFillSymbol.createSimple({"color": "255,255,255,255", "outline_color": "40,40,40,255",
                                         "outline_width": "0.26"})
    renderer = QgsGraduatedSymbolRenderer(field)
    renderer.setSourceSymbol(symbol)
    method = QgsClassificationQuantile()
    method.setLabelFormat("%1 - %2 dB")
    method.setLabelPrecision(1)
    renderer.setClassificationMethod(method)
    ramp = QgsStyle.defaultStyle().colorRamp(QUALITY_RAMP) or QgsGradientColorRamp(QColor("red"), QColor("green"))
    values = sorted({round(float(f[field]), 1) for f in layer.getFeatures() if f[field] is not None})
    if len(values) >= QUALITY_CLASSES:
        renderer.updateClasses(layer, QUALITY_CLASSES)
        renderer.updateColorRamp(ramp)
    else:  # few tiles: one class per value ("19.6 dB"), not five copies of one range
        for i, v in enumerate(values):
            sym = symbol.clone()
            # placed on the ramp by value over at least QUALITY_MIN_SPAN_DB around their mean: a
            # lone tile, or tiles 0.2 dB apart, take the neutral middle, not "worst" red and "best" green
            span = max(QUALITY_MIN_SPAN_DB, values[-1] - values[0])
            mean = sum(values) / len(values)
            sym.setColor(ramp.color(min(1.0, max(0.0, 0.5 + (v - mean) / span))))
            renderer.addClassRange(QgsRendererRange(v - 0.05, v + 0.05, sym, f"{v:.1f} dB"))
    layer.setRenderer(renderer)
    layer.setOpacity(QUALITY_OPACITY)
    labels = QgsPalLayerSettings()
    labels.fieldName = f"format_number(\"{field}\", 1) || ' dB'"
    labels.isExpression = True
    labels.placement = QgsPalLayerSettings.OverPoint
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def add_quality_layer(path: str, pair: Pair) -> QgsVectorLayer:
    """The quality map over the decoded image: the group stops being exclusive so both show."""
    layer = QgsVectorLayer(path, QUALITY_NAME, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the quality map {path}")
    style_quality(layer)
    layer.setCustomProperty(PROP_ROLE, "quality")  # no PROP_CONTAINER: it is not a decode of the container
    _insert(layer, pair.group, exclusive=False)
    if pair.group is not None:
        for node in pair.group.findLayers():
            if node.layer() is not layer:
                node.setItemVisibilityChecked(node.layer() is pair.decoded)
    return layer


# ---------------------------------------------------------------- areas of interest

def is_polygon_layer(layer) -> bool:
    return isinstance(layer, QgsVectorLayer) and layer.geometryType() == QgsWkbTypes.PolygonGeometry


def selection_layer(active) -> QgsVectorLayer | None:
    """The active layer when it is a polygon layer with a selection, else the first such layer."""
    if is_polygon_layer(active) and active.selectedFeatureCount():
        return active
    return next((lyr for lyr in QgsProject.instance().mapLayers().values()
                 if is_polygon_layer(lyr) and lyr.selectedFeatureCount()), None)


def features_geojson(features, crs) -> str:
    """Polygons as a GeoJSON FeatureCollection naming their CRS (the worker reprojects them)."""
    geoms = [json.loads(f.geometry().asJson()) for f in features if f.hasGeometry()]
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs_text(crs)}},
           "features": [{"type": "Feature", "properties": {}, "geometry": g} for g in geoms if g]}
    return json.dumps(doc)


def selected_area(layer: QgsVectorLayer) -> tuple[str, int]:
    """(GeoJSON of the selected polygons in the layer's CRS, how many)."""
    request = QgsFeatureRequest().setFilterFids(layer.selectedFeatureIds()).setNoAttributes()
    features = list(layer.getFeatures(request))
    return features_geojson(features, layer.crs()), len(features)
