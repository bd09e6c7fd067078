"""Format 3 decoding: tiles entropy-decoded on their own, synthesised across their borders.

Tiles partition the raster with no overlap, and each tile's latents are coded on their
own. The synthesis of a tile runs on a window of the raster's latent: the tile's own
latents plus ``latent_margin`` samples of each neighbour's (16 px each), and keeps the
tile's pixels. Within the synthesis transform's receptive field this is the synthesis of
the whole raster's latent, so the tiles meet without a seam and without blending
(``benchmarks/receptive_field.py`` measures the field and the margin's effect).

Decoding is two kinds of job, both small picklable records for any mapper: a
``LatentJob`` entropy-decodes one tile (once, however many neighbours need it), a
``SynthesisJob`` carries one tile's latent window and returns its pixels. ``decode_stream``
chains them for a list of tiles (a window: the tiles it touches plus the ring of
neighbours the margin reaches), holding the latents of about three rows of tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Iterable, Iterator

import numpy as np

from ..errors import CorruptContainer, DesyncError
from ..format.header import Header
from ..format.payload import unpack_payload
from ..format.tiling import Tile, TileGrid, padded
from .jobs import shared_reader
from .tile_coder import get_coder


@dataclass(frozen=True)
class LatentJob:
    """Entropy-decode one tile of a format-3 container."""

    container: str
    tile_index: int
    height: int
    width: int
    model: str
    device: str
    bands: int


@dataclass(frozen=True)
class SynthesisJob:
    """One tile's latent window (per band group) -> the tile's pixels."""

    tile_index: int
    bands: int
    level: float
    model: str
    device: str
    latents: tuple  # per band group (M, h, w) float32
    crop: tuple[int, int, int, int]  # top, left, height, width of the tile in the synthesised window (px)
    invalid: np.ndarray | None = None


def latent_job(job: LatentJob) -> tuple[int, int, list[np.ndarray], np.ndarray | None]:
    """-> (tile index, bands, latents per band group, invalid mask or None). Errors name the tile."""
    reader = shared_reader(job.container)
    try:
        invalid, stream = unpack_payload(reader.read_tile(job.tile_index), job.height, job.width)
        shape = (job.bands, padded(job.height), padded(job.width))
        bands, latents = get_coder(job.model, job.device).decode_latents(
            stream, reader.entries[job.tile_index].symbols_crc, shape, seed=job.tile_index)
    except DesyncError:
        raise DesyncError(f"entropy decoding desync in tile {job.tile_index}: the decoded symbols differ from the "
                          "encoder's although this format-3 file's probabilities are computed exactly; the tile "
                          "data is damaged") from None
    except CorruptContainer as exc:
        text = str(exc)
        if f"tile {job.tile_index} " in text:  # the reader's own message names it already
            raise
        raise CorruptContainer(f"{reader.path}: tile {job.tile_index}: {text}") from None
    return job.tile_index, bands, latents, invalid


def synthesis_job(job: SynthesisJob) -> tuple[int, np.ndarray, np.ndarray | None]:
    """-> (tile index, float (bands, h, w) in [0, 1], invalid mask or None)."""
    pixels = get_coder(job.model, job.device).synthesise(list(job.latents), job.bands, job.level)
    top, left, h, w = job.crop
    return job.tile_index, pixels[:, top : top + h, left : left + w], job.invalid


def ring(grid: TileGrid, tiles: Iterable[Tile], margin: int) -> list[Tile]:
    """The tiles whose latents synthesising ``tiles`` needs: them and, with a margin, their
    eight neighbours (a margin is at most a tile's latent side), in row-major order."""
    reach = 1 if margin > 0 else 0
    need = set()
    for t in tiles:
        for r in range(max(0, t.row - reach), min(grid.n_rows, t.row + reach + 1)):
            for c in range(max(0, t.col - reach), min(grid.n_cols, t.col + reach + 1)):
                need.add((r, c))
    return [grid.tile_at(r, c) for r, c in sorted(need)]


def _latent_box(t: Tile) -> tuple[int, int, int, int]:
    """A tile's latents in the raster's latent grid: y0, x0, y1, x1 (the tile padded to 64 px)."""
    return t.y0 // 16, t.x0 // 16, (t.y0 + padded(t.height)) // 16, (t.x0 + padded(t.width)) // 16


def latent_window(grid: TileGrid, decoded: dict, tiles: Iterable[Tile], box: tuple[int, int, int, int]
                  ) -> list[np.ndarray]:
    """The raster's latent (per band group) within ``box`` (y0, x0, y1, x1 in latent samples),
    copied from the decoded ``tiles`` that cover it (index -> (bands, latents, invalid))."""
    wy0, wx0, wy1, wx1 = box
    windows, shape = None, None
    for n in tiles:
        ny0, nx0, ny1, nx1 = _latent_box(n)
        y0, x0, y1, x1 = max(ny0, wy0), max(nx0, wx0), min(ny1, wy1), min(nx1, wx1)
        if y0 >= y1 or x0 >= x1:
            continue
        n_bands, latents, _ = decoded[n.index]
        if windows is None:
            shape = (n_bands, [y.shape[0] for y in latents])
            windows = [np.zeros((y.shape[0], wy1 - wy0, wx1 - wx0), np.float32) for y in latents]
        elif (n_bands, [y.shape[0] for y in latents]) != shape:
            raise CorruptContainer(f"tile {n.index} codes {n_bands} bands, its neighbours {shape[0]}")
        for win, y in zip(windows, latents):
            win[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = y[:, y0 - ny0 : y1 - ny0, x0 - nx0 : x1 - nx0]
    return windows


def window_job(grid: TileGrid, t: Tile, margin: int, decoded: dict, header: Header, model: str,
               device: str) -> SynthesisJob:
    """Assemble tile ``t``'s latent window (its latents and ``margin`` samples of its neighbours')."""
    bands, _, invalid = decoded[t.index]
    ly0, lx0, ly1, lx1 = _latent_box(t)
    box = (max(0, ly0 - margin), max(0, lx0 - margin),
           min(padded(grid.height) // 16, ly1 + margin), min(padded(grid.width) // 16, lx1 + margin))
    windows = latent_window(grid, decoded, ring(grid, [t], margin), box)
    crop = ((ly0 - box[0]) * 16, (lx0 - box[1]) * 16, t.height, t.width)
    return SynthesisJob(t.index, bands, header.level, model, device, tuple(windows), crop, invalid)


def whole_synthesis(path: str, model: str, device: str = "cpu") -> np.ndarray:
    """The reference format 3 is measured against: one synthesis of the whole raster's latent
    (every tile's latents put together) -> float (bands, height, width). Memory: the raster."""
    reader = shared_reader(path)
    h = reader.header
    grid = TileGrid(h.width, h.height, h.tile, h.overlap)
    decoded = {}
    for t in grid:
        index, bands, latents, invalid = latent_job(LatentJob(path, t.index, t.height, t.width, model, device,
                                                              len(h.bands)))
        decoded[index] = (bands, latents, invalid)
    box = (0, 0, padded(grid.height) // 16, padded(grid.width) // 16)
    pixels = get_coder(model, device).synthesise(latent_window(grid, decoded, grid, box), len(h.bands), h.level)
    return pixels[:, : h.height, : h.width]


def row_job(job: "LatentJob | SynthesisJob"):
    """Either kind of job (``decode_stream`` maps both at once)."""
    return latent_job(job) if isinstance(job, LatentJob) else synthesis_job(job)


def decode_stream(path: str, header: Header, grid: TileGrid, tiles: list[Tile], model: str, device: str,
                  mapper) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Decoded ``(index, values, invalid)`` of ``tiles`` (row-major), each synthesised from its
    latent window; reads the tiles' ring once each, and keeps about four rows of latents.

    One map per row of tiles: the row's synthesis jobs, interleaved with the entropy
    decoding of the latents the next row needs, so a mapper that runs jobs at once overlaps
    the two (``ThreadMapper``). The first row's latents are decoded before. Maps never run
    nested: a mapper with a bound on the jobs in flight (``DaskMapper``) could otherwise wait
    for a slot the other one holds."""
    margin = header.latent_margin or 0
    needed = ring(grid, tiles, margin)
    decoded: dict = {}
    rows: dict[int, list[Tile]] = {}
    for t in tiles:
        rows.setdefault(t.row, []).append(t)
    order = list(rows.items())
    taken = 0

    def latent_jobs(row_tiles: list[Tile]) -> list[LatentJob]:
        """The jobs for the latents ``row_tiles`` need that are not decoded yet."""
        nonlocal taken
        last = max(n.index for n in ring(grid, row_tiles, margin))
        batch = []
        while taken < len(needed) and needed[taken].index <= last:
            batch.append(needed[taken])
            taken += 1
        return [LatentJob(path, t.index, t.height, t.width, model, device, len(header.bands)) for t in batch]

    def keep(result) -> None:
        index, bands, latents, invalid = result
        decoded[index] = (bands, latents, invalid)

    for result in mapper(latent_job, latent_jobs(order[0][1]) if order else []):
        keep(result)
    for i, (row, row_tiles) in enumerate(order):
        synthesis = [window_job(grid, t, margin, decoded, header, model, device) for t in row_tiles]
        for index in [k for k in decoded if k // grid.n_cols < row]:
            del decoded[index]  # the next rows' windows reach back one row at most
        ahead = latent_jobs(order[i + 1][1]) if i + 1 < len(order) else []
        jobs = [job for pair in zip_longest(synthesis, ahead) for job in pair if job is not None]
        for job, result in zip(jobs, mapper(row_job, jobs)):
            if isinstance(job, LatentJob):
                keep(result)
            else:
                yield result
