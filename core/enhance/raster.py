"""Enhance any GeoTIFF (decoded by this codec or by JPEG, WebP...: the "retraining-free" use).

The source is read in strips (of vertical panels, when it is wider than ``PANEL_WIDTH``)
and fed to a ``StripEnhancer``; the output keeps the
source's size, CRS, transform, dtype, nodata, band descriptions and colour
interpretation, and pixels that are nodata / masked in the source are copied unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from rasterio.windows import Window

from ..errors import BadInput, UnsupportedRaster
from ..format.normalization import BandRange, check_dtype
from ..format.raster_io import (
    band_ranges,
    check_not_palette,
    geotiff_profile,
    has_mask,
    open_raster,
    raster_output,
    read_bands,
    read_valid,
)
from ..format.tiling import Tally, TileGrid, panels
from ..options import DTYPE_RANGES, PANEL_WIDTH, EnhanceParams, band_count_problem
from .runtime import enhancer_runtime
from .windows import Strip, StripEnhancer

STRIP_ROWS = 256  # rows read from the source at a time


def _output_profile(ds) -> dict:
    """The source's georeferencing in the project's GeoTIFF layout (its own compression,
    photometric and block layout are not carried over)."""
    return geotiff_profile(ds.width, ds.height, ds.count, ds.dtypes[0], ds.crs, ds.transform, ds.nodata, rgb=True)


def _source_strips(ds, masked: bool, x0: int, x1: int) -> Iterator[Strip]:
    """Strips of columns ``[x0, x1)``, top to bottom."""
    bands = list(range(1, ds.count + 1))
    for y0 in range(0, ds.height, STRIP_ROWS):
        win = Window(x0, y0, x1 - x0, min(STRIP_ROWS, ds.height - y0))
        values = read_bands(ds, bands, win)
        invalid = ~read_valid(ds, bands, win) if masked else np.zeros(values.shape[1:], bool)
        yield y0, values, invalid


def enhance_raster(src: str | Path, dst: str | Path, params: EnhanceParams | None = None, *,
                   ranges: list[BandRange] | None = None, overwrite: bool = False, cog: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Enhance every band of ``src`` into a new GeoTIFF ``dst``; returns timing and settings."""
    from ..models import get_enhancer

    params = (params or EnhanceParams()).validate()
    t0 = time.perf_counter()
    loaded = get_enhancer(params.enhancer, params.device)
    fidelity = loaded.default_fidelity if params.fidelity is None else float(params.fidelity)
    with open_raster(src) as ds:
        for dt in set(ds.dtypes):
            check_dtype(dt)
        if len(set(ds.dtypes)) > 1:
            raise BadInput(f"{src}: bands of different data types ({', '.join(sorted(set(ds.dtypes)))})")
        bands = list(range(1, ds.count + 1))
        problem = band_count_problem(ds.count)
        if problem:
            raise UnsupportedRaster(f"{src}: {problem}")
        check_not_palette(ds, bands)
        lo, hi = DTYPE_RANGES[ds.dtypes[0]]
        if ds.nodata is not None and not lo <= ds.nodata <= hi:
            raise UnsupportedRaster(f"{src}: nodata {ds.nodata:g} is not a {ds.dtypes[0]} value")
        masked = has_mask(ds, bands)
        ranges = ranges or band_ranges(ds, bands, masked)
        if len(ranges) != ds.count:
            raise BadInput(f"{len(ranges)} band ranges given for {ds.count} bands")
        parts = panels(ds.width, PANEL_WIDTH, (), params.window, params.overlap)
        tally = Tally([len(TileGrid(p.read_width, ds.height, params.window, params.overlap)) for p in parts],
                      progress)
        internal_mask = masked and ds.nodata is None
        with raster_output(dst, _output_profile(ds), overwrite, cog) as out:
            out.colorinterp = ds.colorinterp
            for i, desc in enumerate(ds.descriptions, start=1):
                if desc:
                    out.set_band_description(i, desc)
            runner = enhancer_runtime(loaded, params.window)
            for panel in parts:
                enh = StripEnhancer(runner, fidelity, panel.read_width, ds.height, ranges,
                                    ds.dtypes[0], ds.nodata, params.window, params.overlap, tally.part())
                for row, values, invalid in enh.run(_source_strips(ds, masked, panel.read0, panel.read1)):
                    values, invalid = panel.crop(values, invalid)
                    win = Window(panel.x0, row, values.shape[2], values.shape[1])
                    out.write(values, window=win)
                    if internal_mask:
                        out.write_mask((~invalid).astype(np.uint8) * 255, window=win)
        pixels = ds.width * ds.height
    seconds = time.perf_counter() - t0
    return {"output": str(dst), "fidelity": fidelity, "windows": tally.total, "window": params.window,
            "overlap": params.overlap, "seconds": seconds, "megapixels_per_second": pixels / 1e6 / seconds,
            "enhancer_sha256": loaded.sha256}
