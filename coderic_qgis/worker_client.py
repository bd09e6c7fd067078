"""Find a Python that can run Code-RSIC and run ``python -m core.qgis_worker`` jobs in it.

Nothing here imports QGIS, torch or rasterio: QGIS keeps its own GDAL and stays
responsive, the heavy work happens in the worker process. The worker speaks JSON lines
on its standard output (``progress`` / ``ok`` / ``error`` / ``canceled``, see
``core/qgis_worker.py``).
"""

from __future__ import annotations

import glob
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ENV_PYTHON = "CODERSIC_PYTHON"
# Environment variables of the QGIS process that would break another Python or mix
# QGIS's GDAL/PROJ data with the rasterio wheel's own.
_SCRUB = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONNOUSERSITE",
          "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "VIRTUAL_ENV")
SETUP_HINT = ("use Raster > Code-RSIC > Set up worker environment…, or set the worker Python in Raster > "
              "Code-RSIC > Settings (a Python where 'pip install code-rsic' was run; see docs/qgis.md)")


class WorkerError(Exception):
    """The worker could not be started or reported a failure (one-line message)."""


class WorkerCanceled(Exception):
    """The job was canceled and the worker stopped."""


def source_checkout() -> Path | None:
    """The Code-RSIC source tree this plugin lives in (plugin linked from a checkout), if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "core" / "qgis_worker.py").is_file() else None


def venv_python(folder: Path) -> Path | None:
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe", "venv/bin/python", "venv/Scripts/python.exe"):
        p = folder / rel
        if p.is_file():
            return p
    return None


@dataclass(frozen=True)
class WorkerCommand:
    """How to start the worker: the Python, an optional source folder for PYTHONPATH, and why."""

    python: str
    pythonpath: str | None = None
    found_by: str = ""

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def argv(self) -> list[str]:
        return [self.python, "-u", "-m", "core.qgis_worker", "-"]


def _probe(cmd: WorkerCommand, timeout: float = 60.0) -> dict | None:
    """Ping the worker; the ping result when this Python has Code-RSIC and its packages."""
    try:
        res = WorkerProcess(cmd).run({"action": "ping"}, timeout=timeout)
    except (WorkerError, WorkerCanceled, OSError):
        return None
    return res if not res.get("missing") else None


_FOUND: dict[tuple, WorkerCommand] = {}


def find_worker(python_setting: str = "", source_setting: str = "", probe: Callable = _probe) -> WorkerCommand:
    """The worker to use, in this order:

    1. the plugin setting (a Python executable), 2. the ``CODERSIC_PYTHON`` environment
    variable, 3. ``.venv/bin/python`` of the source checkout (the setting's source folder,
    or the checkout this plugin was linked from), 4. ``python3`` / ``python`` on PATH that
    can import ``core``. 1 and 2 are trusted as given; 3 and 4 are tried with a ping.
    """
    checkout = Path(source_setting).expanduser() if source_setting else source_checkout()
    pythonpath = str(checkout) if checkout and (checkout / "core").is_dir() else None
    explicit = [(python_setting, "plugin setting"), (os.environ.get(ENV_PYTHON, ""), f"${ENV_PYTHON}")]
    for value, why in explicit:
        if value:
            path = shutil.which(os.path.expanduser(value)) or os.path.expanduser(value)
            if not Path(path).is_file():
                raise WorkerError(f"the worker Python from the {why} does not exist: {value}; {SETUP_HINT}")
            return WorkerCommand(path, pythonpath, why)
    key = (pythonpath, os.environ.get("PATH", ""))
    if key in _FOUND:
        return _FOUND[key]
    candidates: list[tuple[str, str]] = []
    if checkout and venv_python(checkout):
        candidates.append((str(venv_python(checkout)), f"virtualenv of {checkout}"))
    for name in ("python3", "python"):
        path = shutil.which(name)
        if path and os.path.realpath(path) != os.path.realpath(sys.executable):
            candidates.append((path, f"{name} on PATH"))
    for path, why in candidates:
        cmd = WorkerCommand(path, pythonpath, why)
        if probe(cmd):
            _FOUND[key] = cmd
            return cmd
    raise WorkerError(f"no Python with Code-RSIC was found; {SETUP_HINT}")


def forget_found_workers() -> None:
    _FOUND.clear()


def job_outputs(job: dict) -> list[str]:
    return [str(job[k]) for k in ("output", "decode_to") if job.get(k)]


def remove_partial_files(path: str | Path) -> list[str]:
    """Delete the temporary files the codec writes next to ``path`` before renaming."""
    path = Path(path)
    removed = []
    pattern = str(path.parent / (glob.escape("." + path.name) + ".*"))
    for p in glob.glob(pattern):
        if p.endswith(".partial") or ".partial." in p or p.endswith(".plain.tif"):
            try:
                os.remove(p)
                removed.append(p)
            except OSError:
                pass
    return removed


@dataclass
class Progress:
    """One progress line of the worker, with the job's overall fraction done."""

    stage: str
    done: int
    total: int
    fraction: float
    raw: dict = field(default_factory=dict)


