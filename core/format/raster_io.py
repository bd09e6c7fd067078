"""Raster input and output with rasterio: band choice, value ranges, masks, profiles."""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ..errors import BadInput, UnsupportedRaster
from ..options import bands_problem
from .header import Header
from .normalization import BandRange, check_dtype, fixed_range
from .output import atomic_output

logging.getLogger("rasterio").setLevel(logging.ERROR)


def open_raster(path: str | Path):
    """Open a raster for reading, with one-line errors for the usual mistakes."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"no such file: {path}")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a raster")
    try:
        return rasterio.open(path)
    except RasterioIOError:
        raise BadInput(f"{path}: not a raster GDAL can read") from None


def cached_raster(path: str):
    """A per-process open dataset (tile jobs on a pool or Dask worker reuse it); reopened
    when the file was replaced since, so a long-lived worker never reads an old copy."""
    try:
        st = os.stat(path)
    except OSError:
        return open_raster(path)  # the one-line error
    return _cached_raster(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_raster(path: str, *identity):
    return open_raster(path)


def default_bands(ds) -> list[int]:
    """The RGB bands by colour interpretation, else the first three (or fewer)."""
    ci = list(ds.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in ci for c in rgb):
        return [ci.index(c) + 1 for c in rgb]
    return list(range(1, min(ds.count, 3) + 1))


def select_bands(ds, bands: list[int] | None) -> list[int]:
    chosen = list(bands) if bands else default_bands(ds)
    bad = [b for b in chosen if not 1 <= b <= ds.count]
    if bad:
        raise BadInput(f"band {bad[0]} does not exist: the raster has bands 1..{ds.count}")
    problem = bands_problem(chosen)
    if problem:
        raise BadInput(problem)
    dtypes = {ds.dtypes[b - 1] for b in chosen}
    for dt in dtypes:
        check_dtype(dt)
    if len(dtypes) > 1:
        raise UnsupportedRaster(f"selected bands mix data types {sorted(dtypes)}")
    return chosen


def has_mask(ds, bands: list[int]) -> bool:
    """True when some pixels can be invalid (nodata value, mask band or alpha)."""
    if ds.nodata is not None:
        return True
    return any(MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in bands)


def read_valid(ds, bands: list[int], window: Window) -> np.ndarray:
    """(h, w) bool: pixels valid in at least one selected band."""
    masks = ds.read_masks(bands, window=window)
    return (masks > 0).any(axis=0)


def band_ranges(ds, bands: list[int], masked: bool) -> list[BandRange]:
    """Per-band value range for the codec, reading the raster block by block if needed."""
    rng = fixed_range(ds.dtypes[bands[0] - 1])
    if rng is not None:
        return [rng] * len(bands)
    lo = np.full(len(bands), np.inf)
    hi = np.full(len(bands), -np.inf)
    for _, window in ds.block_windows(1):
        data = ds.read(bands, window=window)
        if masked:
            valid = read_valid(ds, bands, window)
            if not valid.any():
                continue
            data = data[:, valid]
        else:
            data = data.reshape(len(bands), -1)
        lo = np.minimum(lo, data.min(axis=1))
        hi = np.maximum(hi, data.max(axis=1))
    return [BandRange(float(a), float(b)) if np.isfinite(a) else BandRange(0.0, 1.0) for a, b in zip(lo, hi)]


def output_profile(header: Header, width: int, height: int, transform) -> dict:
    """GeoTIFF profile of a decoded raster (tiled, lossless deflate)."""
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(header.bands),
        "dtype": header.dtype,
        "crs": header.crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 1,
        "BIGTIFF": "IF_SAFER",
    }
    if header.nodata is not None:
        profile["nodata"] = header.nodata
    if header.dtype == "uint8" and header.colorinterp == ("red", "green", "blue"):
        profile["photometric"] = "RGB"
    return profile


def describe_bands(dst, header: Header) -> None:
    """Copy band descriptions and colour interpretation of the coded bands."""
    for i, desc in enumerate(header.band_descriptions, start=1):
        if desc:
            dst.set_band_description(i, desc)
    ci = header.colorinterp
    if ci and len(ci) == dst.count:
        try:
            dst.colorinterp = [ColorInterp[c] for c in ci]
        except (ValueError, KeyError):
            pass


@contextmanager
def raster_output(dst: str | Path, profile: dict, overwrite: bool = False, cog: bool = False):
    """An open GeoTIFF to write ``dst`` with; it replaces ``dst`` only if the block ends
    without an error. ``cog``: converted to a Cloud-Optimized GeoTIFF at the end."""
    with atomic_output(dst, overwrite) as tmp:
        gtiff = tmp.with_name(tmp.name + ".tif") if cog else tmp
        try:
            with rasterio.open(gtiff, "w", **profile) as out:
                yield out
            if cog:
                rasterio.shutil.copy(gtiff, tmp, driver="COG", compress="deflate", predictor=2)
        finally:
            if cog:
                Path(gtiff).unlink(missing_ok=True)
