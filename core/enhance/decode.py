"""Decode a container and enhance it on the way out: the one decode-then-enhance path.

The decoded strips come out of the stitcher and go straight through a ``StripEnhancer``
into the output GeoTIFF: no temporary raster on disk, memory bounded by a row of tiles
of one panel (a wide window is decoded and enhanced in vertical panels that read the
context their enhancer windows need, so the panels meet exactly).
The CLI, batch and the QGIS worker all call ``decompress_enhanced``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..codec.decompress import decoded_strips, open_container, open_plan, write_strip
from ..codec.jobs import serial_map
from ..errors import CodecError
from ..format.raster_io import describe_bands, raster_output
from ..format.tiling import Tally, TileGrid
from ..options import DecompressParams
from .runtime import enhancer_runtime

PhaseProgress = Callable[[str, int, int], None]  # (phase "decode" | "enhance", done, total)


def enhancement_status(enhancer: str | None = None) -> str | None:
    """None when the enhancer can run, else a one-line reason."""
    from ..models import enhancer_available, resolve_enhancer

    if enhancer_available(enhancer):
        return None
    try:
        path, _ = resolve_enhancer(enhancer)
        return f"enhancer weights {path.name} are not installed"
    except CodecError as exc:
        return str(exc)


def default_enhancement(quality: float, lambdas: tuple[float, ...], enhancer: str | None = None) -> str | None:
    """None when a container of this quality, coded by a model trained for ``lambdas``, is
    enhanced by default, else why not."""
    from ..models import resolve_enhancer

    try:
        _, spec = resolve_enhancer(enhancer)
    except CodecError:
        return None  # enhancement_status reports the problem
    limit = None if spec is None else spec.max_default_quality(lambdas)
    if limit is not None and quality > limit + 1e-9:
        return (f"{spec.name} enhances quality <= {limit:g} of this file's model by default, this file has "
                f"quality {quality:g}; --enhance forces it")
    return None


def auto_enhancement(quality: float, lambdas: tuple[float, ...], enhancer: str | None = None) -> str | None:
    """None when decoding left to its default enhances a container of this quality; else why not."""
    return default_enhancement(quality, lambdas, enhancer) or enhancement_status(enhancer)


def enhancement_reason(params: DecompressParams, quality: float, lambdas: tuple[float, ...]) -> str | None:
    """None when this decode enhances a container of ``quality`` coded by a model trained for
    ``lambdas``, else the one-line reason it does not."""
    if params.enhance is False:
        return "turned off (--no-enhance)"
    enhancer = params.enhancement.enhancer
    if params.enhance == "auto":
        return auto_enhancement(quality, lambdas, enhancer)
    return enhancement_status(enhancer)


def decompress_enhanced(src: str | Path, dst: str | Path, params: DecompressParams | None = None, *,
                        progress: PhaseProgress | None = None, mapper=serial_map) -> dict:
    """Decode ``src`` (or a window of it) to ``dst``, enhanced when ``params`` say so.

    Without enhancer weights (or for a quality the enhancer does not serve, with
    ``enhance="auto"``) the plain decode is written, with ``"enhanced": False`` and the
    reason in ``"enhancement"``.
    """
    params = (params or DecompressParams()).validate()
    ep = params.enhancement
    t0 = time.perf_counter()
    with open_container(src) as reader:
        plan = open_plan(reader, params)
        reason = enhancement_reason(params, plan.header.quality, plan.lambdas)
        enhancing = reason is None
        if enhancing:
            from ..models import get_enhancer

            loaded = get_enhancer(ep.enhancer, params.device)
            fidelity = loaded.default_fidelity if ep.fidelity is None else float(ep.fidelity)
            from .windows import StripEnhancer

            runner = enhancer_runtime(loaded, ep.window)
        panels = plan.panels(ep.window, ep.overlap) if enhancing else plan.panels()
        parts = [plan.columns(p.read0, p.read1) for p in panels]
        phase = (lambda name: (lambda done, total: progress(name, done, total))) if progress else (lambda name: None)
        decoding = Tally([len(part.tiles) for part in parts], phase("decode"))
        windows = Tally([len(TileGrid(part.width, part.height, ep.window, ep.overlap)) for part in parts],
                        phase("enhance"))
        enhance_seconds = 0.0
        with raster_output(dst, plan.profile(), params.overwrite, params.cog) as out:
            describe_bands(out, plan.header)
            for panel, part in zip(panels, parts):
                strips = decoded_strips(part, mapper, decoding.part())
                if enhancing:
                    enh = StripEnhancer(runner, fidelity, part.width, part.height, plan.ranges, plan.header.dtype,
                                        plan.header.nodata, ep.window, ep.overlap, windows.part())
                    strips = enh.run(strips)
                for row, values, invalid in strips:
                    write_strip(out, row, *panel.crop(values, invalid), plan.header, plan.masked, panel.x0)
                if enhancing:
                    enhance_seconds += enh.seconds
    seconds = time.perf_counter() - t0
    res = plan.summary(dst, seconds)
    res.update(enhanced=enhancing, enhancement=reason)
    if enhancing:
        res.update(fidelity=fidelity, enhance_seconds=enhance_seconds, decode_seconds=seconds - enhance_seconds)
    return res
