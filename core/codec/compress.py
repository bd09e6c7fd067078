"""Compress a raster to a ``.crsic`` container, tile by tile (memory: a row of tiles).

Format 3 (the default) writes through a partial file with a fixed name, so a killed job can
be resumed: the same command with ``resume`` keeps the partial file's complete tiles and
codes the rest; the encoding is deterministic, so the result is byte-identical to an
uninterrupted run.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .. import __version__
from ..errors import BadInput, UnsupportedRaster
from ..format.container import ContainerWriter, framing_bytes
from ..format.header import Header, ModelRef
from ..format.output import Partial, atomic_output, resumable_output
from ..format.raster_io import band_ranges, dataset_name, has_mask, input_file_bytes, open_raster, select_bands
from ..format.tiling import TileGrid, padded
from ..models import MIN_LEVEL, REGISTRY, ModelSpec, quality_to_level
from ..options import (ANALYSIS_MARGIN, DEFAULT_MODEL, HIGH_RATE_MODEL, LATENT_MARGIN, RATE_SAMPLE_TILES, CompressParams,
                       quality_problem, raw_bytes)
from .jobs import EncodeJob, encode_job, serial_map
from .tile_coder import get_coder

Progress = Callable[[int, int], None]


def _jobs(src: str, tiles, header: Header, params: CompressParams, masked: bool, level: float):
    for t in tiles:
        yield EncodeJob(src, t.index, (t.x0, t.y0, t.width, t.height), tuple(header.bands), tuple(header.ranges),
                        masked, level, params.model, params.device, header.portable, header.analysis_margin)


class RateChoice(NamedTuple):
    level: float  # 0-based rate level
    note: str | None  # None, or why ``target_bpp`` could not be met
    top_bpp: float | None = None  # the model's predicted bpp at its top level, when the target is above it


def _quality_level(src: str, grid: TileGrid, params: CompressParams, header: Header, masked: bool,
                   spec: ModelSpec, mapper=serial_map) -> RateChoice:
    """The rate level: from the quality, or bisected to hit ``target_bpp``; and, when the
    target is out of the model's reach on this raster, a one-line note saying so."""
    if params.target_bpp is None:
        problem = quality_problem(params.quality, spec.levels)
        if problem and params.quality > spec.levels and spec.name != HIGH_RATE_MODEL:
            raise BadInput(f"{problem} for {spec.name}; --model {HIGH_RATE_MODEL} has "
                           f"{REGISTRY[HIGH_RATE_MODEL].levels} levels, for higher rates")
        return RateChoice(quality_to_level(params.quality, spec.levels), None)
    framing = framing_bytes(header.with_rate(1.0, 0.0), len(grid))
    # Bisect the (continuous) level on a few tiles spread over the raster: whole tiles where
    # there are enough (a cut tile at the edge pays its fixed costs on fewer pixels, so picking
    # them biases the estimate up: -18 % of the target at 0.1 bpp on the 7.5 MP Dubai pair,
    # benchmarks/target_bpp.py), scaled by the area actually coded (tiles padded to the latent grid).
    tiles = list(grid)
    whole = [t for t in tiles if (t.width, t.height) == (grid.tile, grid.tile)]
    pool = whole if len(whole) >= RATE_SAMPLE_TILES else tiles
    picks = [pool[i] for i in sorted(set(np.linspace(0, len(pool) - 1, min(RATE_SAMPLE_TILES, len(pool)))
                                         .round().astype(int)))]
    coded_area = lambda ts: sum(padded(t.width) * padded(t.height) for t in ts)  # noqa: E731
    scale = coded_area(tiles) / coded_area(picks)  # overlaps are coded twice

    def bpp(lv):
        """Predicted bpp of the whole file: sampled payload rate, scaled to all tiles, plus framing."""
        payload = sum(len(p) for _, p, _ in mapper(encode_job, _jobs(src, picks, header, params, masked, lv)))
        return (payload * scale + framing) * 8 / header.pixels

    lo, hi = MIN_LEVEL, float(spec.levels - 1)
    if (least := bpp(lo)) >= params.target_bpp:
        return RateChoice(lo, f"{params.target_bpp:g} bpp is below what {spec.name} codes this raster at its "
                              f"lowest quality (about {least:.3f} bpp)")
    if (most := bpp(hi)) <= params.target_bpp:
        wider = f"; --model {HIGH_RATE_MODEL} reaches higher rates" if spec.name != HIGH_RATE_MODEL else ""
        return RateChoice(hi, f"{params.target_bpp:g} bpp is above what {spec.name} codes this raster at its top "
                              f"quality (about {most:.3f} bpp){wider}", most)
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bpp(mid) <= params.target_bpp else (lo, mid)
    return RateChoice(lo, None)


def _high_rate(default: RateChoice, high: RateChoice, target_bpp: float) -> RateChoice:
    """The high-rate model's choice, its note saying why it coded the raster."""
    note = (f"coded with {HIGH_RATE_MODEL}: {target_bpp:g} bpp is above what {DEFAULT_MODEL} codes this raster at "
            f"its top quality (about {default.top_bpp:.3f} bpp)")
    return RateChoice(high.level, note + (f"; {high.note}" if high.note else ""))


