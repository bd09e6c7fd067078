"""The QGIS side of a job: which bands and files a layer gives, how a CRS is passed to the
worker, and, once a job finished, the before/after layer group and style copying.

The group and style functions run on the main thread only (called from ``QgsTask.finished``
or the plugin).
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsLayerTreeGroup,
    QgsMapLayerStyle,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
)

from ._contract import options

GROUP_NAME = "Code-RSIC before/after"
PROP_CONTAINER = "coderic/container"
PROP_ROLE = "coderic/role"
PROP_BANDS = "coderic/bands"  # the original's bands a decoded layer holds, in order ("1,2,3")
PROP_MODEL = "coderic/model"  # weights file the container was made with, when not the default
# QGIS's data types by numpy name, with how a dialog calls them; the codec's are core's SUPPORTED_DTYPES.
_QGIS_TYPES = {"uint8": (Qgis.DataType.Byte, "8-bit unsigned"), "uint16": (Qgis.DataType.UInt16, "16-bit unsigned"),
               "int16": (Qgis.DataType.Int16, "16-bit signed"), "uint32": (Qgis.DataType.UInt32, "32-bit unsigned"),
               "int32": (Qgis.DataType.Int32, "32-bit signed"), "float32": (Qgis.DataType.Float32, "32-bit float"),
               "float64": (Qgis.DataType.Float64, "64-bit float")}
SUPPORTED_TYPES = {_QGIS_TYPES[name][0]: name for name in options.SUPPORTED_DTYPES}


def dtype_text() -> str:
    """The codec's data types in words: "8-bit unsigned and 16-bit unsigned"."""
    return " and ".join(_QGIS_TYPES[name][1] for name in options.SUPPORTED_DTYPES)


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """A CRS as the worker's rasterio understands it: EPSG code if it has one, else WKT."""
    if not crs.isValid():
        return ""
    return crs.authid() if crs.authid().upper().startswith("EPSG:") else crs.toWkt(
        QgsCoordinateReferenceSystem.WKT_PREFERRED)


