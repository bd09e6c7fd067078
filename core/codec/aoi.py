"""An area of interest (AOI): a polygon that says which part of a container to decode.

``decompress --aoi AREA`` reads the polygon(s) from a GeoJSON or WKT file (or the text
itself), in any CRS, and places them on the raster: reprojected to the raster's CRS with
rasterio (PROJ), then into pixel coordinates. A decode then

* covers the area's bounding window only,
* decodes only the tiles whose footprint (overlap included) intersects the area; every
  pixel inside the area lies in those tiles, so it gets exactly the values of a full
  decode, blending included,
* writes the pixels outside the area as nodata (or masks them when the raster has no
  nodata value).

A pixel is inside when its centre is (rasterio's rule, ``all_touched=False``).

Which CRS the polygon is in: the one its file names (a GeoJSON ``"crs"`` member, as QGIS
and GDAL write it, or an EWKT ``SRID=...;`` prefix), else ``aoi_crs``, else GeoJSON's own
default (WGS 84 longitude/latitude, RFC 7946) or, for WKT, the raster's CRS.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely import affinity
from shapely.errors import GEOSException
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from ..errors import BadInput
from ..format.header import Header
from ..format.tiling import Tile

GEOJSON_CRS = "EPSG:4326"  # RFC 7946: longitude, latitude on WGS 84
_WKT_START = re.compile(r"^\s*(SRID=\d+;)?\s*(MULTI)?(POLYGON|GEOMETRYCOLLECTION)\b", re.IGNORECASE)
_EWKT_SRID = re.compile(r"^\s*SRID=(\d+);", re.IGNORECASE)
MAX_AOI_BYTES = 64 << 20  # an AOI file larger than this is refused before it is read
SEGMENTS = 64  # edges are densified to about 1/SEGMENTS of the area's size before reprojection


@dataclass(frozen=True)
class AreaOfInterest:
    """Polygon(s) as read, and the CRS they are in (None: the raster's)."""

    geometry: BaseGeometry
    crs: str | None
    source: str  # the file, or "text" when given inline


def _text_of(aoi: str) -> tuple[str, str]:
    """(text, where from): a file's contents, or the argument itself when it is GeoJSON / WKT."""
    text = str(aoi)
    stripped = text.lstrip()
    if stripped.startswith("{") or _WKT_START.match(stripped):
        return text, "text"
    path = Path(text).expanduser()
    if not path.is_file():
        raise BadInput(f"no such area-of-interest file: {text} (give a GeoJSON or WKT file)")
    if path.stat().st_size > MAX_AOI_BYTES:
        raise BadInput(f"{path}: an area-of-interest file of {path.stat().st_size >> 20} MiB is too large")
    try:
        return path.read_text(encoding="utf-8-sig"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the area of interest {path}: {exc}") from None


def _polygonal(geom: BaseGeometry, where: str) -> BaseGeometry:
    """The polygons of a geometry (a collection keeps its polygonal parts), repaired if invalid."""
    parts = []
    for g in getattr(geom, "geoms", [geom]):
        if isinstance(g, (shapely.Polygon, shapely.MultiPolygon)):
            parts.append(g)
        elif isinstance(g, shapely.GeometryCollection):
            parts.append(_polygonal(g, where))
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        raise BadInput(f"the area of interest in {where} has no polygon (points and lines enclose no area)")
    merged = shapely.union_all([p if p.is_valid else shapely.make_valid(p) for p in parts])
    merged = shapely.union_all([g for g in getattr(merged, "geoms", [merged])
                                if isinstance(g, (shapely.Polygon, shapely.MultiPolygon))])
    if merged.is_empty or merged.area <= 0:
        raise BadInput(f"the area of interest in {where} encloses no area")
    return merged


def _geojson_crs(obj: dict, where: str) -> str | None:
    crs = obj.get("crs")
    if crs is None:
        return None
    name = (crs.get("properties") or {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str) or not name:
        raise BadInput(f"{where}: the GeoJSON 'crs' member names no CRS (expected {{\"type\": \"name\", "
                       "\"properties\": {\"name\": \"EPSG:...\"}}})")
    return name


def _geojson_geometries(obj, where: str) -> list[BaseGeometry]:
    if not isinstance(obj, dict):
        raise BadInput(f"{where} is not a GeoJSON object")
    kind = obj.get("type")
    try:
        if kind == "FeatureCollection":
            return [g for f in obj.get("features") or [] for g in _geojson_geometries(f, where)]
        if kind == "Feature":
            return [shape(obj["geometry"])] if obj.get("geometry") else []
        return [shape(obj)]
    except (KeyError, TypeError, ValueError, AttributeError, GEOSException) as exc:
        raise BadInput(f"{where}: not valid GeoJSON geometry ({exc})") from None


def read_aoi(aoi: str, aoi_crs: str | None = None) -> AreaOfInterest:
    """Read an area of interest (GeoJSON or WKT, a file or the text) and its CRS."""
    text, where = _text_of(aoi)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{where}: not valid GeoJSON ({exc})") from None
        geoms = _geojson_geometries(obj, where)
        if not geoms:
            raise BadInput(f"{where}: the GeoJSON has no geometry")
        own = _geojson_crs(obj, where) if isinstance(obj, dict) else None
        crs = own or aoi_crs or GEOJSON_CRS
        return AreaOfInterest(_polygonal(shapely.GeometryCollection(geoms), where), crs, where)
    srid = _EWKT_SRID.match(stripped)
    body = stripped[srid.end():] if srid else stripped
    try:
        geom = shapely.from_wkt(body.strip())
    except (GEOSException, ValueError) as exc:
        raise BadInput(f"{where}: neither GeoJSON nor valid WKT ({' '.join(str(exc).split())[:120]})") from None
    crs = f"EPSG:{srid.group(1)}" if srid else aoi_crs
    return AreaOfInterest(_polygonal(geom, where), crs or None, where)


def _crs(value: str, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise BadInput(f"unknown CRS of the {what}: {value!r} ({exc})") from None


def to_raster_crs(area: AreaOfInterest, raster_crs: str | None) -> BaseGeometry:
    """The area's geometry in the raster's CRS (densified first, so long edges follow the
    projection); unchanged when both CRSs are the same or the area names none."""
    geom = area.geometry
    if area.crs is None:
        return geom
    if not raster_crs:
        raise BadInput("the raster has no CRS, so an area of interest with a CRS cannot be placed on it: "
                       "give the area in the raster's coordinates, without a CRS")
    src, dst = _crs(area.crs, "area of interest"), _crs(raster_crs, "raster")
    if src == dst:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / SEGMENTS
    if step > 0:
        geom = shapely.segmentize(geom, step)
    try:
        moved = shape(transform_geom(src, dst, mapping(geom)))
    except (ValueError, CRSError, rasterio.errors.RasterioError) as exc:
        raise BadInput(f"the area of interest cannot be reprojected to the raster's CRS: {exc}") from None
    if moved.is_empty or not all(math.isfinite(v) for v in moved.bounds):
        raise BadInput("the area of interest does not map onto the raster's CRS (outside its area of use?)")
    return moved if moved.is_valid else shapely.make_valid(moved)


@dataclass(frozen=True)
class RasterArea:
    """An area of interest placed on a raster: in its CRS and in its pixel coordinates."""

    geometry: BaseGeometry  # in the raster's CRS
    pixels: BaseGeometry  # in pixel coordinates: x = column, y = row (pixel (0, 0) spans [0, 1) x [0, 1))
    width: int
    height: int

    def __post_init__(self):
        shapely.prepare(self.pixels)

    def window(self) -> Window:
        """The smallest pixel window that holds the area, within the raster."""
        minx, miny, maxx, maxy = self.pixels.bounds
        x0, y0 = max(0, math.floor(minx)), max(0, math.floor(miny))
        x1, y1 = min(self.width, math.ceil(maxx)), min(self.height, math.ceil(maxy))
        if x1 <= x0 or y1 <= y0:
            raise BadInput("the area of interest lies outside the raster")
        return Window(x0, y0, x1 - x0, y1 - y0)

    def touches(self, tile: Tile) -> bool:
        """Whether any pixel of the tile (overlap included) can lie inside the area."""
        return bool(self.pixels.intersects(box(tile.x0, tile.y0, tile.x1, tile.y1)))

    def outside(self, x0: int, y0: int, height: int, width: int) -> np.ndarray:
        """(height, width) bool: True where a pixel's centre is outside the area."""
        if height <= 0 or width <= 0:
            return np.ones((max(height, 0), max(width, 0)), bool)
        return geometry_mask([self.pixels], out_shape=(height, width),
                             transform=rasterio.Affine.translation(x0, y0), all_touched=False)


def place_aoi(header: Header, aoi: str, aoi_crs: str | None = None) -> RasterArea:
    """Read an area of interest and place it on a container's raster."""
    area = read_aoi(aoi, aoi_crs)
    geom = to_raster_crs(area, header.crs)
    inv = ~rasterio.Affine(*header.transform)
    pixels = affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    if not pixels.intersects(box(0, 0, header.width, header.height)):
        raise BadInput(f"the area of interest ({area.source}) lies outside the raster")
    return RasterArea(geom, pixels, header.width, header.height)
