"""Compress or decode many rasters: folders, globs or list files in, one output each.

    python -m core.tile_codec batch compress scenes/ -o containers/ --workers 4
    python -m core.tile_codec batch compress 'archive/**/*.tif' list.txt --scheduler tcp://head:8786
    python -m core.tile_codec batch decompress containers/ -o decoded/ --workers 4

Several rasters are in progress at once (their tiles share the mapper's bounded window,
see ``core.scale.parallel``), each written atomically to its own output. A raster that
fails is reported in the summary and does not stop the others. Each raster is one call of
``core.usecases`` (``compress`` or ``decompress``), like the CLI and the QGIS worker.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import BadInput, CodecError
from ..options import (CONTAINER_SUFFIX, DECODED_SUFFIX, DEFAULT_MODEL, CompressParams, DecompressParams, format_bytes,
                       sizes_text)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
CONTAINER_SUFFIXES = (CONTAINER_SUFFIX,)
LIST_SUFFIXES = (".txt", ".lst", ".list")
MODES = ("compress", "decompress")
# rasters in progress at once on a cluster, at most: decoding holds a strip of tiles per
# raster on the client, so fewer
MAX_CONCURRENT = {"compress": 64, "decompress": 8}


@dataclass
class BatchItem:
    src: Path
    dst: Path | None = None
    status: str = "pending"  # pending, done, failed, skipped
    error: str | None = None
    tiles: int = 0
    result: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"input": str(self.src), "output": str(self.dst) if self.dst else None, "status": self.status,
                "error": self.error, **self.result}


# ---------------------------------------------------------------- inputs

def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _read_list(path: Path) -> list[str]:
    """Paths in a list file, one a line; blank lines and # comments skipped; relative to the file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read list file {path}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if os.path.isabs(line) else str(path.parent / line))
    return out


def expand_inputs(items: list[str], mode: str) -> list[Path]:
    """Folders (their rasters, or containers for decompress), globs, list files (``@list``,
    or a .txt/.lst/.list file) and plain paths -> unique paths in the order given.

    A plain path that does not exist is kept: it fails, and is reported, like any bad input.
    """
    suffixes = RASTER_SUFFIXES if mode == "compress" else CONTAINER_SUFFIXES
    found: list[Path] = []

    def add(text: str, from_list: bool = False) -> None:
        path = Path(text)
        if text.startswith("@") and not path.exists():
            for line in _read_list(Path(text[1:])):
                add(line, True)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file() and not from_list:
            for line in _read_list(path):
                add(line, True)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes))
        elif _is_glob(text) and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise BadInput(f"no file matches {text}")
            found.extend(p for p in matches if p.is_file())
        else:
            found.append(path)

    for text in items:
        add(text)
    unique, seen = [], set()
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_for(src: Path, mode: str, out_dir: Path | None) -> Path:
    name = src.stem + (CONTAINER_SUFFIX if mode == "compress" else DECODED_SUFFIX)
    return (out_dir or src.parent) / name


def default_concurrency(mode: str, mapper) -> int:
    """Rasters in progress at once: the mapper's worker threads, capped per mode (1 in process)."""
    return min(MAX_CONCURRENT[mode], max(1, getattr(mapper, "worker_threads", 1)))


# ---------------------------------------------------------------- running

def _probe(item: BatchItem, mode: str, tile: int, overlap: int) -> int:
    """Number of tiles of an input (cheap: header only); raises CodecError for a bad input."""
    if mode == "compress":
        from ..format.raster_io import open_raster
        from ..format.tiling import TileGrid

        with open_raster(item.src) as ds:
            return len(TileGrid(ds.width, ds.height, tile, overlap))
    from ..format.container import ContainerReader

    with ContainerReader(item.src) as reader:
        item.result["model"] = reader.header.model.name
        return len(reader.entries)


def _check_mode(mode: str, overwrite: bool, skip_existing: bool) -> None:
    if mode not in MODES:
        raise BadInput(f"batch mode must be one of {', '.join(MODES)}, not '{mode}'")
    if overwrite and skip_existing:
        raise BadInput("give --overwrite or --skip-existing, not both")


