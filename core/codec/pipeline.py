"""Compress a GeoTIFF to a ``.crsic`` container and decode it back, tile by tile.

Data flows one way: raster -> tiles -> ``encode_tile`` -> container -> ``decode_tile``
-> blended mosaic strips -> GeoTIFF. Tile work is done by two pure job functions
(``encode_job``, ``decode_job``) that open their inputs themselves, so the same code
runs serially here or on a process pool / Dask cluster (see ``core.parallel``).
Memory stays bounded by one row of tiles whatever the raster size.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from . import __version__
from .container import ContainerReader, ContainerWriter, atomic_output, framing_bytes
from .errors import CodecError
from .models import DEFAULT_MODEL, MIN_LEVEL, quality_to_level
from .normalization import BandRange
from .raster_io import (
    band_ranges,
    cached_raster,
    describe_bands,
    has_mask,
    open_raster,
    output_profile,
    read_valid,
    select_bands,
)
from .stitching import Mosaic
from .tile_coder import DesyncError, get_coder
from .tiling import DEFAULT_TILE, TileGrid, padded

Progress = Callable[[int, int], None]


@dataclass
class CompressOptions:
    model: str = DEFAULT_MODEL
    quality: float = 3.0
    target_bpp: float | None = None
    bands: list[int] | None = None
    tile: int = DEFAULT_TILE
    overlap: int = 32
    device: str = "cpu"
    overwrite: bool = False


@dataclass(frozen=True)
class EncodeJob:
    """Everything one tile's encoding needs (picklable, small)."""

    src: str
    tile_index: int
    window: tuple[int, int, int, int]  # col_off, row_off, width, height
    bands: tuple[int, ...]
    ranges: tuple[tuple[float, float], ...]
    masked: bool
    level: float
    model: str
    device: str


@dataclass(frozen=True)
class DecodeJob:
    container: str
    tile_index: int
    height: int
    width: int
    level: float
    model: str
    device: str


# ---------------------------------------------------------------- tile payloads

def pack_payload(invalid: np.ndarray | None, stream: bytes) -> bytes:
    """Tile payload = u32 mask length + zlib(packbits(invalid)) (or nothing) + ELIC stream."""
    mask = b"" if invalid is None or not invalid.any() else zlib.compress(np.packbits(invalid).tobytes(), 9)
    return struct.pack("<I", len(mask)) + mask + stream


def unpack_payload(data: bytes, height: int, width: int) -> tuple[np.ndarray | None, bytes]:
    (n,) = struct.unpack_from("<I", data, 0)
    if 4 + n > len(data):
        raise CodecError("tile payload is truncated")
    invalid = None
    if n:
        bits = np.frombuffer(zlib.decompress(data[4 : 4 + n]), dtype=np.uint8)
        invalid = np.unpackbits(bits, count=height * width).astype(bool).reshape(height, width)
    return invalid, data[4 + n :]


def prepare_tile(data: np.ndarray, valid: np.ndarray | None, ranges) -> np.ndarray:
    """Raster values -> padded float tile in [0, 1]; invalid pixels filled with the mean."""
    unit = np.stack([BandRange(*r).to_unit(b) for r, b in zip(ranges, data)])
    if valid is not None and not valid.all():
        fill = unit[:, valid].mean(axis=1) if valid.any() else np.full(unit.shape[0], 0.5, np.float32)
        unit[:, ~valid] = fill[:, None]
    h, w = unit.shape[1:]
    return np.pad(unit, ((0, 0), (0, padded(h) - h), (0, padded(w) - w)), mode="edge")


def encode_job(job: EncodeJob) -> tuple[int, bytes, int]:
    """Read, normalise and encode one tile -> (tile index, payload, latent-symbols CRC)."""
    ds = cached_raster(job.src)
    window = Window(*job.window)
    data = ds.read(list(job.bands), window=window)
    valid = read_valid(ds, list(job.bands), window) if job.masked else None
    stream, crc = get_coder(job.model, job.device).encode_tile(prepare_tile(data, valid, job.ranges), job.level)
    return job.tile_index, pack_payload(None if valid is None else ~valid, stream), crc


_READERS: dict[str, ContainerReader] = {}
_MAX_READERS = 8


