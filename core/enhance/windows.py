"""The enhancer over overlapping windows: one tile, an in-memory image, a stream of strips.

The enhancer runs over overlapping square windows (a ``TileGrid``: no bits are involved,
so overlap is free) blended with the grid's linear ramps in a ``Mosaic``, so no seam can
show. ``StripEnhancer`` takes a raster as horizontal strips of any height, top to bottom
(the stitcher's output when decoding, or strips read from a GeoTIFF), and yields
enhanced strips as soon as no later window can touch them: memory is bounded by one row
of windows plus one incoming strip, whatever the raster size.

Bands are enhanced in groups of three (a last group of one or two repeats its last band,
as the codec does); uint16 bands are scaled by their value range.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

import numpy as np

from ..format.normalization import BandRange
from ..format.payload import fill_invalid
from ..codec.stitching import Mosaic
from ..format.tiling import TileGrid
from ..options import DEFAULT_ENHANCE_OVERLAP, DEFAULT_ENHANCE_WINDOW, band_groups

Strip = tuple[int, np.ndarray, np.ndarray]  # (first row, values (bands, h, w) in the raster dtype, invalid (h, w))


def enhance_tile(net, unit: np.ndarray, fidelity: float) -> np.ndarray:
    """(bands, h, w) float in [0, 1] -> enhanced, same shape (bands in groups of three).
    ``net``: what ``core.enhance.runtime.enhancer_runtime`` gave, or any torch module with
    ``enhance(x, fidelity, bf16)``."""
    return enhance_tiles(net, [unit], fidelity)[0]


def enhance_tiles(net, units: list[np.ndarray], fidelity: float) -> list[np.ndarray]:
    """``enhance_tile`` of each unit; their windows go to the runtime together, so one that
    runs several at once (``OpenVinoEnhancer.enhance_all``) can."""
    groups = [(k, group) for k, unit in enumerate(units) for group in band_groups(unit.shape[0])]
    enhanced = windows_runner(net, fidelity)([np.ascontiguousarray(units[k][group])[None] for k, group in groups])
    outs = [np.empty_like(unit) for unit in units]
    for (k, group), y in zip(groups, enhanced):
        for b in sorted(set(group)):
            copies = [j for j, g in enumerate(group) if g == b]
            outs[k][b] = y[copies].mean(axis=0)
    return outs


def windows_runner(net, fidelity: float):
    """[(1, 3, h, w) float32, ...] -> [enhanced (3, h, w), ...], on the enhancer's runtime."""
    from .runtime import OpenVinoEnhancer

    if isinstance(net, OpenVinoEnhancer):
        return lambda xs: [y[0] for y in net.enhance_all(xs, fidelity)]
    run = window_runner(net, fidelity)
    return lambda xs: [run(x) for x in xs]


def window_runner(net, fidelity: float):
    """(1, 3, h, w) float32 -> enhanced (3, h, w), on the enhancer's runtime."""
    from .runtime import OpenVinoEnhancer

    if isinstance(net, OpenVinoEnhancer):
        return lambda x: net.enhance(x, fidelity)[0]
    import torch

    from ..models.runtime import cpu_bf16

    dev = next(net.parameters()).device
    bf16 = dev.type == "cpu" and cpu_bf16()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net.enhance(torch.from_numpy(x).to(dev), fidelity, bf16=bf16)[0].float().cpu().numpy()

    return run