def _plan(mode: str, inputs: list[str], out: Path | None, skip_existing: bool, tiling: CompressParams
          ) -> list[BatchItem]:
    """One item per input, with its output; duplicates, bad inputs and existing outputs settled."""
    items = [BatchItem(p) for p in expand_inputs(inputs, mode)]
    if not items:
        raise BadInput("no input files found")
    owners: dict[str, BatchItem] = {}
    for item in items:
        item.dst = output_for(item.src, mode, out)
        key = os.path.abspath(item.dst)
        if key in owners:
            item.status, item.error = "failed", f"same output {item.dst} as {owners[key].src}"
        elif os.path.abspath(item.src) == key:
            item.status, item.error = "failed", "output would replace the input"
        else:
            owners[key] = item
        if item.status == "pending" and skip_existing and item.dst.exists():
            item.status = "skipped"
        if item.status == "pending":
            try:
                item.tiles = _probe(item, mode, tiling.tile, tiling.overlap)
            except CodecError as exc:
                item.status, item.error = "failed", str(exc)
    return items


def _load_models(mode: str, todo: list[BatchItem], cparams: CompressParams, dparams: DecompressParams) -> None:
    """Load the weights once, up front (not from several threads at once)."""
    from ..codec.tile_coder import get_coder

    if mode == "compress":
        if todo:
            get_coder(cparams.model or DEFAULT_MODEL, cparams.device)  # bad weights: one clear error, not one per raster
        return
    models = {i.result.pop("model") for i in todo}  # from each container's header
    for model in {dparams.model} if dparams.model else models:
        try:
            get_coder(model, dparams.device)
        except CodecError:
            pass  # each raster that needs it reports it


def run_batch(mode: str, inputs: list[str], out_dir: str | Path | None = None, *,
              compress: CompressParams | None = None, decompress: DecompressParams | None = None,
              overwrite: bool = False, skip_existing: bool = False, mapper=None, concurrency: int | None = None,
              progress: Callable[[int, int, int, int], None] | None = None) -> dict:
    """Run ``mode`` on every input; returns a summary with one entry per input.

    ``compress`` / ``decompress``: the job parameters (their ``overwrite`` is replaced by
    ``overwrite``). ``concurrency``: rasters in progress at once (default:
    ``default_concurrency``). ``progress(tiles_done, tiles_total, rasters_finished, rasters_failed)``.
    """
    from ..codec.jobs import serial_map
    from ..usecases import compress as compress_one
    from ..usecases import decompress as decompress_one

    _check_mode(mode, overwrite, skip_existing)
    cparams = replace(compress or CompressParams(), overwrite=overwrite).validate()
    dparams = replace(decompress or DecompressParams(), overwrite=overwrite).validate()
    in_process = mapper is None or mapper is serial_map  # None: each use case's in-process mapper
    concurrency = 1 if in_process else (concurrency or default_concurrency(mode, mapper))
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    items = _plan(mode, inputs, out, skip_existing, cparams)
    todo = [i for i in items if i.status == "pending"]
    _load_models(mode, todo, cparams, dparams)

    lock = threading.Lock()
    state = {"tiles": 0, "finished": sum(i.status != "pending" for i in items),
             "failed": sum(i.status == "failed" for i in items)}
    total_tiles = sum(i.tiles for i in todo)
    stop = threading.Event()

    def report() -> None:
        if progress:
            progress(state["tiles"], total_tiles, state["finished"], state["failed"])

    def run_one(item: BatchItem) -> None:
        last = 0

        def tile_progress(done: int, total: int) -> None:  # compress and decode count tiles
            nonlocal last
            if stop.is_set():
                raise KeyboardInterrupt
            with lock:
                step = max(0, min(done, item.tiles) - last)  # clamp to this raster's share
                last += step
                state["tiles"] += step
                report()

        def phase_progress(phase: str, done: int, total: int) -> None:
            if phase in ("compress", "decode"):  # tiles; the enhancer's windows are not counted
                tile_progress(done, total)
            elif stop.is_set():
                raise KeyboardInterrupt

        t = time.perf_counter()
        try:
            if mode == "compress":
                item.result = compress_one(item.src, item.dst, cparams, progress=phase_progress, mapper=mapper)
            else:
                item.result = decompress_one(item.src, item.dst, dparams, progress=phase_progress, mapper=mapper)
                item.result["bytes"] = item.dst.stat().st_size
            item.result.setdefault("input_bytes", item.src.stat().st_size)
            item.status = "done"
        except CodecError as exc:
            item.status, item.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - one raster's bug must not stop the batch; it is reported
            item.status, item.error = "failed", f"{type(exc).__name__}: {exc}"
        item.result.setdefault("seconds", time.perf_counter() - t)
        with lock:
            state["tiles"] += item.tiles - last
            state["finished"] += 1
            state["failed"] += item.status == "failed"
            report()

    report()
    if todo:
        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))), thread_name_prefix="batch")
        try:
            for f in [pool.submit(run_one, item) for item in todo]:
                f.result()
        except BaseException:
            stop.set()  # running rasters stop at their next tile; their outputs are not written
            cancel = getattr(mapper, "cancel", None)
            if cancel is not None:
                cancel()  # and do not wait for the tiles in flight (their workers may be gone)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return summarize(mode, items, time.perf_counter() - t0)