class WorkerProcess:
    """Runs one job in a worker subprocess, streaming its progress; cancel kills it."""

    def __init__(self, command: WorkerCommand):
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.stderr_tail: deque[str] = deque(maxlen=40)

    def _start(self, job: dict) -> subprocess.Popen:
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in QGIS's terminal is not ours
        cwd = self.command.pythonpath or str(Path.home())
        try:
            proc = subprocess.Popen(self.command.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.command.env(), cwd=cwd, text=True,
                                    encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            raise WorkerError(f"cannot start the worker Python {self.command.python}: {exc}; {SETUP_HINT}") from None
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
        except OSError:
            pass  # it died at once: reported from its exit status below
        return proc

    def _stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # the worker turns SIGTERM into a clean exit (temporary files removed)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def run(self, job: dict, progress: Callable[[Progress], None] | None = None,
            is_canceled: Callable[[], bool] | None = None, timeout: float | None = None) -> dict:
        """Run ``job``; returns the worker's result, raises WorkerError / WorkerCanceled."""
        existed = {p: Path(p).exists() for p in job_outputs(job)}
        self.proc = proc = self._start(job)
        lines: queue.Queue = queue.Queue()

        def pump(stream, sink, end_marker):
            for line in stream:
                sink(line.rstrip("\n"))
            if end_marker:
                sink(None)

        pumps = [threading.Thread(target=pump, args=(proc.stdout, lines.put, True), daemon=True),
                 threading.Thread(target=pump, args=(proc.stderr, self.stderr_tail.append, False), daemon=True)]
        for t in pumps:
            t.start()
        try:
            return self._follow(job, proc, lines, existed, progress, is_canceled, timeout)
        finally:
            if proc.poll() is not None:
                for t in pumps:
                    t.join(timeout=5)
                for stream in (proc.stdout, proc.stderr):
                    try:
                        stream.close()
                    except OSError:
                        pass

    def _follow(self, job, proc, lines, existed, progress, is_canceled, timeout) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = error = None
        canceled = False
        while True:
            if is_canceled and is_canceled():
                canceled = True
                break
            if deadline is not None and time.monotonic() > deadline:
                self._stop(grace=2)
                raise WorkerError(f"the worker did not answer within {timeout:.0f} s")
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                self.stderr_tail.append(line)  # something printed on stdout: keep it for diagnostics
                continue
            if not isinstance(msg, dict):
                continue
            kind = msg.get("type")
            if kind == "progress" and progress is not None:
                steps = max(int(msg.get("steps", 1)), 1)
                step = min(max(int(msg.get("step", 1)), 1), steps)
                total = max(int(msg.get("total", 1)), 1)
                frac = ((step - 1) + min(int(msg.get("done", 0)), total) / total) / steps
                progress(Progress(str(msg.get("stage", "")), int(msg.get("done", 0)), total, frac, msg))
            elif kind == "ok":
                result = {k: v for k, v in msg.items() if k != "type"}
            elif kind == "error":
                error = str(msg.get("message", "unknown error"))
            elif kind == "canceled":
                canceled = True
        if canceled:
            self._stop()
            self._clean_outputs(existed)
            raise WorkerCanceled("canceled")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._stop(grace=2)
        if error is not None:
            raise WorkerError(error)
        if result is None:
            self._clean_outputs({p: True for p in existed})  # only temporaries
            raise WorkerError(self._died_message(proc.returncode))
        return result

    def cancel(self) -> None:
        self._stop()

    def _clean_outputs(self, existed: dict[str, bool]) -> None:
        """After a cancel: no temporaries, and no outputs this job created."""
        for path, was_there in existed.items():
            remove_partial_files(path)
            if not was_there:
                try:
                    os.remove(path)
                except OSError:
                    pass

    def _died_message(self, code) -> str:
        tail = [ln.strip() for ln in self.stderr_tail if ln.strip()]
        last = tail[-1] if tail else ""
        if "No module named" in last:
            return f"the worker Python {self.command.python} cannot run Code-RSIC ({last}); {SETUP_HINT}"
        return f"the worker stopped unexpectedly (exit status {code}){': ' + last if last else ''}"


# ---------------------------------------------------------------- Test worker

SELFTEST_TIMEOUT_S = 300  # the first run of a fresh environment compiles and loads a lot


def test_worker(cmd: WorkerCommand, device: str = "", threads: int = 0) -> tuple[dict, str]:
    """*Test worker*: ping, then code and decode one small tile with the shipped model
    (``core.codec.selftest``). -> (the self-test's result, one line for the user); a broken
    install raises ``WorkerError`` with the worker's reason."""
    info = WorkerProcess(cmd).run({"action": "ping"}, timeout=60)
    if info.get("missing"):
        raise WorkerError(f"{cmd.python} lacks {', '.join(info['missing'])}: run 'pip install code-rsic' with it")
    job = {"action": "selftest", "threads": threads}
    if device:
        job["device"] = device
    test = WorkerProcess(cmd).run(job, timeout=SELFTEST_TIMEOUT_S)
    return test, (f"Code-RSIC {info.get('version')} in {cmd.python} (Python {info.get('python_version')}, "
                  f"torch {test.get('torch')}): coded and decoded a test tile on {test.get('device')} in "
                  f"{test.get('seconds', 0):.1f} s (PSNR {test.get('psnr', 0):.1f} dB); enhancement "
                  f"{'available' if info.get('enhance') else 'not available'}")
