"""Run one codec job for another program (the QGIS plugin) and report as JSON lines.

    python -m core.worker '{"action": "compress", "input": "a.tif", "output": "a.crsic"}'
    echo '{"action": "ping"}' | python -m core.worker

The job is one JSON object, from the first argument or from standard input. Standard
output carries one JSON object per line, and nothing else:

    {"type": "progress", "stage": "compress", "step": 1, "steps": 2, "done": 3, "total": 16}
    {"type": "ok", ...result...}                 last line on success (exit status 0)
    {"type": "error", "message": "one line"}     last line on failure (exit status 1)
    {"type": "canceled"}                         after SIGTERM / SIGINT (exit status 130)

Actions: ``ping``, ``info``, ``compress`` (optionally decoding the result again with
``decode_to`` and measuring PSNR), ``decompress`` (optionally a ``window`` or a ``bbox``
in ``bbox_crs``), ``enhance`` and ``psnr``. Decoding enhances the pixels when the job's
``enhance`` is true, or, with ``"auto"``, at the qualities the enhancer serves (the CLI's
default); false or absent decodes plainly. Outputs are written atomically by the codec,
so a worker that is terminated leaves no half-written file behind; the process also
ends by itself when its parent goes away.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from . import __version__
from .errors import CodecError

ACTIONS = ("ping", "info", "compress", "decompress", "enhance", "psnr")

_OUT_LOCK = threading.Lock()
_PROTOCOL_OUT = sys.stdout  # JSON lines only; anything else printed goes to stderr (see main)


class Canceled(BaseException):
    """Raised in the main thread when the worker is asked to stop."""


def _clean(value):
    """JSON-safe copy: non-finite floats become null, paths and other objects strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def emit(message: dict) -> None:
    line = json.dumps(_clean(message), allow_nan=False)
    with _OUT_LOCK:
        _PROTOCOL_OUT.write(line + "\n")
        _PROTOCOL_OUT.flush()


class Steps:
    """Progress reporter over the stages of one job (e.g. compress, then decode)."""

    def __init__(self, names: list[str]):
        self.names = names

    def callback(self, name: str):
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


# ---------------------------------------------------------------- job helpers

def _need(job: dict, key: str) -> str:
    value = job.get(key)
    if not value:
        raise CodecError(f"the job has no '{key}'")
    return str(value)


