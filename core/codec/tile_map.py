"""Per-tile maps of a container: where each tile is, what it cost, how well it decoded.

Every coded tile becomes one polygon in the raster's CRS (built with shapely from the
tile grid and the geotransform) with its bytes and bits per pixel, and, given the source
and a decoded raster, its measured quality (PSNR, and any other metric passed in, such as
LPIPS from ``core.evaluation.tile_metrics``). ``info --tiles`` and ``roundtrip
--quality-map`` write these maps; the QGIS plugin shows them as a graduated layer.

Footprints: neighbouring tiles share ``overlap`` pixels, so a tile's footprint is the part
of the raster it *owns*: its window cut at the middle of each overlap. The footprints
partition the raster (no gaps, no double cover), so a map reads like a choropleth. ``bpp``
is a tile's payload bits over its footprint's pixels: the footprints' bits sum to the
payload, and their pixel-weighted mean bpp is the file's without the framing. The tile's
whole window (overlap included) is in ``x0``, ``y0``, ``width``, ``height``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import rasterio
from rasterio.windows import Window
from shapely.geometry import Polygon

from ..errors import BadInput
from ..format.container import ContainerReader
from ..format.header import Header
from ..format.normalization import BandRange
from ..format.raster_io import OffGrid, grid_offset, has_mask, open_raster, read_valid
from ..format.tiling import Tile, TileGrid
from ..format.output import check_output
from ..compare.psnr import psnr_from_mse, raster_peak
from ..format.vector import vector_format, write_polygons
from ..options import band_groups

# name -> fn(source, decoded) on uint8 (h, w, 3) images of one band group -> value or None
TileMetric = Callable[[np.ndarray, np.ndarray], "float | None"]
Progress = Callable[[int, int], None]


def _cuts(starts: list[int], tile: int, size: int) -> list[int]:
    """Where each tile's footprint starts along one axis, plus the raster's end: the middle of
    each overlap with the next tile."""
    cuts = [0]
    for i in range(1, len(starts)):
        end_prev = min(starts[i - 1] + tile, size)
        cuts.append((starts[i] + end_prev) // 2)
    return cuts + [size]


@dataclass(frozen=True)
class Footprint:
    tile: Tile
    x0: int  # the pixels the tile owns: columns x0..x1, rows y0..y1 (end exclusive)
    y0: int
    x1: int
    y1: int

    @property
    def pixels(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    @property
    def window(self) -> Window:
        return Window(self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0)

    def polygon(self, transform: rasterio.Affine) -> Polygon:
        corners = [(self.x0, self.y0), (self.x1, self.y0), (self.x1, self.y1), (self.x0, self.y1)]
        return Polygon([transform * c for c in corners])


def footprints(header: Header) -> list[Footprint]:
    """The footprint of every tile of a container's grid, in tile index order."""
    grid = TileGrid(header.width, header.height, header.tile, header.overlap)
    xs = _cuts(grid.col_starts, grid.tile, grid.width)
    ys = _cuts(grid.row_starts, grid.tile, grid.height)
    return [Footprint(t, xs[t.col], ys[t.row], xs[t.col + 1], ys[t.row + 1]) for t in grid]


def tile_records(path: str | Path) -> tuple[Header, list[tuple[Polygon, dict]]]:
    """(header, [(footprint polygon in the raster's CRS, properties)]) of a container's tiles."""
    with ContainerReader(path) as reader:
        header, entries = reader.header, reader.entries
    transform = rasterio.Affine(*header.transform)
    records = []
    for fp in footprints(header):
        t = fp.tile
        n = entries[t.index].length
        records.append((fp.polygon(transform), {
            "tile": t.index, "row": t.row, "col": t.col, "x0": t.x0, "y0": t.y0, "width": t.width,
            "height": t.height, "bytes": n, "bpp": n * 8 / fp.pixels if fp.pixels else None}))
    return header, records


def write_tile_map(container: str | Path, dst: str | Path, overwrite: bool = False) -> dict:
    """``info --tiles``: the tiles' footprints with bytes and bpp, as GeoJSON or GeoPackage."""
    header, records = tile_records(container)
    fmt = write_polygons(dst, records, header.crs, "tiles", overwrite)
    return _summary(dst, fmt, records)


def _summary(dst, fmt: str, records: list[tuple[Polygon, dict]]) -> dict:
    res = {"output": str(dst), "format": fmt, "tiles": len(records),
           "bytes": sum(p["bytes"] for _, p in records)}
    for key in ("psnr", "lpips"):
        values = [p[key] for _, p in records if p.get(key) is not None]
        if values:
            res[f"{key}_min"], res[f"{key}_max"] = min(values), max(values)
    return res


# ---------------------------------------------------------------- measured quality

def _offset(header: Header, ds, what: str) -> tuple[int, int]:
    """Where raster ``ds`` starts on the container's pixel grid (it may be a window of it)."""
    try:
        return grid_offset(rasterio.Affine(*header.transform), ds.transform)
    except OffGrid as off:
        if off.what == "pixel size":
            raise BadInput(f"the {what} {ds.name} has another pixel size or orientation than the container") from None
        raise BadInput(f"the {what} {ds.name} is not aligned with the container's pixel grid") from None


