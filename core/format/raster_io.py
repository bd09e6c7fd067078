"""Raster input and output with rasterio: band choice, value ranges, masks, profiles."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..errors import BadInput, CodecError, CorruptContainer, OutputFailed, UnsupportedRaster
from ..options import GDAL_CACHE_MB, MAX_SOURCE_BANDS, bands_problem, raster_size_problem, too_many_bands_problem
from .header import Header
from .normalization import BandRange, check_dtype, fixed_range
from .output import atomic_output, held_stderr, reason, write_failed

logging.getLogger("rasterio").setLevel(logging.ERROR)
# Read by GDAL when its block cache is first used, which is after this import in our
# processes (CLI, worker, Dask workers).
os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))

GDAL_ERRORS = (RasterioError, CPLE_BaseError, OSError)  # what rasterio raises when GDAL fails


def is_gdal_name(path: str | Path) -> bool:
    """A GDAL dataset name rather than a plain file path: a virtual file system path
    (``/vsizip/a.zip/b.tif``, ``/vsigzip/b.tif.gz``) or a subdataset (``GPKG:a.gpkg:table``,
    ``NETCDF:"a.nc":var``)."""
    text = str(path)
    return text.startswith("/vsi") or bool(_SUBDATASET.match(text))


_SUBDATASET = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")  # DRIVER: (two letters at least: not a Windows drive)


def local_files(path: str | Path) -> list[Path]:
    """The files on this machine a dataset name reads from: the file itself, the archive of
    a /vsizip/ or /vsigzip/ path, the file of a subdataset (empty: none found)."""
    text = str(path)
    if not is_gdal_name(text):
        return [Path(text)] if os.path.isfile(text) else []
    if text.startswith("/vsi"):
        inner = Path(text[text.index("/", 1) + 1:])  # after /vsizip/
        for candidate in (inner, *inner.parents):
            if candidate.is_file():
                return [candidate]
        return []
    parts = text.replace('"', "").split(":")
    found = [":".join(parts[i:j]) for i in range(len(parts)) for j in range(len(parts), i, -1)
             if os.path.isfile(":".join(parts[i:j]))]
    return [Path(max(found, key=len))] if found else []


def dataset_name(path: str | Path) -> str:
    """How a message names a dataset: its file name, or the last part of a GDAL name."""
    text = str(path)
    return Path(text.replace('"', "").split(":")[-1] if _SUBDATASET.match(text) else text).name or text


def output_beside(src: str | Path, suffix: str) -> str:
    """INPUT with another suffix; for a GDAL name (/vsizip/..., GPKG:file:table), beside its file."""
    if not is_gdal_name(src):
        return str(Path(src).with_suffix(suffix))
    files = local_files(src)
    folder = files[0].parent if files else Path.cwd()
    return str(folder / Path(dataset_name(src)).with_suffix(suffix))


def input_file_bytes(ds) -> tuple[int, str]:
    """(bytes, label) of the files a dataset reads: 'input file', or 'input files' for a VRT
    and its sources, or 'input archive' for /vsizip/ and /vsigzip/."""
    files: dict[Path, int] = {}
    for name in ds.files or [ds.name]:
        for f in local_files(name):
            files[f.resolve()] = f.stat().st_size
    label = "input archive" if str(ds.name).startswith(("/vsizip", "/vsigzip", "/vsitar")) else (
        "input files" if len(files) > 1 else "input file")
    return sum(files.values()), label


def open_raster(path: str | Path):
    """Open a raster for reading, with one-line errors for the usual mistakes. ``path`` is a
    file or any GDAL dataset name (/vsizip/, /vsigzip/, GPKG:file:table, ...)."""
    gdal_name = is_gdal_name(path)
    path = str(path) if gdal_name else Path(path)
    if not gdal_name and not path.exists():
        raise BadInput(f"no such file: {path}")
    if not gdal_name and path.is_dir():
        raise BadInput(f"{path} is a folder, not a raster")
    if gdal_name and not local_files(path) and not str(path).startswith(("/vsimem", "/vsicurl", "/vsis3")):
        raise BadInput(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except GDAL_ERRORS:
        raise BadInput(f"{path}: not a raster GDAL can read") from None
    if ds.count == 0 and ds.subdatasets:
        names = ds.subdatasets
        ds.close()
        raise BadInput(f"{path} holds {len(names)} rasters: name one, e.g. {names[0]}")
    problem = raster_size_problem(ds.width, ds.height) or (
        f"{ds.count} bands (at most {MAX_SOURCE_BANDS})" if not 1 <= ds.count <= MAX_SOURCE_BANDS else None)
    if problem:
        ds.close()
        raise UnsupportedRaster(f"{path}: {problem}")
    return ds


@contextmanager
def reading(ds):
    """Turn a failed read of ``ds`` (a truncated or damaged file) into one ``BadInput`` line."""
    try:
        yield
    except CodecError:
        raise
    except GDAL_ERRORS as exc:
        raise BadInput(f"{ds.name}: cannot read its pixels, the file is truncated or damaged ({reason(exc)})") from None


def read_bands(ds, bands: list[int], window: Window) -> np.ndarray:
    """(bands, h, w) values of a window; a read failure is a ``BadInput``."""
    with reading(ds):
        return ds.read(bands, window=window)


def cached_raster(path: str):
    """An open dataset per process and thread (tile jobs on a pool, a Dask worker or job
    threads reuse it; a GDAL dataset must not be read from two threads at once); reopened
    when the file was replaced since, so a long-lived worker never reads an old copy."""
    try:
        st = os.stat(path) if not is_gdal_name(path) else local_files(path)[0].stat()
    except (OSError, IndexError):
        return open_raster(path)  # the one-line error
    return _cached_raster(path, threading.get_ident(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_raster(path: str, thread: int, *identity):
    return open_raster(path)


def default_bands(ds) -> list[int]:
    """The bands to show or compare as a picture: the RGB bands by colour interpretation,
    else the first three (or fewer). Compression codes every band (``coded_bands``)."""
    ci = list(ds.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in ci for c in rgb):
        return [ci.index(c) + 1 for c in rgb]
    return list(range(1, min(ds.count, 3) + 1))


def coded_bands(ds) -> list[int]:
    """What is coded when the user chooses nothing: every band in order, except alpha
    bands (they are the mask, which the container keeps); above MAX_DEFAULT_BANDS, a
    one-line error asking for a choice."""
    problem = too_many_bands_problem(dataset_name(ds.name), ds.count)
    if problem:
        raise BadInput(problem)
    chosen = [b for b in range(1, ds.count + 1) if ds.colorinterp[b - 1] != ColorInterp.alpha]
    return chosen or [1]


def select_bands(ds, bands: list[int] | None) -> list[int]:
    chosen = list(bands) if bands else coded_bands(ds)
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
    check_not_palette(ds, chosen)
    return chosen


def check_not_palette(ds, bands: list[int]) -> None:
    """Palette bands hold colour-table indices: a lossy codec would turn them into other colours."""
    palette = [b for b in bands if ds.colorinterp[b - 1] == ColorInterp.palette]
    if palette:
        raise UnsupportedRaster(f"{ds.name}: band {palette[0]} is a palette (colour table) band, which lossy coding would "
                                "scramble: expand it to RGB first (gdal_translate -expand rgb)")


def has_mask(ds, bands: list[int]) -> bool:
    """True when some pixels can be invalid (nodata value, mask band or alpha)."""
    if ds.nodata is not None:
        return True
    return any(MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in bands)


def read_valid(ds, bands: list[int], window: Window) -> np.ndarray:
    """(h, w) bool: pixels valid in at least one selected band."""
    with reading(ds):
        masks = ds.read_masks(bands, window=window)
    return (masks > 0).any(axis=0)


READ_PIXELS = 1 << 22  # pixels per band read at a time when scanning a whole raster


def scan_windows(ds, max_pixels: int = READ_PIXELS):
    """Full-width strips of at most ``max_pixels`` per band, aligned to the file's blocks when
    they are small: a file whose one block is the whole raster is still read in strips."""
    block_rows = ds.block_shapes[0][0] if ds.block_shapes else 1
    rows = max(1, max_pixels // ds.width)
    if rows >= block_rows:
        rows -= rows % block_rows
    for y in range(0, ds.height, rows):
        yield Window(0, y, ds.width, min(rows, ds.height - y))


def band_ranges(ds, bands: list[int], masked: bool) -> list[BandRange]:
    """Per-band value range for the codec, reading the raster strip by strip if needed."""
    rng = fixed_range(ds.dtypes[bands[0] - 1])
    if rng is not None:
        return [rng] * len(bands)
    lo = np.full(len(bands), np.inf)
    hi = np.full(len(bands), -np.inf)
    for window in scan_windows(ds):
        data = read_bands(ds, bands, window)
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


# How every GeoTIFF the project writes is laid out: 256 px tiles, fast lossless deflate,
# files over 4 GB as BigTIFF; the predictor follows the data type (2 integers, 3 floats).
GEOTIFF_CREATION = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
                    "zlevel": 1, "BIGTIFF": "IF_SAFER"}


def geotiff_profile(width: int, height: int, count: int, dtype: str, crs, transform, nodata=None,
                    rgb: bool = False, **extra) -> dict:
    """The one GeoTIFF creation profile (``GEOTIFF_CREATION``) for a raster of this shape;
    ``rgb``: a three-band uint8 raster that viewers should show as RGB; ``extra``: other
    creation keys (e.g. a source profile's) that the layout does not set."""
    profile = dict(extra, width=width, height=height, count=count, dtype=dtype, crs=crs, transform=transform,
                   predictor=3 if str(dtype).startswith("float") else 2, **GEOTIFF_CREATION)
    if nodata is not None:
        profile["nodata"] = nodata
    if rgb and count == 3 and str(dtype) == "uint8":
        profile["photometric"] = "RGB"
    return profile


def output_profile(header: Header, width: int, height: int, transform) -> dict:
    """GeoTIFF profile of a decoded raster."""
    return geotiff_profile(width, height, len(header.bands), header.dtype, header_crs(header), transform,
                           header.nodata, rgb=header.colorinterp == ("red", "green", "blue"))


def header_crs(header: Header) -> CRS | None:
    """The container's CRS (WKT, checked when the header was read) as rasterio's CRS."""
    if header.crs is None:
        return None
    try:
        with rasterio.Env():
            return CRS.from_wkt(header.crs)
    except CRSError:
        raise CorruptContainer(f"container CRS is not a WKT this software can read: {header.crs[:40]!r}") from None


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


def check_written(path: str | Path, dst: str | Path) -> None:
    """Read a GeoTIFF we just wrote back, block by block: GDAL does not report every failed
    write (a full disk while it flushes its cache on close only prints a libtiff message), and
    leaves blocks missing or cut short. Reading back costs little next to decoding."""
    try:
        with rasterio.Env(), rasterio.open(path) as ds:
            per_band = ds.interleaving is not None and ds.interleaving.name == "band"
            masked = MaskFlags.per_dataset in ds.mask_flag_enums[0]
            for (row, col), window in ds.block_windows(1):
                for b in range(1, ds.count + 1) if per_band else (1,):
                    if ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=b) is None:
                        raise OutputFailed(f"could not write {dst}: GDAL left block {row}, {col} unwritten "
                                           "(is the disk full?)")
                ds.read(window=window)
                if masked:
                    ds.read_masks(1, window=window)
    except GDAL_ERRORS:
        raise OutputFailed(f"could not write {dst}: the file GDAL wrote does not read back (is the disk full?)") from None



