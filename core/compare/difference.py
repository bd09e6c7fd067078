"""Where a decoded raster differs from its source: a georeferenced difference raster.

``difference_raster(a, b, dst)`` writes, per pixel, the absolute difference of the two
rasters averaged over the compared bands (``mean_k |a_k - b_k|``, in the rasters' own
units), as a one-band float32 GeoTIFF on ``b``'s pixel grid. It is computed window by
window (memory stays at one block of both inputs), like the codec.

``b`` may be a window of ``a`` (a map-extent or area-of-interest decode): it must share
``a``'s CRS and pixel grid (same pixel size, whole-pixel offset). Pixels that are invalid
in either raster (nodata, mask), or that ``a`` does not cover, are nodata (``-1``).
Band choice: ``bands`` of ``a`` (1-based) compared with ``b``'s bands in order; by default
all bands when both have as many, else ``a``'s default bands (the RGB ones, else the first
three), which is what the codec codes by default.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from ..errors import BadInput
from ..format.raster_io import (OffGrid, default_bands, geotiff_profile, grid_offset, has_mask, open_raster, raster_output,
                                 read_valid)

DIFF_NODATA = -1.0
BLOCK = 1024  # pixels per side of the windows computed at a time (a multiple of the 256-px output blocks)
Progress = Callable[[int, int], None]


def _compared_bands(a, b, bands: list[int] | None) -> list[int]:
    if bands:
        chosen = list(bands)
    elif a.count == b.count:
        chosen = list(range(1, a.count + 1))
    else:
        chosen = default_bands(a)
    bad = [x for x in chosen if not 1 <= x <= a.count]
    if bad:
        raise BadInput(f"band {bad[0]} does not exist in {a.name} (bands 1..{a.count})")
    if len(chosen) != b.count:
        raise BadInput(f"{b.name} has {b.count} band(s) but {len(chosen)} band(s) of {a.name} are compared "
                       f"({chosen}): give the bands of the first raster that the second one holds")
    return chosen


def _offset_in(a, b) -> tuple[int, int]:
    """Where ``b``'s pixel (0, 0) lies on ``a``'s pixel grid."""
    if a.crs and b.crs and a.crs != b.crs:
        raise BadInput(f"{a.name} and {b.name} are in different CRSs: compare rasters on the same grid")
    try:
        return grid_offset(a.transform, b.transform)
    except OffGrid as off:
        if off.what == "pixel size":
            raise BadInput(f"{a.name} and {b.name} have different pixel sizes: "
                           "compare rasters on the same grid") from None
        raise BadInput(f"{b.name} is not aligned with the pixel grid of {a.name}") from None


def _profile(b, width: int, height: int, transform) -> dict:
    return geotiff_profile(width, height, 1, "float32", b.crs, transform, DIFF_NODATA)


def difference_raster(a: str | Path, b: str | Path, dst: str | Path, bands: list[int] | None = None,
                      overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Write ``mean |a - b|`` over the compared bands to ``dst``; returns its statistics."""
    t0 = time.perf_counter()
    with open_raster(a) as da, open_raster(b) as db:
        chosen = _compared_bands(da, db, bands)
        dx, dy = _offset_in(da, db)
        # the part of b that a covers, in b's pixels
        x0, y0 = max(0, -dx), max(0, -dy)
        x1, y1 = min(db.width, da.width - dx), min(db.height, da.height - dy)
        if x1 <= x0 or y1 <= y0:
            raise BadInput(f"{a} and {b} do not overlap")
        width, height = x1 - x0, y1 - y0
        transform = window_transform(Window(x0, y0, width, height), db.transform)
        masked_a, masked_b = has_mask(da, chosen), has_mask(db, list(range(1, db.count + 1)))
        windows = [Window(c, r, min(BLOCK, width - c), min(BLOCK, height - r))
                   for r in range(0, height, BLOCK) for c in range(0, width, BLOCK)]
        total, count, peak, sq = 0.0, 0, 0.0, 0.0
        with raster_output(dst, _profile(db, width, height, transform), overwrite) as out:
            out.set_band_description(1, f"mean |a - b| over bands {','.join(map(str, chosen))} of a")
            for done, w in enumerate(windows, start=1):
                wb = Window(w.col_off + x0, w.row_off + y0, w.width, w.height)
                wa = Window(wb.col_off + dx, wb.row_off + dy, w.width, w.height)
                va = da.read(chosen, window=wa).astype(np.float32)
                vb = db.read(window=wb).astype(np.float32)
                diff = np.abs(va - vb).mean(axis=0)
                valid = np.ones(diff.shape, bool)
                if masked_a:
                    valid &= read_valid(da, chosen, wa)
                if masked_b:
                    valid &= read_valid(db, list(range(1, db.count + 1)), wb)
                diff[~valid] = DIFF_NODATA
                out.write(diff[None], window=w)
                v = diff[valid].astype(np.float64)
                total, count, sq = total + float(v.sum()), count + v.size, sq + float((v * v).sum())
                peak = max(peak, float(v.max())) if v.size else peak
                if progress:
                    progress(done, len(windows))
    return {"output": str(dst), "width": width, "height": height, "bands": chosen,
            "valid_pixels": count, "mean_abs_diff": total / count if count else None,
            "rms_abs_diff": math.sqrt(sq / count) if count else None, "max_abs_diff": peak if count else None,
            "seconds": time.perf_counter() - t0}
