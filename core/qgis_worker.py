"""Run one codec job for another program (the QGIS plugin) and report as JSON lines.

    python -m core.qgis_worker '{"action": "compress", "input": "a.tif", "output": "a.crsic"}'
    echo '{"action": "ping"}' | python -m core.qgis_worker

The job is one JSON object, from the first argument or from standard input. Standard
output carries one JSON object per line, and nothing else:

    {"type": "progress", "stage": "compress", "step": 1, "steps": 2, "done": 3, "total": 16}
    {"type": "ok", ...result...}                 last line on success (exit status 0)
    {"type": "error", "message": "one line"}     last line on failure (exit status 1)
    {"type": "canceled"}                         after SIGTERM / SIGINT (exit status 130)

Actions: ``ping``, ``info``, ``compress`` (optionally decoding the result again with
``decode_to`` and measuring PSNR), ``decompress`` (optionally a ``window``, a ``bbox``
in ``bbox_crs`` or an area of interest ``aoi``: GeoJSON or WKT, a file or the text, in
its own CRS or ``aoi_crs``), ``enhance``, ``psnr``, and the before/after comparisons:
``diff`` (``input`` vs ``other`` -> a difference GeoTIFF), ``tiles`` (a container's tile
footprints with bytes and bpp) and ``quality_map`` (the same with each tile's PSNR, and
LPIPS where the metric weights are set up, of ``decoded`` against ``source``). Decoding
enhances the pixels when the job's ``enhance`` is true, or, with ``"auto"``, at the
qualities the enhancer serves; false decodes plainly; absent takes ``core.options``'
default (``DecompressParams.enhance``, "auto", as the CLI). Every action is one call of
``core.usecases``, like the CLI and batch, with every output option (``overwrite``,
``cog``); defaults and checks come from ``core.options``. Outputs are
written atomically, so a worker that is terminated leaves no half-written file behind;
the process also ends by itself when its parent goes away.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import fields
from pathlib import Path

from . import __version__
from .errors import EXIT_INTERRUPTED, BadInput, CodecError, WeightsUnavailable, exit_now, report
from .format.json_values import json_safe
from .options import DEFAULT_DEVICE, DEFAULT_MODEL, CompressParams, DecompressParams, EnhanceParams

ACTIONS = ("ping", "selftest", "info", "compress", "decompress", "enhance", "psnr", "diff", "tiles", "quality_map")

_OUT_LOCK = threading.Lock()
_PROTOCOL_OUT = sys.stdout  # JSON lines only; anything else printed goes to stderr (see main)


class Canceled(BaseException):
    """Raised in the main thread when the worker is asked to stop."""


def emit(message: dict) -> None:
    line = json.dumps(json_safe(message), allow_nan=False)
    with _OUT_LOCK:
        _PROTOCOL_OUT.write(line + "\n")
        _PROTOCOL_OUT.flush()


class Steps:
    """Progress reporter over the stages of one job (e.g. compress, then decode)."""

    def __init__(self, names: list[str]):
        self.names = names
        self._callbacks: dict = {}

    def callback(self, name: str):
        """``progress(done, total)`` of stage ``name`` (one per stage: its rate limit is shared)."""
        if name not in self._callbacks:
            self._callbacks[name] = self._make(name)
        return self._callbacks[name]

    def phases(self, phase: str, done: int, total: int) -> None:
        """``progress(phase, done, total)``, ``decompress_enhanced``'s form: reported as that stage."""
        if phase in self.names:
            self.callback(phase)(done, total)

    def _make(self, name: str):
        step = self.names.index(name) + 1
        last = [-1.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < 0.05:  # at most ~20 lines a second
                return
            last[0] = now
            emit({"type": "progress", "stage": name, "step": step, "steps": len(self.names),
                  "done": int(done), "total": int(total)})

        return progress


# ---------------------------------------------------------------- the job's values

def _need(job: dict, key: str) -> str:
    value = job.get(key)
    if not value:
        raise BadInput(f"the job has no '{key}'")
    return str(value)


def _ints(value) -> list[int]:
    return [int(v) for v in value]


# How the job's JSON values become the fields' types; a field not listed (one added to
# core.options later) is taken as JSON gives it.
_CASTS = {
    "model": str, "device": str, "enhancer": str, "quality": float, "target_bpp": float, "fidelity": float,
    "tile": int, "overlap": int, "bands": _ints, "overwrite": bool, "cog": bool,
    "window": lambda v: tuple(int(x) for x in v), "bbox": lambda v: tuple(float(x) for x in v),
    "aoi": lambda v: v if isinstance(v, str) else json.dumps(v),  # a file, WKT / GeoJSON text, or a GeoJSON object
    "aoi_crs": str,
}


def _value(job: dict, key: str, default=None):
    """``job[key]`` cast to its field's type (absent, null or "": ``default``); a bad value is one line."""
    value = job.get(key)
    if value is None or value == "":
        return default
    try:
        return _CASTS.get(key, lambda v: v)(value)
    except (TypeError, ValueError):
        raise BadInput(f"the job's '{key}' is not valid: {value!r}") from None


def _params(cls, job: dict, **given):
    """``cls`` (a core.options dataclass) from the job's keys of the same names; what the job
    leaves out keeps the dataclass's default (core.options'), ``given`` overrides."""
    kwargs = {}
    for f in fields(cls):
        value = given[f.name] if f.name in given else _value(job, f.name)
        if value is not None:
            kwargs[f.name] = value
    return cls(**kwargs)


_DEFAULT_ENHANCE = next(f.default for f in fields(DecompressParams) if f.name == "enhance")


def _enhance_choice(job: dict) -> bool | str:
    """The job's ``enhance``: true, false or "auto"; absent (or null) means core.options' default."""
    enhance = job.get("enhance")
    if enhance is None:
        return _DEFAULT_ENHANCE
    return enhance if enhance == "auto" else bool(enhance)


def enhance_params(job: dict) -> EnhanceParams:
    """The enhancer's settings: ``fidelity``, ``enhancer``, ``device``, and ``enhance_window`` /
    ``enhance_overlap`` (``window`` and ``overlap`` mean the decode window and the tile overlap)."""
    return EnhanceParams(**{k: v for k, v in (
        ("fidelity", _value(job, "fidelity")), ("enhancer", _value(job, "enhancer")),
        ("device", _value(job, "device")), ("window", _value(job, "enhance_window")),
        ("overlap", _value(job, "enhance_overlap"))) if v is not None}).validate()


def compress_params(job: dict) -> CompressParams:
    return _params(CompressParams, job).validate()


def decompress_params(job: dict, **given) -> DecompressParams:
    """Every field of the job (output options ``overwrite`` and ``cog`` included); the fidelity
    only when enhancing (the plugin keeps its slider's value while enhancement is off)."""
    enhance = _enhance_choice(job)
    enhancement = enhance_params(dict(job, fidelity=None) if enhance is False else job)
    return _params(DecompressParams, job, enhance=enhance, enhancement=enhancement, **given).validate()


def _set_threads(job: dict) -> None:
    """Apply the job's thread count and check its device before any work starts."""
    import torch

    try:
        threads = int(job.get("threads") or 0)
    except (TypeError, ValueError):
        raise BadInput(f"the job's 'threads' is not valid: {job.get('threads')!r}") from None
    if threads > 0:
        from .codec.tile_coder import set_threads

        set_threads(threads)
    device = str(job.get("device") or DEFAULT_DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device '{device}' was requested but this worker has no usable CUDA GPU: choose cpu")


def _enhancer_installed() -> bool:
    """Whether this installation has the decoder-side enhancer code (cheap: imports nothing heavy)."""
    from importlib.util import find_spec

    return find_spec("core.enhance") is not None


# ---------------------------------------------------------------- actions

REQUIRED = ("numpy", "torch", "compressai", "rasterio", "safetensors")


def do_ping(job: dict) -> dict:
    """Cheap self-description (imports none of the heavy packages, only looks them up)."""
    from importlib.util import find_spec

    return {"version": __version__, "python": sys.executable, "python_version": sys.version.split()[0],
            "actions": list(ACTIONS), "enhance": _enhancer_installed(),
            "core": str(Path(__file__).resolve().parent),
            "missing": [name for name in REQUIRED if find_spec(name) is None]}


def do_selftest(job: dict) -> dict:
    """Code and decode one small tile with the shipped model: device, seconds, PSNR."""
    from .codec.selftest import self_test

    _set_threads(job)
    return dict(self_test(job.get("model") or DEFAULT_MODEL, job.get("device") or DEFAULT_DEVICE), version=__version__)


def _require_enhance_module() -> None:
    if not _enhancer_installed():
        raise WeightsUnavailable("enhancement is not available in this Code-RSIC installation (no core.enhance): "
                                 "update the worker environment or turn enhancement off")


def _decode_steps(job: dict) -> list[str]:
    if _enhance_choice(job) is False:
        return ["decode"]
    _require_enhance_module()
    return ["decode", "enhance"]


def do_info(job: dict) -> dict:
    from .usecases import info

    return info(_need(job, "input"))


def do_psnr(job: dict) -> dict:
    from .usecases import psnr

    return psnr(_need(job, "source"), _need(job, "decoded"), bands=_value(job, "bands"))


def do_compress(job: dict) -> dict:
    """Compress; with ``decode_to``, decode the result again (as ``decompress`` would) and
    measure its PSNR: ``core.usecases.roundtrip`` keeping the container."""
    from .usecases import compress, roundtrip

    src, dst = _need(job, "input"), _need(job, "output")
    decoded = job.get("decode_to")
    steps = Steps(["compress"] + (_decode_steps(job) + ["psnr"] if decoded else []))
    params = compress_params(job)
    decode_params = decompress_params(job, window=None, bbox=None, aoi=None) if decoded else None
    _set_threads(job)
    if not decoded:
        return compress(src, dst, params, progress=steps.phases)  # its result names the bands coded
    return roundtrip(src, params, container=dst, decoded=decoded, decode=decode_params, progress=steps.phases)


def do_decompress(job: dict) -> dict:
    from .usecases import decompress

    params = decompress_params(job)  # checks window and bbox together, before the CRS work
    steps = Steps(_decode_steps(job))
    _set_threads(job)
    return decompress(_need(job, "input"), _need(job, "output"), params, bbox_crs=job.get("bbox_crs"),
                      progress=steps.phases)


def do_enhance(job: dict) -> dict:
    from .usecases import enhance

    src, dst = _need(job, "input"), _need(job, "output")
    params = enhance_params(job)
    _set_threads(job)
    _require_enhance_module()
    return enhance(src, dst, params, overwrite=bool(job.get("overwrite")), cog=bool(job.get("cog")),
                   progress=Steps(["enhance"]).phases)


def do_diff(job: dict) -> dict:
    from .usecases import diff

    return diff(_need(job, "input"), _need(job, "other"), _need(job, "output"), bands=_value(job, "bands"),
                overwrite=bool(job.get("overwrite")), progress=Steps(["diff"]).phases)


def do_tiles(job: dict) -> dict:
    from .usecases import tile_map

    return tile_map(_need(job, "input"), _need(job, "output"), overwrite=bool(job.get("overwrite")))


def do_quality_map(job: dict) -> dict:
    """Per-tile PSNR (and LPIPS, unless the job says ``"lpips": false`` or its weights are not set up)."""
    from .evaluation.tile_metrics import tile_metrics
    from .usecases import quality_map

    metrics, missing = tile_metrics() if job.get("lpips", True) else ({}, {})
    _set_threads(job)
    result = quality_map(_need(job, "input"), _need(job, "source"), _need(job, "decoded"), _need(job, "output"),
                         metrics=metrics, overwrite=bool(job.get("overwrite")), progress=Steps(["quality"]).phases)
    return dict(result, missing=missing)


HANDLERS = {"ping": do_ping, "selftest": do_selftest, "info": do_info, "compress": do_compress, "decompress": do_decompress,
            "enhance": do_enhance, "psnr": do_psnr, "diff": do_diff, "tiles": do_tiles,
            "quality_map": do_quality_map}


# ---------------------------------------------------------------- process plumbing

def _on_signal(signum, frame):
    raise Canceled()


def _watch_parent(parent: int) -> None:
    """End this worker (cleanly, via SIGTERM) when the program that started it is gone."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def read_job(argv: list[str]) -> dict:
    text = argv[0] if argv and argv[0] != "-" else sys.stdin.read()
    try:
        job = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"the job is not valid JSON ({exc})") from None
    if not isinstance(job, dict):
        raise BadInput("the job must be a JSON object")
    action = job.get("action")
    if action not in HANDLERS:
        raise BadInput(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    return job


def _fail(exc: CodecError) -> int:
    """The error as the protocol's last line (and on stderr); the exit status of every front end."""
    emit({"type": "error", "message": " ".join(str(exc).split())})
    return report(exc)


def main(argv: list[str] | None = None) -> int:
    global _PROTOCOL_OUT
    argv = list(sys.argv[1:] if argv is None else argv)
    _PROTOCOL_OUT, sys.stdout = sys.stdout, sys.stderr  # stray prints cannot break the protocol
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if os.name == "posix":
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        job = read_job(argv)
        result = HANDLERS[job["action"]](job)
    except Canceled:
        emit({"type": "canceled"})
        return EXIT_INTERRUPTED
    except ImportError as exc:
        return _fail(CodecError(f"the worker Python {sys.executable} lacks a package Code-RSIC needs ({exc}): "
                                "install the project into it (pip install code-rsic)"))
    except CodecError as exc:
        return _fail(exc)
    except OSError as exc:  # the file system said no (permissions, disk full...)
        return _fail(CodecError(str(exc)))
    except Exception as exc:  # noqa: BLE001 - the caller gets one line, the traceback goes to stderr
        traceback.print_exc()
        return _fail(CodecError(f"unexpected {type(exc).__name__}: {exc}"))
    emit(dict(result, type="ok"))
    return 0


if __name__ == "__main__":
    exit_now(main())
