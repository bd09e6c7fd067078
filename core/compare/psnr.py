"""PSNR, once: the dB of a mean squared error at a peak, and the peak of a raster's values.

Every PSNR of the project (the raster round trip, the tile map, the evaluation's metrics,
the training logs) is ``psnr_from_mse``, so identical images get one answer everywhere:
``PSNR_IDENTICAL`` dB (finite, so it can be averaged, written to JSON and to a
GeoPackage); any PSNR above it is capped there too. Standard library only.
"""

from __future__ import annotations

import math

PSNR_IDENTICAL = 100.0  # dB for identical images (an MSE of 0), and the cap of every PSNR


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """``10 log10(peak**2 / mse)`` in dB, at most ``PSNR_IDENTICAL`` (that value for mse 0)."""
    mse = float(mse)
    if not mse >= 0:
        raise ValueError(f"a mean squared error is a number >= 0, not {mse}")
    if mse == 0:
        return PSNR_IDENTICAL
    return min(PSNR_IDENTICAL, 10.0 * math.log10(peak * peak / mse))


def raster_peak(dtype: str, lo: float, hi: float) -> float:
    """The peak a raster's PSNR is measured at: 255 for uint8; otherwise the value range
    ``hi - lo`` of the source (at least 1), so a 0..2047 sensor is judged on its own scale."""
    return 255.0 if str(dtype) == "uint8" else max(float(hi) - float(lo), 1.0)
