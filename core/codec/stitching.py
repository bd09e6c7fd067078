"""Blend decoded tiles into finished strips of an output window (format 3: put them side by side).

A ``Mosaic`` covers one pixel window of the raster; tiles are added in row-major order,
each weighted by its blend ramps. ``stitch`` turns a stream of decoded tiles into a
stream of finished strips, holding one row of tiles. Decoding a window alone and
decoding the whole raster strip by strip perform the same float operations in the same
order, so they give identical pixels.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from ..format.tiling import Tile, TileGrid


class Mosaic:
    def __init__(self, y0: int, x0: int, height: int, width: int, bands: int):
        self.y0, self.x0, self.height, self.width = y0, x0, height, width
        self.values = np.zeros((bands, height, width), dtype=np.float32)
        self.invalid = np.zeros((height, width), dtype=bool)

    def add(self, grid: TileGrid, tile: Tile, decoded: np.ndarray, invalid: np.ndarray | None) -> None:
        """Add a decoded tile (bands, tile.height, tile.width) where it overlaps the mosaic."""
        ty0, ty1 = max(tile.y0, self.y0), min(tile.y1, self.y0 + self.height)
        tx0, tx1 = max(tile.x0, self.x0), min(tile.x1, self.x0 + self.width)
        if ty0 >= ty1 or tx0 >= tx1:
            return
        src = (slice(ty0 - tile.y0, ty1 - tile.y0), slice(tx0 - tile.x0, tx1 - tile.x0))
        dst = (slice(ty0 - self.y0, ty1 - self.y0), slice(tx0 - self.x0, tx1 - self.x0))
        if grid.overlap:
            self.values[(slice(None), *dst)] += decoded[(slice(None), *src)] * grid.blend_weights(tile)[src]
        else:  # tiles without overlap (format 3): put side by side, nothing blended
            self.values[(slice(None), *dst)] = decoded[(slice(None), *src)]
        if invalid is not None:
            self.invalid[dst] |= invalid[src]

    def take_rows(self, n: int) -> "Mosaic":
        """Split off the first ``n`` rows as a finished mosaic; keep the rest (the carry)."""
        done = Mosaic(self.y0, self.x0, n, self.width, self.values.shape[0])
        done.values, done.invalid = self.values[:, :n], self.invalid[:n]
        self.values, self.invalid = self.values[:, n:], self.invalid[n:]
        self.y0 += n
        self.height -= n
        return done

    def extend_to(self, height: int) -> None:
        """Grow downwards (zeros) to ``height`` rows."""
        if height > self.height:  # fresh zeroed memory (no pass writing zeros), the carry copied in
            b, _, w = self.values.shape
            values, invalid = np.zeros((b, height, w), np.float32), np.zeros((height, w), bool)
            values[:, : self.height], invalid[: self.height] = self.values, self.invalid
            self.values, self.invalid, self.height = values, invalid, height


def stitch(grid: TileGrid, tiles: list[Tile], decoded: Iterable, window: tuple[int, int, int, int], bands: int,
           progress: Callable[[int, int], None] | None = None) -> Iterator[Mosaic]:
    """Blend decoded ``(index, values, invalid)`` tiles (row-major) and yield the finished
    strips of ``window`` (col_off, row_off, width, height), top to bottom."""
    x0, y0, width, height = window
    y_end = y0 + height
    mosaic = Mosaic(y0, x0, 0, width, bands)
    by_index = {t.index: t for t in tiles}
    done = 0
    current_row = None
    for index, values, invalid in decoded:
        t = by_index[index]
        if t.row != current_row:
            if current_row is not None:
                final = min(t.y0, y_end) - mosaic.y0  # rows above this tile row's start are final
                if final > 0:
                    yield mosaic.take_rows(final)
            current_row = t.row
            mosaic.extend_to(min(t.y1, y_end) - mosaic.y0)
        mosaic.add(grid, t, values, invalid)
        done += 1
        if progress:
            progress(done, len(tiles))
    if mosaic.height > 0:
        yield mosaic


def raster_values(mosaic: Mosaic, ranges, dtype: str, nodata: float | None) -> np.ndarray:
    """A finished strip's values in the raster's dtype; invalid pixels are ``nodata``, and a
    valid pixel never decodes to it (nudged by one level)."""
    out = np.stack([r.from_unit(v, dtype) for r, v in zip(ranges, mosaic.values)])
    if nodata is not None:
        nd = np.asarray(nodata).astype(dtype)
        nudge = nd + 1 if nd < np.iinfo(dtype).max else nd - 1
        out[(out == nd) & ~mosaic.invalid[None]] = nudge
        out[:, mosaic.invalid] = nd
    return out