def _to_uint8(values: np.ndarray, ranges: list[BandRange], dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return values.astype(np.uint8)
    out = np.stack([r.to_unit(v) for r, v in zip(ranges, values.astype(np.float32))])
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _peak(header: Header) -> float:
    return raster_peak(header.dtype, min(lo for lo, _ in header.ranges), max(hi for _, hi in header.ranges))


def measure_tile(src: np.ndarray, dec: np.ndarray, valid: np.ndarray, header: Header,
                 metrics: Mapping[str, TileMetric]) -> dict:
    """PSNR (and ``metrics``, averaged over band groups) of one footprint's pixels."""
    a = src[:, valid].astype(np.float64)
    res: dict = {"valid_pixels": int(valid.sum())}
    if a.size == 0:
        return dict(res, psnr=None, mse=None, **{name: None for name in metrics})
    mse = float(((a - dec[:, valid].astype(np.float64)) ** 2).mean())
    res["mse"] = mse
    res["psnr"] = psnr_from_mse(mse, _peak(header))
    if metrics:
        ranges = [BandRange(*r) for r in header.ranges]
        a8, b8 = _to_uint8(src, ranges, header.dtype), _to_uint8(dec, ranges, header.dtype)
        b8[:, ~valid] = a8[:, ~valid]  # invalid pixels add no distance
        for name, fn in metrics.items():
            values = [fn(np.ascontiguousarray(a8[g].transpose(1, 2, 0)), np.ascontiguousarray(b8[g].transpose(1, 2, 0)))
                      for g in band_groups(src.shape[0])]
            values = [v for v in values if v is not None]
            res[name] = float(np.mean(values)) if values else None
    return res


def tile_quality(container: str | Path, source: str | Path, decoded: str | Path,
                 metrics: Mapping[str, TileMetric] | None = None,
                 progress: Progress | None = None) -> tuple[Header, list[tuple[Polygon, dict]]]:
    """The tile map of ``container`` with each footprint's quality: ``source`` (the raster
    that was compressed) against ``decoded`` (a decode of the container, all of it or a
    window: only the footprints it covers are measured and listed)."""
    metrics = dict(metrics or {})
    header, records = tile_records(container)
    bands = list(header.bands)
    out = []
    with open_raster(source) as src, open_raster(decoded) as dec:
        if (src.width, src.height) != (header.width, header.height) or max(bands) > src.count:
            raise BadInput(f"{source} is not the raster {Path(str(container)).name} was made from "
                           f"({src.width} x {src.height} px, {src.count} bands; the container: "
                           f"{header.width} x {header.height} px, bands {bands})")
        if dec.count != len(bands):
            raise BadInput(f"{decoded} has {dec.count} band(s), the container codes {len(bands)}")
        _offset(header, src, "source")
        dx, dy = _offset(header, dec, "decoded raster")
        src_masked = has_mask(src, bands)
        dec_masked = has_mask(dec, list(range(1, dec.count + 1)))
        fps = [fp for fp in footprints(header)
               if fp.x0 < dx + dec.width and fp.x1 > dx and fp.y0 < dy + dec.height and fp.y1 > dy]
        for done, fp in enumerate(fps, start=1):
            x0, y0 = max(fp.x0, dx), max(fp.y0, dy)
            x1, y1 = min(fp.x1, dx + dec.width), min(fp.y1, dy + dec.height)
            win = Window(x0, y0, x1 - x0, y1 - y0)
            dwin = Window(x0 - dx, y0 - dy, x1 - x0, y1 - y0)
            a, b = src.read(bands, window=win), dec.read(window=dwin)
            valid = np.ones(a.shape[1:], bool)
            if src_masked:
                valid &= read_valid(src, bands, win)
            if dec_masked:
                valid &= read_valid(dec, list(range(1, dec.count + 1)), dwin)
            geom, props = records[fp.tile.index]
            out.append((geom, dict(props, **measure_tile(a, b, valid, header, metrics))))
            if progress:
                progress(done, len(fps))
    if not out:
        raise BadInput(f"{decoded} covers none of the container's tiles")
    return header, out


def write_quality_map(container: str | Path, source: str | Path, decoded: str | Path, dst: str | Path,
                      metrics: Mapping[str, TileMetric] | None = None, overwrite: bool = False,
                      progress: Progress | None = None) -> dict:
    """``roundtrip --quality-map``: the tile map with measured PSNR (and ``metrics``) per tile."""
    vector_format(dst)
    check_output(dst, overwrite)  # before the measuring
    header, records = tile_quality(container, source, decoded, metrics, progress)
    fmt = write_polygons(dst, records, header.crs, "tile_quality", overwrite)
    return dict(_summary(dst, fmt, records), metrics=["psnr", *(metrics or {})])
