"""The tile grid: square tiles with overlap that cover a raster exactly.

Tiles start every ``stride = tile - overlap`` pixels; the last tile of a row or column
ends at the raster edge (it may be smaller). Neighbouring tiles share ``overlap``
pixels, where linear ramps blend them: the ramps of two neighbours sum to one, so the
blend needs no normalisation and a seam cannot show a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable
from functools import cached_property

import numpy as np
from rasterio.windows import Window

from ..errors import BadInput
from ..options import TILE_MULTIPLE, tiling_problem

PAD_MULTIPLE = TILE_MULTIPLE


def padded(n: int, multiple: int = PAD_MULTIPLE) -> int:
    return max(multiple, math.ceil(n / multiple) * multiple)


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / stride) + 1
    return [i * stride for i in range(n)]


@dataclass(frozen=True)
class Tile:
    index: int
    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.x0, self.y0, self.width, self.height)

    @property
    def y1(self) -> int:
        return self.y0 + self.height

    @property
    def x1(self) -> int:
        return self.x0 + self.width


@dataclass(frozen=True)
class TileGrid:
    width: int
    height: int
    tile: int
    overlap: int

    def __post_init__(self):
        problem = tiling_problem(self.tile, self.overlap)
        if problem:
            raise BadInput(problem)

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @cached_property
    def row_starts(self) -> list[int]:
        return _starts(self.height, self.tile, self.stride)

    @cached_property
    def col_starts(self) -> list[int]:
        return _starts(self.width, self.tile, self.stride)

    @property
    def n_rows(self) -> int:
        return len(self.row_starts)

    @property
    def n_cols(self) -> int:
        return len(self.col_starts)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def tile_at(self, row: int, col: int) -> Tile:
        y0, x0 = self.row_starts[row], self.col_starts[col]
        h = min(self.tile, self.height - y0)
        w = min(self.tile, self.width - x0)
        return Tile(row * self.n_cols + col, row, col, y0, x0, h, w)

    def __iter__(self):
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield self.tile_at(r, c)

    def row(self, r: int) -> list[Tile]:
        return [self.tile_at(r, c) for c in range(self.n_cols)]

    def tiles_in(self, window: Window) -> list[Tile]:
        """Tiles that touch a pixel window, in row-major order."""
        y0, x0 = int(window.row_off), int(window.col_off)
        y1, x1 = y0 + int(window.height), x0 + int(window.width)
        return [t for t in self if t.y0 < y1 and t.y1 > y0 and t.x0 < x1 and t.x1 > x0]

    def _ramp(self, start: int, length: int, first: bool, last: bool) -> np.ndarray:
        w = np.ones(length, dtype=np.float32)
        o = self.overlap
        if o:
            ramp = (np.arange(o, dtype=np.float32) + 0.5) / o
            if not first:
                w[:o] *= ramp
            if not last:
                w[length - o :] *= ramp[::-1]
        return w

    def blend_weights(self, t: Tile) -> np.ndarray:
        """(height, width) weights of a tile; neighbours' weights sum to one."""
        wy = self._ramp(t.y0, t.height, t.row == 0, t.row == self.n_rows - 1)
        wx = self._ramp(t.x0, t.width, t.col == 0, t.col == self.n_cols - 1)
        return wy[:, None] * wx[None, :]


@dataclass(frozen=True)
class Panel:
    """Columns ``[x0, x1)`` of a wide raster, finished on their own from columns ``[read0, read1)``
    (the panel plus the context its enhancer windows need)."""

    x0: int
    x1: int
    read0: int
    read1: int

    @property
    def read_width(self) -> int:
        return self.read1 - self.read0

    def crop(self, values: np.ndarray, invalid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The panel's own columns of a strip read over ``[read0, read1)``."""
        cols = slice(self.x0 - self.read0, self.x1 - self.read0)
        return values[:, :, cols], invalid[:, cols]


def panels(width: int, limit: int, cuts=(), window: int = 0, overlap: int = 0) -> list[Panel]:
    """Split columns ``[0, width)`` into panels at most ``limit`` wide, so that memory is bounded
    by a panel however wide the raster; cut at one of ``cuts`` (e.g. tile starts, so no tile
    is synthesised twice) where one fits. With ``window``/``overlap`` (a ``TileGrid`` of
    enhancer windows over the whole width), each panel reads enough context that the windows
    touching it are the whole grid's windows with the same blend weights: panels enhanced on
    their own and put side by side equal the whole raster enhanced at once."""
    cuts = sorted(c for c in cuts if 0 < c < width)
    edges = [0]
    while width - edges[-1] > limit:
        fits = [c for c in cuts if edges[-1] < c <= edges[-1] + limit]
        edges.append(fits[-1] if fits else edges[-1] + limit)
    edges.append(width)
    out = []
    for x0, x1 in zip(edges, edges[1:]):
        read0, read1 = x0, x1
        if window:
            stride = window - overlap
            # read0: a window start whose (missing) left ramp ends by x0; read1: the last window
            # starting before x1 is whole (its missing right ramp lies at or beyond x1)
            read0 = 0 if x0 == 0 else max(0, (x0 - overlap) // stride * stride)
            read1 = width if x1 == width else min(width, (x1 - 1) // stride * stride + window)
        out.append(Panel(x0, x1, read0, read1))
    return out


class Tally:
    """One progress count over several parts (panels) whose totals are known up front."""

    def __init__(self, totals: list[int], progress: Callable[[int, int], None] | None):
        self.total, self.done, self.progress = sum(totals), 0, progress

    def part(self) -> Callable[[int, int], None] | None:
        """The callback for the next part (its own ``(done, total)`` -> the whole count)."""
        if self.progress is None:
            return None
        base = self.done

        def report(done: int, _total: int) -> None:
            self.done = base + done
            self.progress(self.done, self.total)

        return report
