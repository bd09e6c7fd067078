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
    QgsRaster,
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


def layer_source(layer) -> tuple[str | None, str | None]:
    """(the GDAL dataset name the worker opens, None), or (None, why the layer cannot be coded).

    Any raster GDAL reads from a file on this computer is accepted: a GeoTIFF, a VRT, a
    GeoPackage table (``GPKG:file:table``), a file inside a zip or gzip (``/vsizip/``,
    ``/vsigzip/``), a subdataset (``NETCDF:"file":var``). Web services and remote files are
    refused with the reason.
    """
    if not isinstance(layer, QgsRasterLayer):
        return None, "Choose a raster layer"
    name = layer.name()
    if layer.providerType() != "gdal":
        return None, (f"Layer '{name}' comes from a {layer.providerType()} service, not a file: "
                      "save it as a GeoTIFF first (Export > Save As…)")
    source = layer.source().split("|")[0]  # QGIS's own |option:... suffixes are not part of GDAL's name
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    path = parts.get("path") or source
    prefix = parts.get("vsiPrefix") or ""
    if prefix and prefix not in LOCAL_VSI or not os.path.isfile(path):
        return None, (f"Layer '{name}' is not a file on this computer ({source[:80]}): "
                      "save it as a GeoTIFF first (Export > Save As…)")
    if not layer.isValid() or layer.bandCount() < 1:
        return None, f"Layer '{name}' cannot be read by GDAL ({source[:80]})"
    return source, None


LOCAL_VSI = ("/vsizip/", "/vsigzip/", "/vsitar/", "/vsi7z/", "/vsirar/")  # archives of local files


def layer_file_path(layer) -> str | None:
    """The GDAL dataset name behind a raster layer on this computer, or None (see ``layer_source``)."""
    return layer_source(layer)[0]


def source_file(source: str) -> str:
    """The file on disk behind a GDAL dataset name (the zip of a /vsizip/ path, the GeoPackage
    of a table): where outputs are proposed, beside it."""
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    return parts.get("path") or source


def source_stem(source: str) -> str:
    """Path without suffix for the outputs proposed for a source: beside its file, named after
    the raster (the file inside a zip, the GeoPackage table)."""
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    path = Path(parts.get("path") or source)
    inner = (parts.get("vsiSuffix") or "").strip("/").split("/")[-1] or parts.get("layerName") or ""
    stem = Path(inner).stem if inner else path.stem
    if path.name.endswith(".gz"):
        stem = Path(path.stem).stem
    return str(path.parent / stem)


SHORT_NAME = 24  # characters of a layer's own name kept in a derived layer's name (the Layers panel is narrow)


def short_name(name: str, limit: int = SHORT_NAME) -> str:
    """``neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029`` -> ``neon_rgb_uint…_OSBS_029``: the
    start and the end, which tell files of one series apart."""
    if len(name) <= limit:
        return name
    head = (limit - 1) * 3 // 5
    return name[:head] + "…" + name[-(limit - 1 - head):]


def band_names(layer: QgsRasterLayer) -> list[str]:
    return [layer.bandName(b) for b in range(1, layer.bandCount() + 1)]


def default_bands(layer: QgsRasterLayer) -> list[int]:
    """Every band, in order, except alpha bands (the container keeps them as the mask); none
    above the codec's MAX_DEFAULT_BANDS, where the user must choose (``too_many_bands_problem``)."""
    if layer.bandCount() > options.MAX_DEFAULT_BANDS:
        return []
    provider = layer.dataProvider()
    bands = [b for b in range(1, layer.bandCount() + 1) if provider.colorInterpretation(b) != QgsRaster.AlphaBand]
    return bands or [1]


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
    layer.setTitle(f"{name} ({path})")  # the full story in the layer's tooltip
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


human_bytes = options.format_bytes  # the codec's one size formatter (1 kB = 1000 bytes)


def summary_text(result: dict, name: str) -> str:
    """One line for the message bar: sizes, ratio, bpp, PSNR and whether the decode was enhanced."""
    parts = []
    container = result.get("bytes", result.get("container_bytes"))
    if result.get("raw_bytes") and container:
        parts.append(options.sizes_text(result["raw_bytes"], container, result.get("input_bytes"),
                                        result.get("input_label", "input file")))
    elif container is not None:
        parts.append(f"container {human_bytes(container)}")
    if result.get("bpp") is not None:
        parts.append(f"{result['bpp']:.3f} bpp")
    if result.get("rate_note"):
        parts.append(result["rate_note"])
    if "psnr" in result:
        psnr = result["psnr"]
        parts.append("PSNR n/a" if psnr is None else f"PSNR {psnr:.2f} dB")
    decode = result.get("decode") if isinstance(result.get("decode"), dict) else result
    if decode.get("enhanced"):
        parts.append("decode enhanced (codebook prior)")
    return f"{name}: " + ", ".join(parts)