def _set_threads(job: dict) -> None:
    """Apply the job's thread count and check its device before any work starts."""
    import torch

    threads = int(job.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    device = str(job.get("device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CodecError(f"device '{device}' was requested but this worker has no usable CUDA GPU: choose cpu")


def _enhancer_installed() -> bool:
    """Whether this installation has the decoder-side enhancer code (cheap: imports nothing heavy)."""
    from importlib.util import find_spec

    return find_spec("core.enhance_raster") is not None


def _require_enhancer(enhancer: str | None):
    """The enhancement module, or a one-line reason why enhancement cannot run."""
    if not _enhancer_installed():
        raise CodecError("enhancement is not available in this Code-RSIC installation (no core.enhance_raster): "
                         "update the worker environment or turn enhancement off")
    from . import enhance_raster

    reason = enhance_raster.enhancement_status(enhancer)
    if reason is not None:
        raise CodecError(f"enhancement is unavailable: {reason}; turn enhancement off or install the weights")
    return enhance_raster


def _fidelity(job: dict) -> float | None:
    return None if job.get("fidelity") is None else float(job["fidelity"])


def run_enhance(src: str, dst: str, job: dict, progress=None, ranges=None) -> dict:
    """Enhance a raster with the Code-RSIC enhancer (windows blended, georeferencing kept)."""
    mod = _require_enhancer(job.get("enhancer"))
    return mod.enhance_raster(src, dst, fidelity=_fidelity(job), enhancer=job.get("enhancer") or None,
                              device=job.get("device") or "cpu", overwrite=bool(job.get("overwrite")),
                              ranges=ranges, progress=progress)


def _bbox_in_raster_crs(container: str, bbox, bbox_crs):
    """A bbox given in another CRS (e.g. a QGIS map canvas) -> the raster's CRS."""
    if not bbox_crs:
        return bbox
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    from .container import ContainerReader

    with ContainerReader(container) as reader:
        raster_crs = reader.header.get("crs")
    if not raster_crs:
        raise CodecError(f"{container} has no CRS, so a map extent cannot be placed on it: give a pixel window")
    try:
        src, dst = CRS.from_user_input(bbox_crs), CRS.from_user_input(raster_crs)
    except CRSError as exc:
        raise CodecError(f"unknown CRS for the extent: {exc}") from None
    if src == dst:
        return bbox
    return list(transform_bounds(src, dst, *bbox, densify_pts=21))


# ---------------------------------------------------------------- actions

REQUIRED = ("numpy", "torch", "compressai", "rasterio", "safetensors")


def do_ping(job: dict, steps=None) -> dict:
    """Cheap self-description (imports none of the heavy packages, only looks them up)."""
    from importlib.util import find_spec

    return {"version": __version__, "python": sys.executable, "python_version": sys.version.split()[0],
            "actions": list(ACTIONS), "enhance": _enhancer_installed(),
            "core": str(Path(__file__).resolve().parent),
            "missing": [name for name in REQUIRED if find_spec(name) is None]}


def do_info(job: dict, steps=None) -> dict:
    from .codec import container_info

    return container_info(_need(job, "input"))


def do_psnr(job: dict, steps=None) -> dict:
    from .quality import raster_psnr

    return {"psnr": raster_psnr(_need(job, "source"), _need(job, "decoded"), bands=job.get("bands"))}


def _not_enhanced_because(container: str, job: dict) -> str | None:
    """None when the decoded pixels are to be enhanced, else why not.

    ``enhance``: true forces it (a missing enhancer is then an error); false or absent
    turns it off; ``"auto"`` follows ``decompress``'s default: enhance the qualities the
    enhancer serves, when it is installed.
    """
    enhance = job.get("enhance")
    if enhance != "auto":
        return None if enhance else "turned off"
    if not _enhancer_installed():
        return "enhancement is not available in this Code-RSIC installation"
    from .container import ContainerReader
    from .enhance_raster import auto_enhancement

    with ContainerReader(container) as reader:
        quality = float(reader.header["quality"])
    return auto_enhancement(quality, job.get("enhancer"))


def _decode(container: str, output: str, job: dict, steps: Steps, window=None, bbox=None) -> dict:
    """Decode (a window of) a container; the decoded pixels are enhanced as ``enhance`` says."""
    from .codec import decompress_raster

    kwargs = dict(window=window, bbox=bbox, model=job.get("model") or None, device=job.get("device") or "cpu",
                  progress=steps.callback("decode"))
    reason = _not_enhanced_because(container, job)
    if reason is not None:
        result = decompress_raster(container, output, overwrite=bool(job.get("overwrite")),
                                   cog=bool(job.get("cog")), **kwargs)
        if "enhance" in steps.names:
            steps.callback("enhance")(1, 1)
        result.update(enhanced=False, enhancement=reason)
        return result
    _require_enhancer(job.get("enhancer"))  # fail before spending time on decoding
    out = Path(output)
    if out.exists() and not job.get("overwrite"):
        raise CodecError(f"output exists: {out} (use --overwrite to replace it)")
    from .container import ContainerReader
    from .normalization import BandRange

    with ContainerReader(container) as reader:
        ranges = [BandRange(*r) for r in reader.header["ranges"]]
    plain = out.with_name(f".{out.name}.plain.tif")  # hidden, removed whatever happens
    try:
        result = decompress_raster(container, plain, overwrite=True, **kwargs)
        enhanced = run_enhance(str(plain), output, job, steps.callback("enhance"), ranges=ranges)
    finally:
        plain.unlink(missing_ok=True)
    result.update({"output": output, "enhanced": True, "fidelity": enhanced.get("fidelity"),
                   "enhance_seconds": enhanced.get("seconds")})
    return result


def _decode_steps(job: dict) -> list[str]:
    return ["decode", "enhance"] if job.get("enhance") else ["decode"]


def do_compress(job: dict, steps=None) -> dict:
    from .codec import CompressOptions, compress_raster
    from .tiling import DEFAULT_TILE
    from .models import DEFAULT_MODEL

    src, dst = _need(job, "input"), _need(job, "output")
    decoded = job.get("decode_to")
    names = ["compress"] + (_decode_steps(job) + ["psnr"] if decoded else [])
    steps = Steps(names)
    _set_threads(job)
    opts = CompressOptions(
        model=job.get("model") or DEFAULT_MODEL,
        quality=float(job.get("quality", 3.0)),
        target_bpp=None if job.get("target_bpp") in (None, "") else float(job["target_bpp"]),
        bands=[int(b) for b in job["bands"]] if job.get("bands") else None,
        tile=int(job.get("tile", DEFAULT_TILE)),
        overlap=int(job.get("overlap", 32)),
        device=job.get("device") or "cpu",
        overwrite=bool(job.get("overwrite")),
    )
    if decoded and Path(decoded).exists() and not opts.overwrite:  # check before the long part
        raise CodecError(f"output exists: {decoded} (use --overwrite to replace it)")
    result = compress_raster(src, dst, opts, progress=steps.callback("compress"))
    result["input"] = src
    result["input_bytes"] = os.path.getsize(src)
    result["bands"] = opts.bands
    if decoded:
        decode_job = dict(job, model=opts.model)
        result["decode"] = _decode(dst, decoded, decode_job, steps)
        result["decoded"] = decoded
        psnr_progress = steps.callback("psnr")
        psnr_progress(0, 1)
        from .codec import container_info
        from .quality import raster_psnr

        bands = container_info(dst)["bands"]
        result["bands"] = bands
        result["psnr"] = raster_psnr(src, decoded, bands=bands)
        psnr_progress(1, 1)
    return result


def do_decompress(job: dict, steps=None) -> dict:
    src, dst = _need(job, "input"), _need(job, "output")
    window, bbox = job.get("window"), job.get("bbox")
    if window and bbox:
        raise CodecError("give a window or a bbox, not both")
    if bbox:
        bbox = _bbox_in_raster_crs(src, [float(v) for v in bbox], job.get("bbox_crs"))
    if window:
        window = tuple(int(v) for v in window)
    _set_threads(job)
    result = _decode(src, dst, job, Steps(_decode_steps(job)), window=window, bbox=bbox)
    from .codec import container_info

    info = container_info(src)
    result.update({"input": src, "container_bytes": info["file_bytes"], "bpp": info["bpp"],
                   "ratio": info["ratio"], "bands": info["bands"], "source_name": info.get("source_name")})
    return result


def do_enhance(job: dict, steps=None) -> dict:
    src, dst = _need(job, "input"), _need(job, "output")
    _set_threads(job)
    result = run_enhance(src, dst, job, Steps(["enhance"]).callback("enhance"))
    result.setdefault("output", dst)
    return result


HANDLERS = {"ping": do_ping, "info": do_info, "compress": do_compress, "decompress": do_decompress,
            "enhance": do_enhance, "psnr": do_psnr}


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
        raise CodecError(f"the job is not valid JSON ({exc})") from None
    if not isinstance(job, dict):
        raise CodecError("the job must be a JSON object")
    action = job.get("action")
    if action not in HANDLERS:
        raise CodecError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    return job


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
        return 130
    except CodecError as exc:
        emit({"type": "error", "message": str(exc)})
        return 1
    except ImportError as exc:
        emit({"type": "error", "message": f"the worker Python {sys.executable} lacks a package Code-RSIC needs "
                                          f"({exc}): install the project into it (pip install code-rsic)"})
        return 1
    except Exception as exc:  # noqa: BLE001 - the caller gets one line, the traceback goes to stderr
        traceback.print_exc()
        emit({"type": "error", "message": f"unexpected {type(exc).__name__}: {exc}"})
        return 1
    emit(dict(result, type="ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