def _header(ds, src: str, bands, ranges, masked: bool, grid: TileGrid, coder, version: int) -> Header:
    latent = version == 3
    return Header(
        software=f"code-rsic {__version__}", source_name=dataset_name(src), width=ds.width, height=ds.height,
        source_band_count=ds.count, dtype=ds.dtypes[bands[0] - 1], crs=ds.crs.to_wkt() if ds.crs else None,
        transform=tuple(ds.transform)[:6], nodata=ds.nodata, has_mask=masked, bands=tuple(bands),
        band_descriptions=tuple(ds.descriptions[b - 1] for b in bands),
        colorinterp=tuple(ds.colorinterp[b - 1].name for b in bands),
        ranges=tuple((r.lo, r.hi) for r in ranges), tile=grid.tile, overlap=grid.overlap,
        tile_rows=grid.n_rows, tile_cols=grid.n_cols, model=ModelRef(coder.model.spec.name, coder.model.sha256),
        entropy=coder.entropy_scheme if version >= 2 else None,
        latent_margin=LATENT_MARGIN if latent else None, analysis_margin=ANALYSIS_MARGIN if latent else None)


def _writer(tmp, header: Header, n_tiles: int, dst) -> ContainerWriter:
    """A new container, or (``resumable_output`` found one) the partial file continued."""
    if not isinstance(tmp, Partial):
        return ContainerWriter(tmp, header, n_tiles, name=dst)
    if not tmp.exists:
        return ContainerWriter(tmp.path, header, n_tiles, name=dst)
    tmp.keep = True  # until it is known to be this job's
    writer = ContainerWriter.resume(tmp.path, header, n_tiles, name=dst)
    tmp.keep = False
    return writer


def compress_raster(src: str | Path, dst: str | Path, params: CompressParams | None = None,
                    progress: Progress | None = None, mapper=serial_map) -> dict:
    """Compress a raster to a container; returns a summary (sizes, bpp, ratio, seconds)."""
    params = (params or CompressParams()).validate()
    chosen = params.model is not None  # else the high-rate model may code a target the default cannot reach
    params = replace(params, model=params.model or DEFAULT_MODEL)
    t0 = time.perf_counter()
    src = str(src)  # a file or any GDAL dataset name (/vsizip/..., GPKG:file:table)
    with open_raster(src) as ds:
        input_bytes, input_label = input_file_bytes(ds)
        bands = select_bands(ds, params.bands)
        masked = has_mask(ds, bands)
        grid = TileGrid(ds.width, ds.height, params.tile, params.overlap)
        coder = get_coder(params.model, params.device)  # load (and validate) weights up front
        output = resumable_output(dst, params.overwrite, params.resume) if params.format == 3 else \
            atomic_output(dst, params.overwrite)
        with output as tmp:
            ranges = band_ranges(ds, bands, masked)
            header = _header(ds, src, bands, ranges, masked, grid, coder, params.format)
            problem = header.problem()  # never write a container that a reader would refuse
            if problem:
                raise UnsupportedRaster(f"{src}: {problem}")
            rate = _quality_level(src, grid, params, header, masked, coder.model.spec, mapper)
            if rate.top_bpp is not None and not chosen and params.model != HIGH_RATE_MODEL:
                # no model chosen and the default cannot reach the target: the high-rate model codes it
                params, coder = replace(params, model=HIGH_RATE_MODEL), get_coder(HIGH_RATE_MODEL, params.device)
                header = _header(ds, src, bands, ranges, masked, grid, coder, params.format)
                rate = _high_rate(rate, _quality_level(src, grid, params, header, masked, coder.model.spec, mapper),
                                  params.target_bpp)
            level, rate_note = rate.level, rate.note
            header = header.with_rate(level + 1.0, level)
            writer = _writer(tmp, header, len(grid), dst)
            try:
                skip = writer.done
                jobs = _jobs(src, list(grid)[skip:], header, params, masked, level)
                for done, (index, payload, crc) in enumerate(mapper(encode_job, jobs), start=skip + 1):
                    writer.add_tile(index, payload, crc)
                    if progress:
                        progress(done, len(grid))
                size = writer.close()
            except BaseException:
                writer.abort()
                raise
    raw = raw_bytes(header.width, header.height, len(bands), header.dtype)
    seconds = time.perf_counter() - t0
    return {
        "output": str(dst),
        "bytes": size,
        "bpp": size * 8 / header.pixels,
        "ratio": raw / size,  # against the raw data (options.sizes_text)
        "raw_bytes": raw,
        "input_bytes": input_bytes,
        "input_label": input_label,
        "bands": list(bands),
        "seconds": seconds,
        "megapixels_per_second": header.pixels / 1e6 / seconds,
        "tiles": len(grid),
        "model": header.model.name,
        "quality": level + 1.0,
        "rate_note": rate_note,  # None, or why --target-bpp could not be met
        "format": header.format_version,
        "resumed_tiles": skip,
    }
