"""Decode a ``.crsic`` container (or one window of it) to a georeferenced GeoTIFF.

``open_plan`` reads and checks what a decode needs; ``decoded_strips`` yields the
finished strips of the window, top to bottom, in the raster's dtype, holding one row of
tiles. A window wider than ``PANEL_WIDTH`` is decoded as vertical panels
(``DecodePlan.panels``), each a window of its own, so memory does not grow with the
width. ``decompress_raster`` writes the strips as they come; the enhancer
(``core.enhance``) consumes the same strips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from ..errors import BadInput, CorruptContainer, DesyncError, ModelMismatch, WeightsUnavailable
from ..format.container import ContainerReader
from ..format.header import Header
from ..format.normalization import BandRange
from ..format.payload import split_payload
from ..format.raster_io import describe_bands, output_profile, raster_output
from ..codec.stitching import raster_values, stitch
from ..format.tiling import Panel, Tally, Tile, TileGrid, panels
from ..models import REGISTRY
from ..options import PANEL_WIDTH, DecompressParams, band_groups, quality_problem, raw_bytes
from .aoi import RasterArea, place_aoi
from .jobs import DecodeJob, decode_or_flag, release_reader, serial_map, shared_reader
from .latent_tiles import decode_stream, ring
from .tile_coder import get_coder, group_payload_bytes

Progress = Callable[[int, int], None]


def check_model(header: Header, coder, path) -> None:
    if header.entropy is not None and header.entropy != coder.entropy_scheme:
        raise ModelMismatch(f"{path} uses the integer entropy scheme '{header.entropy}', this software "
                            f"'{coder.entropy_scheme}': decode it with the version that wrote it")
    if header.model.sha256 != coder.model.sha256:
        raise ModelMismatch(
            f"{path} was made with model '{header.model.name}' (weights {header.model.sha256[:12]}), but the loaded "
            f"weights are '{coder.model.spec.name}' ({coder.model.sha256[:12]}): pass the matching --model"
        )


def resolve_window(header: Header, window: tuple[int, int, int, int] | None = None,
                   bbox: tuple[float, float, float, float] | None = None) -> Window:
    """Pixel window (col_off, row_off, width, height) or bbox (in the raster's CRS) -> Window."""
    full = Window(0, 0, header.width, header.height)
    if window is None and bbox is None:
        return full
    if bbox is not None:
        left, bottom, right, top = bbox
        if left >= right or bottom >= top:
            raise BadInput("bbox must be LEFT BOTTOM RIGHT TOP with left < right and bottom < top")
        win = from_bounds(left, bottom, right, top, transform=rasterio.Affine(*header.transform))
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
    else:
        win = Window(*window)
    try:
        win = win.intersection(full)
    except rasterio.errors.WindowError:
        raise BadInput("the requested window lies outside the raster") from None
    if win.width <= 0 or win.height <= 0:
        raise BadInput("the requested window lies outside the raster")
    return Window(int(win.col_off), int(win.row_off), int(win.width), int(win.height))


@dataclass
class DecodePlan:
    """One decode: the container, the window, the tiles it touches and the output profile."""

    path: str
    header: Header
    window: Window
    grid: TileGrid
    tiles: list[Tile]
    model: str
    device: str
    area: RasterArea | None = None  # an area of interest: pixels outside it are invalid
    skip: frozenset[int] = frozenset()  # tiles of the window outside the area (not decoded)

    @property
    def masked(self) -> bool:
        """Whether the output has invalid pixels (written as nodata, or as a mask)."""
        return self.header.has_mask or self.area is not None

    @property
    def decoded_tiles(self) -> int:
        return len(self.tiles) - len(self.skip)

    @property
    def lambdas(self) -> tuple[float, ...]:
        """The rate levels' lambdas of the model that decodes this container."""
        return get_coder(self.model, self.device).model.spec.lambdas  # open_plan loaded it

    @property
    def ranges(self) -> list[BandRange]:
        return [BandRange(*r) for r in self.header.ranges]

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def height(self) -> int:
        return int(self.window.height)

    def profile(self) -> dict:
        transform = window_transform(self.window, rasterio.Affine(*self.header.transform))
        return output_profile(self.header, self.width, self.height, transform)

    def panels(self, window: int = 0, overlap: int = 0) -> list[Panel]:
        """The window's vertical panels (columns of the window), cut at tile starts; with an
        enhancer ``window``/``overlap``, each reads the context its enhancer windows need."""
        x0 = int(self.window.col_off)
        starts = [x - x0 for x in self.grid.col_starts]
        return panels(self.width, PANEL_WIDTH, starts, window, overlap)

    def columns(self, x0: int, x1: int) -> "DecodePlan":
        """This decode restricted to columns ``[x0, x1)`` of its window."""
        w = self.window
        win = Window(int(w.col_off) + x0, int(w.row_off), x1 - x0, int(w.height))
        tiles = self.grid.tiles_in(win)
        return replace(self, window=win, tiles=tiles, skip=self.skip & {t.index for t in tiles})

    def summary(self, dst, seconds: float) -> dict:
        w = self.window
        res = {"output": str(dst), "window": [int(w.col_off), int(w.row_off), self.width, self.height],
               "tiles": self.decoded_tiles, "seconds": seconds,
               "megapixels_per_second": self.width * self.height / 1e6 / seconds}
        if self.area is not None:
            res["tiles_skipped"] = len(self.skip)  # in the area's window, but outside the area
        if self.header.latent_tiles:  # format 3: the tiles and the ring of neighbours the margin reaches
            decoded = [t for t in self.tiles if t.index not in self.skip]
            res["tiles_read"] = len(ring(self.grid, decoded, self.header.latent_margin)) if decoded else 0
        return res


def container_model(header: Header, model: str | None, path) -> str:
    """The model to decode with: the user's ``model`` (a registry name or a weights file), else
    the container's, which must be a registry name: a name from a file is never opened as a path."""
    if model:
        return model
    name = header.model.name
    if name not in REGISTRY:
        raise WeightsUnavailable(f"{path} was made with model {name!r}, which is not in the registry "
                                 f"({', '.join(REGISTRY)}): pass its weights file with --model")
    return name


def open_plan(reader: ContainerReader, params: DecompressParams) -> DecodePlan:
    """Check what a decode needs before anything is allocated or written: the model (a
    registry name unless the user gave one), the window and the memory it takes, the
    weights and the rate level against the loaded model's levels."""
    header = reader.header
    model = container_model(header, params.model, reader.path)
    area = place_aoi(header, params.aoi, params.aoi_crs) if params.aoi is not None else None
    win = area.window() if area is not None else resolve_window(header, params.window, params.bbox)
    coder = get_coder(model, params.device)
    check_model(header, coder, reader.path)
    problem = quality_problem(header.quality, coder.model.spec.levels)
    if problem:
        raise CorruptContainer(f"{reader.path}: container rate is outside model '{coder.model.spec.name}' "
                               f"({problem})")
    grid = TileGrid(header.width, header.height, header.tile, header.overlap)
    tiles = grid.tiles_in(win)
    skip = frozenset(t.index for t in tiles if not area.touches(t)) if area is not None else frozenset()
    return DecodePlan(str(reader.path), header, win, grid, tiles, model, params.device, area, skip)


def _blank(tile: Tile, bands: int) -> tuple[int, np.ndarray, np.ndarray]:
    """A tile outside the area of interest, not decoded: zeros, all invalid."""
    return (tile.index, np.zeros((bands, tile.height, tile.width), np.float32),
            np.ones((tile.height, tile.width), bool))


def decoded_strips(plan: DecodePlan, mapper=serial_map, progress: Progress | None = None
                   ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Finished strips ``(row in the window, values (bands, h, w) in the raster dtype, invalid (h, w))``.

    Tiles whose entropy decoding desyncs are all reported at the end, as one error.
    """
    h = plan.header
    if h.latent_tiles:  # format 3: synthesised across tile borders (an error names its tile)
        stream = iter(decode_stream(plan.path, h, plan.grid, [t for t in plan.tiles if t.index not in plan.skip],
                                    plan.model, plan.device, mapper))
    jobs = (DecodeJob(plan.path, t.index, t.height, t.width, h.level, plan.model, plan.device, h.portable,
                      len(h.bands)) for t in plan.tiles if t.index not in plan.skip)
    desynced: list[int] = []

    def decoded():
        results = None if h.latent_tiles else iter(mapper(decode_or_flag, jobs))
        for t in plan.tiles:  # the mapper keeps the jobs' order; skipped tiles are filled in
            if t.index in plan.skip:
                yield _blank(t, len(h.bands))
                continue
            if h.latent_tiles:
                yield next(stream)
                continue
            result = next(results)
            if isinstance(result, int):
                desynced.append(result)
            else:
                yield result

    win = plan.window
    ranges = plan.ranges
    for strip in stitch(plan.grid, plan.tiles, decoded(), (int(win.col_off), int(win.row_off), plan.width,
                                                            plan.height), len(h.bands), progress):
        if plan.area is not None:
            strip.invalid |= plan.area.outside(strip.x0, strip.y0, strip.height, strip.width)
        values = raster_values(strip, ranges, h.dtype, h.nodata)
        if plan.area is not None and h.nodata is None:
            values[:, strip.invalid] = 0  # masked: no leftover of the blank tiles
        yield strip.y0 - int(win.row_off), values, strip.invalid
    if desynced:
        which = (f"entropy decoding desync in {len(desynced)} of {len(plan.tiles)} tiles "
                 f"(tiles {', '.join(map(str, sorted(desynced)[:20]))})")
        if h.portable:
            raise DesyncError(f"{which}: the decoded symbols differ from the encoder's although this format-2 "
                              "file's probabilities are computed exactly; the tile data is damaged")
        raise DesyncError(f"{which}: this format-1 file's float entropy model computes differently on this "
                          "machine or setting (CompressAI issue #279); decode it with the software, device and "
                          "thread count that encoded it, and re-encode it as format 2 (portable)")


def write_strip(out, row: int, values: np.ndarray, invalid: np.ndarray, header: Header,
                masked: bool | None = None, col: int = 0) -> None:
    """Write one strip (at column ``col`` of the output); a masked output (``masked``,
    default: when the raster is) without a nodata value gets an internal mask."""
    w = Window(col, row, values.shape[2], values.shape[1])
    out.write(values, window=w)
    if (header.has_mask if masked is None else masked) and header.nodata is None:
        out.write_mask((~invalid).astype(np.uint8) * 255, window=w)


class open_container:
    """``with open_container(path) as reader``: the validated reader, shared with this
    process's decode jobs while the block runs."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.reader = ContainerReader(path)

    def __enter__(self) -> ContainerReader:
        return shared_reader(self.path, self.reader)

    def __exit__(self, *exc):
        release_reader(self.path)
        self.reader.close()


def decompress_raster(src: str | Path, dst: str | Path, *, window=None, bbox=None, model: str | None = None,
                      device: str = "cpu", overwrite: bool = False, cog: bool = False,
                      progress: Progress | None = None, mapper=serial_map, aoi: str | None = None,
                      aoi_crs: str | None = None) -> dict:
    """Decode a container (or one window / bbox / area of interest of it) to a georeferenced
    GeoTIFF, without enhancement."""
    params = DecompressParams(model=model, device=device, window=window, bbox=bbox, aoi=aoi, aoi_crs=aoi_crs,
                              overwrite=overwrite, cog=cog, enhance=False).validate()
    t0 = time.perf_counter()
    with open_container(src) as reader:
        plan = open_plan(reader, params)
        parts = [plan.columns(p.x0, p.x1) for p in plan.panels()]
        tally = Tally([len(part.tiles) for part in parts], progress)
        with raster_output(dst, plan.profile(), overwrite, cog) as out:
            describe_bands(out, plan.header)
            for part in parts:
                col = int(part.window.col_off - plan.window.col_off)
                for row, values, invalid in decoded_strips(part, mapper, tally.part()):
                    write_strip(out, row, values, invalid, plan.header, plan.masked, col)
    return plan.summary(dst, time.perf_counter() - t0)


def container_info(path: str | Path) -> dict:
    """The header as a dict, with the file's size, tile count, bpp and ratio."""
    with ContainerReader(path) as reader:
        h = reader.header
        size = Path(path).stat().st_size
        info = h.to_dict()
        raw = raw_bytes(h.width, h.height, len(h.bands), h.dtype)
        groups = [[h.bands[i] for i in sorted(set(g))] for g in band_groups(len(h.bands))]
        per_group, mask_bytes = np.zeros(len(groups), dtype=np.int64), 0
        for index in range(len(reader.entries)):
            mask, stream = split_payload(reader.read_tile(index))
            mask_bytes += mask
            per_group += np.asarray(group_payload_bytes(stream), dtype=np.int64)
        info["band_groups"] = [{"bands": g, "bytes": int(b), "bpp": int(b) * 8 / h.pixels}
                               for g, b in zip(groups, per_group)]
        info["mask_bytes"] = mask_bytes
        info.update(file_bytes=size, raw_bytes=raw, tiles=len(reader.entries), bpp=size * 8 / h.pixels,
                    ratio=raw / size,
                    format=h.format_version, portable=h.portable)
        return info
