"""Perceptual metrics for the per-tile quality map (``core.codec.tile_map``), when set up.

``tile_metrics()`` gives the metrics whose weights are in the local cache (see
``metric_setup``) as ``name -> fn(source, decoded)`` on uint8 (h, w, 3) images, and, for
the others, why not. Nothing heavy is imported until a metric runs, so the command line
and the worker can ask cheaply; they are the only front ends besides ``core.evaluate``
that import this module (``tests/test_layering.py`` allows exactly this one).
"""

from __future__ import annotations

from typing import Callable

from .weight_cache import SETUP_COMMAND, status

MIN_SIDE = 32  # LPIPS's AlexNet needs at least this many pixels per side
# metric -> the cache file it needs
TILE_METRICS = {"lpips": "alexnet.safetensors"}


def _lpips(a, b) -> float | None:
    if min(a.shape[0], a.shape[1]) < MIN_SIDE:
        return None
    from .metrics import lpips

    return lpips(a, b)


_FUNCTIONS: dict[str, Callable] = {"lpips": _lpips}


def tile_metrics(names: tuple[str, ...] = tuple(TILE_METRICS)) -> tuple[dict[str, Callable], dict[str, str]]:
    """(metrics that can run, {metric: why it cannot}) among ``names``."""
    have = status()
    ready, missing = {}, {}
    for name in names:
        if name not in TILE_METRICS:
            missing[name] = f"unknown tile metric {name!r} (known: {', '.join(TILE_METRICS)})"
        elif have.get(TILE_METRICS[name]) != "ok":
            missing[name] = f"{name} weights are not set up ({SETUP_COMMAND} setup)"
        else:
            ready[name] = _FUNCTIONS[name]
    return ready, missing
