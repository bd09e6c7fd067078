"""Polygon layers for GIS: GeoJSON, or GeoPackage written with the standard library's sqlite3.

rasterio ships GDAL's raster side only (no fiona, no OGR in the codec's environment), so
the per-tile maps are written here:

* ``.geojson`` / ``.json``: a FeatureCollection in the raster's CRS, named in the
  ``"crs"`` member GDAL and QGIS read (RFC 7946 allows only WGS 84; GIS software accepts
  the member, and a map in the raster's own coordinates needs no reprojection);
* ``.gpkg``: an OGC GeoPackage 1.2 (the tables GDAL and QGIS require:
  ``gpkg_spatial_ref_sys``, ``gpkg_contents``, ``gpkg_geometry_columns``, one feature
  table whose geometries are GeoPackage binary headers + WKB).

Outputs are written atomically, like every output of the codec.
"""

from __future__ import annotations

import json
import re
import sqlite3
import struct
from pathlib import Path
from typing import Iterable

import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from ..errors import BadInput
from .json_values import json_safe
from .output import atomic_output

VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg")
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION = 10200
CUSTOM_SRS_ID = 100000  # a CRS without an EPSG code


def vector_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise BadInput(f"{path}: a tile map is written as .geojson or .gpkg, not '{suffix or 'no suffix'}'")
    return "gpkg" if suffix == ".gpkg" else "geojson"


def _epsg(crs: CRS | None) -> int | None:
    if crs is None:
        return None
    try:
        return crs.to_epsg()
    except CRSError:
        return None


def _parse_crs(crs: str | None) -> CRS | None:
    if not crs:
        return None
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise BadInput(f"unknown CRS {crs!r} ({exc})") from None


def write_geojson(path: Path, features: list[tuple[BaseGeometry, dict]], crs: CRS | None, name: str) -> None:
    code = _epsg(crs)
    doc = {"type": "FeatureCollection", "name": name}
    if crs is not None:
        doc["crs"] = {"type": "name",
                      "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}" if code else crs.to_wkt()}}
    doc["features"] = [{"type": "Feature", "properties": {k: json_safe(v) for k, v in props.items()},
                        "geometry": mapping(geom)} for geom, props in features]
    path.write_text(json.dumps(doc, allow_nan=False), encoding="utf-8")


def _sql_type(values: Iterable) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return "BOOLEAN"
    if kinds <= {int, bool}:
        return "INTEGER"
    if kinds <= {int, float, bool}:
        return "REAL"
    return "TEXT"


def _gpkg_geometry(geom: BaseGeometry, srs_id: int) -> bytes:
    """GeoPackage binary: "GP", version 0, flags (little endian, xy envelope), srs id, envelope, WKB."""
    if geom.is_empty:
        return b"GP" + bytes([0, 0x11]) + struct.pack("<i", srs_id) + shapely.to_wkb(geom, byte_order=1)
    minx, miny, maxx, maxy = geom.bounds
    return (b"GP" + bytes([0, 0x03]) + struct.pack("<i", srs_id) + struct.pack("<4d", minx, maxx, miny, maxy)
            + shapely.to_wkb(geom, byte_order=1, output_dimension=2))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_BASE_SRS = [
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
]


def write_gpkg(path: Path, features: list[tuple[BaseGeometry, dict]], crs: CRS | None, name: str) -> None:
    table = re.sub(r"\W", "_", name) or "tiles"
    code = _epsg(crs)
    srs_id = -1 if crs is None else (code or CUSTOM_SRS_ID)
    columns: dict[str, str] = {}
    for key in dict.fromkeys(k for _, props in features for k in props):
        columns[key] = _sql_type(json_safe(props.get(key)) for _, props in features)
    geom_types = {g.geom_type.upper() for g, _ in features if not g.is_empty}
    geom_type = geom_types.pop() if len(geom_types) == 1 else "GEOMETRY"
    bounds = shapely.union_all([g for g, _ in features]).bounds if features else (None,) * 4
    con = sqlite3.connect(path)
    try:
        con.execute(f"PRAGMA application_id = {GPKG_APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
        con.executescript("""
            CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
                organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
                definition TEXT NOT NULL, description TEXT);
            CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
                identifier TEXT UNIQUE, description TEXT DEFAULT '',
                last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
                CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
            CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
                geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
                CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
                CONSTRAINT uk_gc_table_name UNIQUE (table_name),
                CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
                CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
        """)
        srs = list(_BASE_SRS)
        if crs is not None:
            org = ("EPSG", code) if code else ("NONE", CUSTOM_SRS_ID)
            srs.append((crs.to_string() if code else "custom", srs_id, org[0], org[1], crs.to_wkt(), None))
        con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", srs)
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, "
                    "max_x, max_y, srs_id) VALUES (?, 'features', ?, '', ?, ?, ?, ?, ?)",
                    (table, table, *bounds, srs_id))
        con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)", (table, geom_type, srs_id))
        cols = "".join(f", {_quote(k)} {t}" for k, t in columns.items())
        con.execute(f"CREATE TABLE {_quote(table)} (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
                    f"geom {geom_type}{cols})")
        marks = ", ".join("?" * (len(columns) + 1))
        names = ", ".join(["geom"] + [_quote(k) for k in columns])
        con.executemany(f"INSERT INTO {_quote(table)} ({names}) VALUES ({marks})",
                        [(_gpkg_geometry(g, srs_id), *(json_safe(p.get(k)) for k in columns)) for g, p in features])
        con.commit()
    finally:
        con.close()


def write_polygons(dst: str | Path, features: list[tuple[BaseGeometry, dict]], crs: str | None,
                   name: str = "tiles", overwrite: bool = False) -> str:
    """Write ``(geometry, properties)`` features in ``crs`` (WKT, EPSG code...) to ``dst``
    (.geojson or .gpkg, by its suffix); returns the format written."""
    fmt = vector_format(dst)
    parsed = _parse_crs(crs)
    with atomic_output(dst, overwrite) as tmp:
        Path(tmp).unlink()  # sqlite wants to create the file itself
        (write_gpkg if fmt == "gpkg" else write_geojson)(Path(tmp), features, parsed, name)
    return fmt