def summarize(mode: str, items: list[BatchItem], seconds: float) -> dict:
    done = [i for i in items if i.status == "done"]
    return {
        "mode": mode,
        "rasters": len(items),
        "done": len(done),
        "failed": sum(i.status == "failed" for i in items),
        "skipped": sum(i.status == "skipped" for i in items),
        "seconds": seconds,
        "input_bytes": sum(i.result.get("input_bytes", 0) for i in done),
        "raw_bytes": sum(i.result.get("raw_bytes", 0) for i in done),
        "output_bytes": sum(i.result.get("bytes", 0) for i in done),
        "tiles": sum(i.tiles for i in done),
        "items": [i.as_dict() for i in items],
    }


# ---------------------------------------------------------------- reporting

fmt_bytes = format_bytes  # the one size formatter (core.options)


def summary_lines(summary: dict, max_ok: int = 20) -> list[str]:
    """Human summary: every failure, the successes when there are few, and the totals."""
    lines = []
    ok = [i for i in summary["items"] if i["status"] == "done"]
    for item in summary["items"]:
        if item["status"] == "failed":
            error = item["error"]
            if error.startswith(f"{item['input']}: "):  # most messages name the file already
                error = error[len(item["input"]) + 2:]
            lines.append(f"  FAILED  {item['input']}: {error}")
        elif item["status"] == "skipped":
            lines.append(f"  skipped {item['input']} ({item['output']} exists)")
        elif len(ok) <= max_ok:
            extra = f", {item['bpp']:.4f} bpp" if "bpp" in item else ""
            lines.append(f"  ok      {item['input']} -> {item['output']}: {fmt_bytes(item.get('bytes', 0))}"
                         f"{extra}, {item['seconds']:.1f} s")
    s = summary
    sizes = (sizes_text(s["raw_bytes"], s["output_bytes"], s["input_bytes"], "input files")
             if s["output_bytes"] and s["mode"] == "compress" else
             f"{fmt_bytes(s['input_bytes'])} -> {fmt_bytes(s['output_bytes'])}")
    lines.append(f"batch {s['mode']}: {s['done']} of {s['rasters']} rasters done, {s['failed']} failed, "
                 f"{s['skipped']} skipped; {s['tiles']} tiles; {sizes} in {s['seconds']:.1f} s")
    return lines


def progress_bar(quiet: bool):
    """``progress`` for ``run_batch``: one tqdm bar over all tiles, rasters done / failed after it."""
    import sys

    from tqdm import tqdm

    if quiet:
        return None, lambda: None
    bar = tqdm(total=0, desc="batch", unit="tile", file=sys.stderr)

    def update(done: int, total: int, finished: int, failed: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(f"{finished} rasters finished, {failed} failed", refresh=False)
        bar.refresh()

    return update, bar.close
