"""Map raster values to the codec's [0, 1] range and back, per band.

uint8 bands use the fixed range 0..255. uint16 bands use their own min..max (over the
valid pixels of the whole raster, or of one image in training), so a sensor that uses
0..2047 is not squeezed into the bottom 3 % of the codec's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedRaster
from ..options import SUPPORTED_DTYPES


@dataclass(frozen=True)
class BandRange:
    lo: float
    hi: float

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        span = max(self.hi - self.lo, 1.0)
        return (values.astype(np.float32) - np.float32(self.lo)) / np.float32(span)

    def from_unit(self, unit: np.ndarray, dtype: str) -> np.ndarray:
        span = max(self.hi - self.lo, 1.0)
        values = np.rint(unit.astype(np.float32) * np.float32(span) + np.float32(self.lo))
        return np.clip(values, self.lo, self.hi).astype(dtype)


def check_dtype(dtype: str) -> None:
    if str(dtype) not in SUPPORTED_DTYPES:
        raise UnsupportedRaster(f"unsupported data type {dtype}: Code-RSIC codes uint8 and uint16 rasters")


def fixed_range(dtype: str) -> BandRange | None:
    """The range every band of this dtype uses, or None if it must be measured."""
    check_dtype(dtype)
    return BandRange(0.0, 255.0) if str(dtype) == "uint8" else None


def measured_range(values: np.ndarray, valid: np.ndarray | None = None) -> BandRange:
    """Min..max of the valid values of one band."""
    v = values if valid is None else values[valid]
    if v.size == 0:
        return BandRange(0.0, 1.0)
    return BandRange(float(v.min()), float(v.max()))
