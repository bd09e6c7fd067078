"""Raster-level quality: PSNR of a decoded GeoTIFF against its source, read by windows."""

from __future__ import annotations

import math

import numpy as np

from .psnr import psnr_from_mse, raster_peak
from ..format.raster_io import has_mask, open_raster, read_valid, select_bands


def raster_psnr(source: str, decoded: str, bands: list[int] | None = None) -> float:
    """PSNR over valid pixels of the coded bands (``core.compare.psnr``: the peak is
    ``raster_peak`` of the source's values over those bands; identical rasters give
    ``PSNR_IDENTICAL``). NaN when no pixel is valid."""
    with open_raster(source) as src, open_raster(decoded) as dec:
        chosen = select_bands(src, bands)
        masked = has_mask(src, chosen)
        sq_err, count = 0.0, 0
        lo, hi = math.inf, -math.inf
        for _, window in dec.block_windows(1):
            a = src.read(chosen, window=window).astype(np.float64)
            b = dec.read(window=window).astype(np.float64)
            if masked:
                valid = read_valid(src, chosen, window)
                a, b = a[:, valid], b[:, valid]
            if a.size == 0:
                continue
            sq_err += float(((a - b) ** 2).sum())
            count += a.size
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        dtype = src.dtypes[chosen[0] - 1]
    if count == 0:
        return float("nan")
    return psnr_from_mse(sq_err / count, raster_peak(dtype, lo, hi))
