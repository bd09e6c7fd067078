"""Raster-level quality: PSNR of a decoded GeoTIFF against its source, read by windows."""

from __future__ import annotations

import math

import numpy as np

from .raster_io import has_mask, open_raster, read_valid, select_bands


def raster_psnr(source: str, decoded: str, bands: list[int] | None = None) -> float:
    """PSNR over valid pixels of the coded bands.

    The peak is 255 for uint8; for uint16 it is the source's value range (max - min) over
    those bands, so a 0..2047 sensor is judged on its own scale, not on 0..65535.
    """
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
    peak = 255.0 if dtype == "uint8" else max(hi - lo, 1.0)
    mse = sq_err / count
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)
