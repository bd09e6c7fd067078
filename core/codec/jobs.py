"""Tile jobs: ``encode_job`` and ``decode_job``, pure functions of small picklable records.

They open their inputs themselves (one cached dataset / container per process), so the
same code runs serially (``serial_map``), two at once on threads of this process
(``ThreadMapper``: in-process decoding on two cores or more, ``decoding_mapper``) or on a
process pool / Dask cluster (``core.scale``).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from rasterio.windows import Window

from ..errors import DesyncError
from ..format.container import ContainerReader
from ..format.payload import pack_payload, prepare_tile, unpack_payload
from ..format.raster_io import cached_raster, read_bands, read_valid
from ..format.tiling import padded
from ..models.runtime import _threads
from .tile_coder import get_coder


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
    exact: bool = True  # integer entropy parameters (format 2)
    # format 3: the analysis sees this many pixels of the neighbours (None: formats 1, 2)
    margin: int | None = None


@dataclass(frozen=True)
class DecodeJob:
    container: str
    tile_index: int
    height: int
    width: int
    level: float
    model: str
    device: str
    exact: bool = True
    bands: int = 0  # coded bands (the tile stream must say so); 0: not checked


def _crc_seed(job) -> int:
    """Format 2 starts each tile's symbols CRC at the tile's index, so a tile moved to another
    place in the index (with its checksums) is caught; format 1 starts at 0."""
    return job.tile_index if job.exact else 0


def context_window(job: EncodeJob, width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Format 3: the analysis window of a tile -> ((col_off, row_off, width, height) read from the
    raster, (height, width) after edge padding). It is the tile padded to the latent grid, plus
    ``job.margin`` px on every side within the raster padded to ``PAD_MULTIPLE``, so its latents
    line up with a whole-raster analysis'."""
    x0, y0, w, h = job.window
    m = job.margin
    ax0, ay0 = max(0, x0 - m), max(0, y0 - m)
    ax1, ay1 = min(padded(width), x0 + padded(w) + m), min(padded(height), y0 + padded(h) + m)
    return (ax0, ay0, min(width, ax1) - ax0, min(height, ay1) - ay0), (ay1 - ay0, ax1 - ax0)


def encode_job(job: EncodeJob) -> tuple[int, bytes, int]:
    """Read, normalise and encode one tile -> (tile index, payload, latent-symbols CRC)."""
    ds = cached_raster(job.src)
    coder = get_coder(job.model, job.device)
    if job.margin is None:
        window = Window(*job.window)
        data = read_bands(ds, list(job.bands), window)
        valid = read_valid(ds, list(job.bands), window) if job.masked else None
        stream, crc = coder.encode_tile(prepare_tile(data, valid, job.ranges), job.level, job.exact, _crc_seed(job))
        return job.tile_index, pack_payload(None if valid is None else ~valid, stream), crc
    (ax0, ay0, aw, ah), size = context_window(job, ds.width, ds.height)
    window = Window(ax0, ay0, aw, ah)
    data = read_bands(ds, list(job.bands), window)
    valid = read_valid(ds, list(job.bands), window) if job.masked else None
    x0, y0, w, h = job.window
    top, left = y0 - ay0, x0 - ax0
    crop = (top, left, padded(h), padded(w))
    stream, crc = coder.encode_tile(prepare_tile(data, valid, job.ranges, size), job.level, True, job.tile_index, crop)
    invalid = None if valid is None else ~valid[top : top + h, left : left + w]
    return job.tile_index, pack_payload(invalid, stream), crc


_READERS: dict[str, ContainerReader] = {}
_MAX_READERS = 8


def shared_reader(path: str, reader: ContainerReader | None = None) -> ContainerReader:
    """This process's open container at ``path`` (``reader``: register one already open);
    reopened when the file was replaced since (a long-lived Dask worker must not read an
    old copy), at most ``_MAX_READERS`` kept open."""
    if reader is not None:
        _READERS[path] = reader
        return reader
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


def release_reader(path: str) -> None:
    _READERS.pop(path, None)


def _same_file(reader: ContainerReader, path: str) -> bool:
    try:
        a, b = os.fstat(reader.f.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def decode_job(job: DecodeJob) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Decode one tile -> (tile index, float (bands, h, w) in [0, 1], invalid mask or None)."""
    reader = shared_reader(job.container)
    entry = reader.entries[job.tile_index]
    invalid, stream = unpack_payload(reader.read_tile(job.tile_index), job.height, job.width)
    coder = get_coder(job.model, job.device)
    shape = (job.bands, padded(job.height), padded(job.width)) if job.bands else None
    try:
        full = coder.decode_tile(stream, job.level, entry.symbols_crc, job.exact, shape=shape, seed=_crc_seed(job))
    except DesyncError:
        raise DesyncError(str(job.tile_index)) from None
    return job.tile_index, full[:, : job.height, : job.width], invalid


def decode_or_flag(job: DecodeJob):
    """Decode a tile; a desync is returned as the tile index so all affected tiles get reported."""
    try:
        return decode_job(job)
    except DesyncError:
        return job.tile_index


def serial_map(fn, jobs: Iterable) -> Iterator:
    """The in-process executor: results in order, one job at a time."""
    for job in jobs:
        yield fn(job)


class ThreadMapper:
    """``workers`` jobs at once on threads of this process; results in job order, at most
    ``2 * workers`` jobs in flight.

    Decoding alternates between work that uses every core (the synthesis, the entropy
    path's GEMMs) and work that uses one (rANS, NumPy's element-wise steps, Python), and
    format 3 maps a row's synthesis jobs interleaved with the next row's entropy decoding
    (``latent_tiles.decode_stream``): two jobs at once fill one's single-core stretches with
    the other's work. Each job computes with the process's thread count, as it would alone,
    so the pixels are identical to ``serial_map``'s (tested). Measured on 2 cores, 4096 px,
    whole process: plain decoding x1.15, enhanced x1.05, for 85-145 MiB more at the peak;
    compression (tiles all alike, in step) gained nothing (``results/thread_mapper_ab.json``)."""

    def __init__(self, workers: int = 2):
        self.workers = max(1, workers)

    def __call__(self, fn, jobs: Iterable) -> Iterator:
        # threads for this map only: none is left behind (a QGIS session, a long-lived process)
        pool, pending = ThreadPoolExecutor(self.workers, thread_name_prefix="tile"), deque()
        try:
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # also stopped early (an error, a cancel): queued jobs dropped, running ones end
            pool.shutdown(wait=True, cancel_futures=True)


def decoding_mapper():
    """The in-process mapper for decoding: ``ThreadMapper`` (two jobs at once) where the
    process computes on two threads or more, else ``serial_map``."""
    return ThreadMapper(2) if _threads(None) >= 2 else serial_map