def _reader(path: str) -> ContainerReader:
    """This process's open container at ``path``; reopened when the file was replaced since
    (a long-lived Dask worker must not read an old copy), at most ``_MAX_READERS`` kept open."""
    reader = _READERS.get(path)
    if reader is not None and not _same_file(reader, path):
        _READERS.pop(path, None)
        reader.close()
        reader = None
    if reader is None:
        while len(_READERS) >= _MAX_READERS:
            _READERS.pop(next(iter(_READERS))).close()
        reader = _READERS[path] = ContainerReader(path)
    return reader


def _same_file(reader: ContainerReader, path: str) -> bool:
    try:
        a, b = os.fstat(reader.f.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def decode_job(job: DecodeJob) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Decode one tile -> (tile index, float (bands, h, w) in [0, 1], invalid mask or None)."""
    reader = _reader(job.container)
    entry = reader.entries[job.tile_index]
    invalid, stream = unpack_payload(reader.read_tile(job.tile_index), job.height, job.width)
    coder = get_coder(job.model, job.device)
    try:
        full = coder.decode_tile(stream, job.level, entry.symbols_crc)
    except DesyncError:
        raise DesyncError(str(job.tile_index)) from None
    return job.tile_index, full[:, : job.height, : job.width], invalid


def serial_map(fn, jobs: Iterable) -> Iterator:
    """The in-process executor: results in order, one job at a time."""
    for job in jobs:
        yield fn(job)


# ---------------------------------------------------------------- compress

def _quality_level(ds, grid, opts: CompressOptions, bands, ranges, masked, levels, framing: int) -> float:
    if opts.target_bpp is None:
        return quality_to_level(opts.quality, levels)
    if opts.target_bpp <= 0:
        raise CodecError(f"target bpp must be positive, got {opts.target_bpp}")
    # Bisect the (continuous) level on a few tiles spread over the raster.
    tiles = list(grid)
    picks = [tiles[i] for i in sorted(set(np.linspace(0, len(tiles) - 1, min(4, len(tiles))).round().astype(int)))]
    jobs = lambda lv: [EncodeJob(str(ds.name), t.index, (t.x0, t.y0, t.width, t.height), tuple(bands),
                                 tuple((r.lo, r.hi) for r in ranges), masked, lv, opts.model, opts.device)
                       for t in picks]
    sampled = sum(t.width * t.height for t in picks)
    coded = sum(t.width * t.height for t in tiles)  # overlaps are coded twice
    raster = ds.width * ds.height

    def bpp(lv):
        """Predicted bpp of the whole file: sampled payload rate, scaled to all tiles, plus framing."""
        payload = sum(len(p) for _, p, _ in map(encode_job, jobs(lv)))
        return (payload * coded / sampled + framing) * 8 / raster

    lo, hi = MIN_LEVEL, float(levels - 1)
    if bpp(lo) >= opts.target_bpp:
        return lo
    if bpp(hi) <= opts.target_bpp:
        return hi
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bpp(mid) <= opts.target_bpp else (lo, mid)
    return lo


def compress_raster(src: str | Path, dst: str | Path, opts: CompressOptions | None = None,
                    progress: Progress | None = None, mapper=serial_map) -> dict:
    """Compress a raster to a container; returns a summary (sizes, bpp, ratio, seconds)."""
    opts = opts or CompressOptions()
    t0 = time.perf_counter()
    src = Path(src)
    with open_raster(src) as ds:
        bands = select_bands(ds, opts.bands)
        masked = has_mask(ds, bands)
        grid = TileGrid(ds.width, ds.height, opts.tile, opts.overlap)
        coder = get_coder(opts.model, opts.device)  # load (and validate) weights up front
        with atomic_output(dst, opts.overwrite) as tmp:
            ranges = band_ranges(ds, bands, masked)
            header = {
                "software": f"code-rsic {__version__}",
                "source_name": src.name,
                "width": ds.width,
                "height": ds.height,
                "source_band_count": ds.count,
                "dtype": ds.dtypes[bands[0] - 1],
                "crs": ds.crs.to_wkt() if ds.crs else None,
                "transform": list(ds.transform)[:6],
                "nodata": ds.nodata,
                "has_mask": masked,
                "bands": bands,
                "band_descriptions": [ds.descriptions[b - 1] for b in bands],
                "colorinterp": [ds.colorinterp[b - 1].name for b in bands],
                "ranges": [[r.lo, r.hi] for r in ranges],
                "tile": opts.tile,
                "overlap": opts.overlap,
                "tile_rows": grid.n_rows,
                "tile_cols": grid.n_cols,
                "model": {"name": coder.model.spec.name, "sha256": coder.model.sha256},
            }
            framing = framing_bytes({**header, "quality": 1.0, "level": 0.0}, len(grid))
            level = _quality_level(ds, grid, opts, bands, ranges, masked, coder.model.spec.levels, framing)
            header.update(quality=level + 1.0, level=level)
            writer = ContainerWriter(tmp, header, len(grid))
            try:
                jobs = (EncodeJob(str(src), t.index, (t.x0, t.y0, t.width, t.height), tuple(bands),
                                  tuple((r.lo, r.hi) for r in ranges), masked, level, opts.model, opts.device)
                        for t in grid)
                for done, (index, payload, crc) in enumerate(mapper(encode_job, jobs), start=1):
                    writer.add_tile(index, payload, crc)
                    if progress:
                        progress(done, len(grid))
                size = writer.close()
            except BaseException:
                writer.abort()
                raise
        pixels = ds.width * ds.height
        raw = pixels * len(bands) * np.dtype(header["dtype"]).itemsize
    seconds = time.perf_counter() - t0
    return {
        "output": str(dst),
        "bytes": size,
        "bpp": size * 8 / pixels,
        "ratio": raw / size,
        "seconds": seconds,
        "megapixels_per_second": pixels / 1e6 / seconds,
        "tiles": len(grid),
        "quality": level + 1.0,
    }


# ---------------------------------------------------------------- decompress

def _check_model(header: dict, coder, path) -> None:
    want = header["model"]
    if want["sha256"] != coder.model.sha256:
        raise CodecError(
            f"{path} was made with model '{want['name']}' (weights {want['sha256'][:12]}), but the loaded "
            f"weights are '{coder.model.spec.name}' ({coder.model.sha256[:12]}): pass the matching --model"
        )


def resolve_window(header: dict, window: tuple[int, int, int, int] | None = None,
                   bbox: tuple[float, float, float, float] | None = None) -> Window:
    """Pixel window (col_off, row_off, width, height) or bbox (in the raster's CRS) -> Window."""
    full = Window(0, 0, header["width"], header["height"])
    if window is None and bbox is None:
        return full
    if bbox is not None:
        left, bottom, right, top = bbox
        if left >= right or bottom >= top:
            raise CodecError("bbox must be LEFT BOTTOM RIGHT TOP with left < right and bottom < top")
        win = from_bounds(left, bottom, right, top, transform=rasterio.Affine(*header["transform"]))
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
    else:
        win = Window(*window)
    try:
        win = win.intersection(full)
    except rasterio.errors.WindowError:
        raise CodecError("the requested window lies outside the raster") from None
    if win.width <= 0 or win.height <= 0:
        raise CodecError("the requested window lies outside the raster")
    return Window(int(win.col_off), int(win.row_off), int(win.width), int(win.height))


def _write_strip(dst, mosaic: Mosaic, header: dict, ranges, win: Window) -> None:
    out = np.stack([r.from_unit(v, header["dtype"]) for r, v in zip(ranges, mosaic.values)])
    nodata = header.get("nodata")
    if nodata is not None:
        nd = np.asarray(nodata).astype(header["dtype"])
        # a valid pixel must not decode to the nodata value: nudge it by one level
        nudge = nd + 1 if nd < np.iinfo(header["dtype"]).max else nd - 1
        out[(out == nd) & ~mosaic.invalid[None]] = nudge
        out[:, mosaic.invalid] = nd
    w = Window(0, mosaic.y0 - win.row_off, mosaic.width, mosaic.height)
    dst.write(out, window=w)
    if header.get("has_mask") and nodata is None:
        dst.write_mask((~mosaic.invalid).astype(np.uint8) * 255, window=w)


def decompress_raster(src: str | Path, dst: str | Path, *, window=None, bbox=None, model: str | None = None,
                      device: str = "cpu", overwrite: bool = False, cog: bool = False,
                      progress: Progress | None = None, mapper=serial_map) -> dict:
    """Decode a container (or one window / bbox of it) to a georeferenced GeoTIFF."""
    t0 = time.perf_counter()
    src = Path(src)
    reader = ContainerReader(src)
    _READERS[str(src)] = reader  # jobs in this process share the validated reader
    try:
        header = reader.header
        coder = get_coder(model or header["model"]["name"], device)
        _check_model(header, coder, src)
        win = resolve_window(header, window, bbox)
        grid = TileGrid(header["width"], header["height"], header["tile"], header["overlap"])
        tiles = grid.tiles_in(win)
        ranges = [BandRange(*r) for r in header["ranges"]]
        model_name = model or header["model"]["name"]
        transform = window_transform(win, rasterio.Affine(*header["transform"]))
        profile = output_profile(header, int(win.width), int(win.height), transform)
        jobs = (DecodeJob(str(src), t.index, t.height, t.width, header["level"], model_name, device) for t in tiles)
        desynced: list[int] = []

        def decoded():
            it = mapper(_decode_or_flag, jobs)
            for result in it:
                if isinstance(result, int):
                    desynced.append(result)
                    continue
                yield result

        with atomic_output(dst, overwrite) as tmp:
            gtiff = tmp.with_name(tmp.name + ".tif") if cog else tmp
            try:
                with rasterio.open(gtiff, "w", **profile) as out:
                    describe_bands(out, header)
                    _stitch(grid, tiles, decoded(), win, header, ranges, out, progress)
                if desynced:
                    raise CodecError(
                        f"entropy decoding desync in {len(desynced)} of {len(tiles)} tiles "
                        f"(tiles {', '.join(map(str, sorted(desynced)[:20]))}): this machine computes the entropy "
                        "model differently from the encoder's (CompressAI issue #279); decode with the same "
                        "software and device type that encoded, e.g. --device cpu"
                    )
                if cog:
                    rasterio.shutil.copy(gtiff, tmp, driver="COG", compress="deflate", predictor=2)
            finally:
                if cog:
                    Path(gtiff).unlink(missing_ok=True)
    finally:
        _READERS.pop(str(src), None)
        reader.close()
    seconds = time.perf_counter() - t0
    pixels = int(win.width) * int(win.height)
    return {"output": str(dst), "window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
            "tiles": len(tiles), "seconds": seconds, "megapixels_per_second": pixels / 1e6 / seconds}


def _decode_or_flag(job: DecodeJob):
    """Decode a tile; a desync is returned as the tile index so all affected tiles get reported."""
    try:
        return decode_job(job)
    except DesyncError:
        return job.tile_index


def _stitch(grid: TileGrid, tiles, decoded, win: Window, header, ranges, out, progress) -> None:
    """Blend decoded tiles (row-major) and write finished strips of the window."""
    y_end = int(win.row_off + win.height)
    x0, width = int(win.col_off), int(win.width)
    bands = len(header["bands"])
    mosaic = Mosaic(int(win.row_off), x0, 0, width, bands)
    by_index = {t.index: t for t in tiles}
    done = 0
    current_row = None
    for index, values, invalid in decoded:
        t = by_index[index]
        if t.row != current_row:
            if current_row is not None:
                # rows above this tile row's start are final
                final = min(t.y0, y_end) - mosaic.y0
                if final > 0:
                    _write_strip(out, mosaic.take_rows(final), header, ranges, win)
            current_row = t.row
            mosaic.extend_to(min(t.y1, y_end) - mosaic.y0)
        mosaic.add(grid, t, values, invalid)
        done += 1
        if progress:
            progress(done, len(tiles))
    if mosaic.height > 0:
        _write_strip(out, mosaic, header, ranges, win)


# ---------------------------------------------------------------- info

def container_info(path: str | Path) -> dict:
    with ContainerReader(path) as reader:
        h = dict(reader.header)
        size = Path(path).stat().st_size
        h["file_bytes"] = size
        h["tiles"] = len(reader.entries)
        h["bpp"] = size * 8 / (h["width"] * h["height"])
        raw = h["width"] * h["height"] * len(h["bands"]) * np.dtype(h["dtype"]).itemsize
        h["ratio"] = raw / size
        return h
