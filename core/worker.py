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
in ``bbox_crs``), ``enhance`` and ``psnr``. Outputs are written atomically by the codec,
so a worker that is terminated leaves no half-written file behind; the process also
ends by itself when its parent goes away.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from . import __version__
from .errors import CodecError

ACTIONS = ("ping", "info", "compress", "decompress", "enhance", "psnr")

_OUT_LOCK = threading.Lock()


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
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


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
    threads = int(job.get("threads") or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _enhance_cli_available() -> bool:
    from . import tile_codec

    return "enhance" in getattr(tile_codec, "SUBCOMMANDS", ())


def _require_enhance() -> None:
    if not _enhance_cli_available():
        raise CodecError("enhancement is not available in this Code-RSIC installation "
                         "('python -m core.tile_codec enhance' is missing): update the worker environment "
                         "or turn enhancement off")


def run_enhance(src: str, dst: str, job: dict, progress=None) -> dict:
    """Enhance a decoded raster with ``python -m core.tile_codec enhance`` (in a child process)."""
    _require_enhance()
    cmd = [sys.executable, "-m", "core.tile_codec", "enhance", src, "-o", dst, "--json", "--quiet"]
    if job.get("fidelity") is not None:
        cmd += ["--fidelity", str(float(job["fidelity"]))]
    if job.get("enhance_model"):
        cmd += ["--model", str(job["enhance_model"])]
    if job.get("device"):
        cmd += ["--device", str(job["device"])]
    if job.get("overwrite"):
        cmd.append("--overwrite")
    if progress:
        progress(0, 1)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    if child.returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {child.returncode}"
        raise CodecError(f"enhancement failed: {why.removeprefix('error: ')}")
    if progress:
        progress(1, 1)
    for line in reversed(out.splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    return {"output": dst}


def _decompress_accepts_enhance() -> bool:
    from .codec import decompress_raster

    return "enhance" in inspect.signature(decompress_raster).parameters


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
            "actions": list(ACTIONS), "enhance": _enhance_cli_available(),
            "core": str(Path(__file__).resolve().parent),
            "missing": [name for name in REQUIRED if find_spec(name) is None]}


def do_info(job: dict, steps=None) -> dict:
    from .codec import container_info

    return container_info(_need(job, "input"))


def do_psnr(job: dict, steps=None) -> dict:
    from .quality import raster_psnr

    return {"psnr": raster_psnr(_need(job, "source"), _need(job, "decoded"), bands=job.get("bands"))}


def _decode(container: str, output: str, job: dict, steps: Steps, window=None, bbox=None) -> dict:
    from .codec import decompress_raster

    enhance = bool(job.get("enhance"))
    kwargs = dict(window=window, bbox=bbox, model=job.get("model") or None, device=job.get("device") or "cpu",
                  overwrite=bool(job.get("overwrite")), progress=steps.callback("decode"))
    if job.get("cog"):
        kwargs["cog"] = True
    if _decompress_accepts_enhance():  # the codec enhances itself: tell it what we want
        kwargs["enhance"] = enhance
        if enhance and job.get("fidelity") is not None:
            kwargs["fidelity"] = float(job["fidelity"])
        return decompress_raster(container, output, **kwargs)
    if not enhance:
        return decompress_raster(container, output, **kwargs)
    _require_enhance()  # fail before spending time on decoding
    plain = Path(output).with_name(f".{Path(output).name}.plain.tif")
    kwargs["overwrite"] = True
    try:
        result = decompress_raster(container, plain, **kwargs)
        enhanced = run_enhance(str(plain), output, job, steps.callback("enhance"))
    finally:
        plain.unlink(missing_ok=True)
    result.update({"output": output, "enhanced": True, "enhance": enhanced})
    return result


def _decode_steps(job: dict) -> list[str]:
    separate = bool(job.get("enhance")) and not _decompress_accepts_enhance()
    return ["decode", "enhance"] if separate else ["decode"]


def do_compress(job: dict, steps=None) -> dict:
    from .codec import CompressOptions, compress_raster
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
        tile=int(job.get("tile", 512)),
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
    argv = list(sys.argv[1:] if argv is None else argv)
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