class StripEnhancer:
    """Enhance a raster of ``width`` x ``height`` arriving as strips; see the module docstring.

    Pixels flagged invalid, and band values equal to ``nodata``, keep their incoming
    values; no other value comes out as ``nodata``.
    """

    def __init__(self, net, fidelity: float, width: int, height: int, ranges: list[BandRange], dtype: str,
                 nodata: float | None = None, window: int = DEFAULT_ENHANCE_WINDOW,
                 overlap: int = DEFAULT_ENHANCE_OVERLAP, progress: Callable[[int, int], None] | None = None):
        self.net, self.fidelity = net, fidelity
        self.ranges, self.dtype, self.nodata = ranges, dtype, nodata
        self.grid = TileGrid(width, height, window, overlap)
        self.progress = progress
        self.seconds = 0.0  # time spent enhancing (not waiting for strips)
        bands = len(ranges)
        self._buf_y0 = 0
        self._raw = np.zeros((bands, 0, width), dtype)
        self._invalid = np.zeros((0, width), bool)
        self._mosaic = Mosaic(0, 0, 0, width, bands)
        self._next_row = 0
        self._done = 0
        # Every window is enhanced at this full size: a window cut by the raster's right or
        # bottom edge is grown left and up over pixels its neighbours also read. So the edge
        # sees real context rather than padding, and the runtime compiles one shape.
        self._full = (min(window, height), min(window, width))

    @property
    def windows(self) -> int:
        return len(self.grid)

    def run(self, strips: Iterable[Strip]) -> Iterator[Strip]:
        """Enhanced strips, top to bottom, for incoming strips that cover the raster in order."""
        for row, values, invalid in strips:
            if row != self._buf_y0 + self._raw.shape[1]:
                raise ValueError(f"strip at row {row} does not follow row {self._buf_y0 + self._raw.shape[1]}")
            self._raw = np.concatenate([self._raw, values], axis=1)
            self._invalid = np.concatenate([self._invalid, invalid], axis=0)
            yield from self._ready()
        if self._next_row < self.grid.n_rows:
            raise ValueError("the strips ended before the raster's last row")
        if self._mosaic.height:
            yield self._emit(self._mosaic)

    def _ready(self) -> Iterator[Strip]:
        end = self._buf_y0 + self._raw.shape[1]
        while self._next_row < self.grid.n_rows and self.grid.row(self._next_row)[0].y1 <= end:
            t0 = time.perf_counter()
            row = self.grid.row(self._next_row)
            y1 = row[0].y1
            self._mosaic.extend_to(y1 - self._mosaic.y0)
            y0 = y1 - self._full[0]  # edge windows read context above and left: see _full
            rows = slice(y0 - self._buf_y0, y1 - self._buf_y0)
            unit = np.stack([r.to_unit(v) for r, v in zip(self.ranges, self._raw[:, rows])])
            invalid = self._invalid[rows]
            crops, masks = [], []
            for t in row:
                cols = slice(t.x1 - self._full[1], t.x1)
                masks.append(invalid[:, cols])
                crop = np.ascontiguousarray(unit[:, :, cols])
                crops.append(fill_invalid(crop, ~masks[-1]) if masks[-1].any() else crop)
            for t, enhanced, crop_invalid in zip(row, enhance_tiles(self.net, crops, self.fidelity), masks):
                self._mosaic.add(self.grid, t, enhanced[:, -t.height :, -t.width :], crop_invalid[-t.height :, -t.width :])
                self._done += 1
                if self.progress:
                    self.progress(self._done, len(self.grid))
            self._next_row += 1
            self.seconds += time.perf_counter() - t0
            if self._next_row < self.grid.n_rows:  # rows above the next window row are final
                final = self.grid.row(self._next_row)[0].y0 - self._mosaic.y0
                if final > 0:
                    yield self._emit(self._mosaic.take_rows(final))

    def _emit(self, strip: Mosaic) -> Strip:
        """A finished mosaic strip in the raster dtype; drops input rows no longer needed."""
        t0 = time.perf_counter()
        rows = slice(strip.y0 - self._buf_y0, strip.y0 - self._buf_y0 + strip.height)
        raw, invalid = self._raw[:, rows], self._invalid[rows]
        values = np.stack([r.from_unit(v, self.dtype) for r, v in zip(self.ranges, strip.values)])
        if self.nodata is not None:  # nodata stays nodata, per band; nothing else becomes it
            nd = np.asarray(self.nodata).astype(self.dtype)
            was_nodata = raw == nd
            values[(values == nd) & ~was_nodata] = nd + 1 if nd < np.iinfo(self.dtype).max else nd - 1
            values[was_nodata] = nd
        if invalid.any():
            values[:, invalid] = raw[:, invalid]
        # keep from the carry's first row, or from where the last window row's context starts
        first = min(self._mosaic.y0, self.grid.height - self._full[0])
        self._raw, self._invalid = self._raw[:, first - self._buf_y0 :], self._invalid[first - self._buf_y0 :]
        self._buf_y0 = first
        self.seconds += time.perf_counter() - t0
        return strip.y0, values, invalid


# enhance_array's runtimes, kept for the process (an evaluation calls it once per image, and
# an OpenVINO enhancer compiles its network when built): (loaded, window, runtime, precision)
_ARRAY_RUNTIMES: dict[tuple, tuple] = {}
_MAX_ARRAY_RUNTIMES = 2


def _array_runtime(loaded, window: int):
    from ..models.runtime import requested_precision, requested_runtime
    from .runtime import enhancer_runtime

    key = (id(loaded), window, requested_runtime(), requested_precision())
    if key not in _ARRAY_RUNTIMES:
        while len(_ARRAY_RUNTIMES) >= _MAX_ARRAY_RUNTIMES:
            _ARRAY_RUNTIMES.pop(next(iter(_ARRAY_RUNTIMES)))
        _ARRAY_RUNTIMES[key] = (loaded, enhancer_runtime(loaded, window))  # loaded kept: its id stays its own
    return _ARRAY_RUNTIMES[key][1]


def enhance_array(img: np.ndarray, fidelity: float | None = None, enhancer: str | None = None,
                  window: int = DEFAULT_ENHANCE_WINDOW, overlap: int = DEFAULT_ENHANCE_OVERLAP) -> np.ndarray:
    """Enhance an in-memory uint8 (h, w, bands) image with the same windows and blending as rasters."""
    from ..models import get_enhancer

    loaded = get_enhancer(enhancer)
    w = loaded.default_fidelity if fidelity is None else fidelity
    h, wd, bands = img.shape
    enh = StripEnhancer(_array_runtime(loaded, window), w, wd, h, [BandRange(0.0, 255.0)] * bands, "uint8", None, window, overlap)
    strips = enh.run([(0, np.ascontiguousarray(img.transpose(2, 0, 1)), np.zeros((h, wd), bool))])
    out = np.concatenate([values for _, values, _ in strips], axis=1)
    return out.transpose(1, 2, 0)