class OffGrid(ValueError):
    """A raster that does not lie on a given pixel grid; ``what``: "pixel size" (another
    pixel size or orientation) or "alignment" (a fraction of a pixel off)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def grid_offset(grid: rasterio.Affine, transform: rasterio.Affine) -> tuple[int, int]:
    """Where the pixel (0, 0) of a raster with ``transform`` lies on the pixel grid of
    ``grid``, as whole (col, row); ``OffGrid`` when it is not on that grid."""
    g, t = grid, transform
    if not np.allclose([t.a, t.b, t.d, t.e], [g.a, g.b, g.d, g.e], rtol=1e-6, atol=1e-12):
        raise OffGrid("pixel size")
    col, row = ~g * (t.c, t.f)
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        raise OffGrid("alignment")
    return int(round(col)), int(round(row))

@contextmanager
def raster_output(dst: str | Path, profile: dict, overwrite: bool = False, cog: bool = False):
    """An open GeoTIFF to write ``dst`` with; it replaces ``dst`` only if the block ends
    without an error and the file reads back. ``cog``: converted to a Cloud-Optimized
    GeoTIFF at the end. A write that fails (disk full...) is an ``OutputFailed``."""
    with atomic_output(dst, overwrite) as tmp:
        gtiff = tmp.with_name(tmp.name + ".tif") if cog else tmp
        try:
            out = rasterio.open(gtiff, "w", **profile)
            try:
                yield out
            except BaseException:
                out.__exit__(*sys.exc_info())
                raise
            # Closing flushes GDAL's block cache, where a full disk usually shows: libtiff's
            # own lines about it are dropped if the file then fails its checks.
            with held_stderr():
                out.__exit__(None, None, None)
                if cog:  # a cut-short GeoTIFF fails here, in our words, not in the COG driver's
                    check_written(gtiff, dst)
                    rasterio.shutil.copy(gtiff, tmp, driver="COG", compress=GEOTIFF_CREATION["compress"],
                                          predictor=profile.get("predictor", 2))
                check_written(tmp, dst)
        except CodecError:
            raise
        except GDAL_ERRORS as exc:  # inputs raise CodecErrors: this is GDAL failing to write
            raise write_failed(dst, exc) from None
        finally:
            if cog:
                Path(gtiff).unlink(missing_ok=True)