def layer_file_path(layer) -> str | None:
    """The local file behind a raster layer, or None (web service, memory, /vsi...)."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    return path if path and os.path.isfile(path) else None


def band_names(layer: QgsRasterLayer) -> list[str]:
    return [layer.bandName(b) for b in range(1, layer.bandCount() + 1)]


def default_bands(layer: QgsRasterLayer) -> list[int]:
    """The bands the layer shows (an RGB renderer's bands), else the first ones the codec codes together."""
    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "multibandcolor":
        used = [b for b in renderer.usesBands() if b > 0]
        if used and len(set(used)) == len(used):
            return used
    return list(range(1, min(layer.bandCount(), options.BANDS_PER_GROUP) + 1))


def _remap_renderer(renderer, mapping: dict[int, int]) -> bool:
    """Point a renderer at the decoded raster's band numbers; False if it cannot be."""
    kind = renderer.type()
    try:
        if kind == "multibandcolor":
            for get, set_ in (("redBand", "setRedBand"), ("greenBand", "setGreenBand"), ("blueBand", "setBlueBand")):
                band = getattr(renderer, get)()
                if band > 0:
                    getattr(renderer, set_)(mapping[band])
        elif kind == "singlebandgray":
            renderer.setGrayBand(mapping[renderer.grayBand()])
        elif kind in ("singlebandpseudocolor", "hillshade", "contour"):
            renderer.setBand(mapping[renderer.usesBands()[0]])
        else:
            return all(mapping.get(b) == b for b in renderer.usesBands())
    except (KeyError, AttributeError, IndexError):
        return False
    return True


def copy_style(source: QgsRasterLayer, target: QgsRasterLayer, bands: list[int] | None = None) -> bool:
    """Give ``target`` (holding ``bands`` of ``source``, in order) the same style as ``source``.

    Returns False (target keeps its default style) when the source's renderer shows bands
    that were not coded.
    """
    renderer = source.renderer()
    if renderer is None:
        return False
    mapping = {b: i + 1 for i, b in enumerate(bands or range(1, source.bandCount() + 1))}
    probe = renderer.clone()
    if not _remap_renderer(probe, mapping):
        return False
    style = QgsMapLayerStyle()
    style.readFromLayer(source)
    style.writeToLayer(target)
    remapped = target.renderer().clone()
    _remap_renderer(remapped, mapping)
    target.setRenderer(remapped)
    target.triggerRepaint()
    return True


def _find_group_of(layer_id: str) -> QgsLayerTreeGroup | None:
    node = QgsProject.instance().layerTreeRoot().findLayer(layer_id)
    if node is not None and isinstance(node.parent(), QgsLayerTreeGroup) and node.parent().name() == GROUP_NAME:
        return node.parent()
    return None


def before_after_group(original: QgsRasterLayer) -> QgsLayerTreeGroup:
    """The "Code-RSIC before/after" group holding ``original`` (moved there if needed)."""
    root = QgsProject.instance().layerTreeRoot()
    group = _find_group_of(original.id())
    if group is not None:
        return group
    node = root.findLayer(original.id())
    parent = node.parent()
    index = parent.children().index(node)
    group = parent.insertGroup(index, GROUP_NAME)
    group.addChildNode(node.clone())
    parent.removeChildNode(node)
    original.setCustomProperty(PROP_ROLE, "original")
    return group


def add_decoded_layer(path: str, name: str, *, original: QgsRasterLayer | None = None,
                      bands: list[int] | None = None, container: str | None = None,
                      style_from: QgsRasterLayer | None = None) -> tuple[QgsRasterLayer, QgsLayerTreeGroup | None]:
    """Add a decoded GeoTIFF above ``original`` in the before/after group, styled like it.

    The group is mutually exclusive, so clicking either layer flips between before and after.
    """
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the decoded raster {path}")
    style_source = style_from or original
    if style_source is not None:
        copy_style(style_source, layer, None if style_from is not None else bands)
    if container:
        layer.setCustomProperty(PROP_CONTAINER, str(Path(container).resolve()))
    if bands:
        layer.setCustomProperty(PROP_BANDS, ",".join(map(str, bands)))
    layer.setCustomProperty(PROP_ROLE, "decoded")
    root = QgsProject.instance().layerTreeRoot()
    if original is None or root.findLayer(original.id()) is None:  # nothing to compare with
        QgsProject.instance().addMapLayer(layer)
        return layer, None
    QgsProject.instance().addMapLayer(layer, False)
    group = before_after_group(original)
    group.insertLayer(0, layer)
    group.setIsMutuallyExclusive(True, 0)  # the decoded layer is the one shown
    group.setExpanded(True)
    return layer, group


def find_layer_by_container(container: str) -> QgsRasterLayer | None:
    """A decoded layer of the project that came from ``container``."""
    want = str(Path(container).resolve())
    for layer in QgsProject.instance().mapLayers().values():
        if layer.customProperty(PROP_CONTAINER) == want and isinstance(layer, QgsRasterLayer):
            return layer
    return None


def find_layer_by_file_name(file_name: str) -> QgsRasterLayer | None:
    """A project raster whose file has this name (the container remembers its source's name)."""
    if not file_name:
        return None
    for layer in QgsProject.instance().mapLayers().values():
        path = layer_file_path(layer)
        if path and Path(path).name == file_name and layer.customProperty(PROP_ROLE) != "decoded":
            return layer
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def summary_text(result: dict, name: str) -> str:
    """One line for the message bar: sizes, ratio, bpp, PSNR and whether the decode was enhanced."""
    parts = []
    if result.get("input_bytes") is not None and result.get("bytes") is not None:
        parts.append(f"{human_bytes(result['input_bytes'])} file -> {human_bytes(result['bytes'])}")
    elif result.get("container_bytes") is not None:
        parts.append(f"container {human_bytes(result['container_bytes'])}")
    if result.get("ratio"):
        parts.append(f"ratio {result['ratio']:.1f}:1")
    if result.get("bpp") is not None:
        parts.append(f"{result['bpp']:.3f} bpp")
    if "psnr" in result:
        psnr = result["psnr"]
        parts.append("PSNR n/a" if psnr is None else f"PSNR {psnr:.2f} dB")
    decode = result.get("decode") if isinstance(result.get("decode"), dict) else result
    if decode.get("enhanced"):
        parts.append("decode enhanced (codebook prior)")
    return f"{name}: " + ", ".join(parts)
