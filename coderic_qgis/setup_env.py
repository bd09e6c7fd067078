"""One-click worker set-up: a Python >= 3.10, a virtual environment, torch and Code-RSIC in it.

*Settings > Set up worker environment…* runs these steps in a background task
(``setup_task.SetupTask``):

1. find a Python that can make virtual environments (QGIS's own where it is a full
   Python >= 3.10, else ``python3.x`` / ``python3`` / ``py -3`` on the machine),
2. ``python -m venv FOLDER`` (FOLDER is the user's choice; when it already holds an
   environment, the new one is made next to it and swapped in only at the end),
3. ``pip install`` torch and torchvision (the versions the project's wheel asks for),
4. ``pip install`` the project's wheel carried in the plugin zip (``wheels/``, with the
   shipped weights; from a source checkout: the checkout itself), whose other
   dependencies come from the package index,
5. *Test worker*: ping the new environment; only then is it made the worker Python.

A failure (no suitable Python, no network, a full disk...) is one clear sentence, and the
previous setting stays as it was. Nothing here imports QGIS (the tests use it without).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MIN_PYTHON = (3, 10)
WHEEL_DIR = Path(__file__).resolve().parent / "wheels"  # what coderic_qgis.build puts in the zip
TORCH_PACKAGES = ("torch", "torchvision")
NEEDED_SPACE = "about 6 GB"  # the most an environment takes (torch with its CUDA libraries); see TorchChoice
MIN_FREE_BYTES = 2 << 30  # less free space than this cannot hold torch: refused before starting
PROBE = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
MANUAL = "see docs/qgis.md for the manual steps"
WINDOWS = os.name == "nt"


class SetupError(Exception):
    """A set-up problem, as one sentence for the user."""


@dataclass(frozen=True)
class BasePython:
    argv: tuple[str, ...]  # how to start it (["py", "-3"] on Windows is a launcher)
    version: tuple[int, int]
    found_by: str

    @property
    def label(self) -> str:
        return f"{' '.join(self.argv)} (Python {self.version[0]}.{self.version[1]}, {self.found_by})"


def venv_python(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder / ("Scripts/python.exe" if WINDOWS else "bin/python")


def candidate_pythons() -> list[tuple[tuple[str, ...], str]]:
    """Pythons to try, QGIS's own first, then what PATH offers (newest first)."""
    found: list[tuple[tuple[str, ...], str]] = []
    own, base = Path(sys.executable), Path(sys.base_prefix)
    if own.name.lower().startswith("python") and os.path.realpath(own).startswith(os.path.realpath(base)):
        found.append(((str(own),), "QGIS's Python"))  # (inside QGIS, sys.executable may be any python3)
    for rel in ("python.exe", f"bin/python{sys.version_info[0]}.{sys.version_info[1]}", "bin/python3"):
        if (base / rel).is_file():
            found.append(((str(base / rel),), "QGIS's Python"))
    for name in ("python3.13", "python3.12", "python3.11", "python3.10", "python3", "python"):
        path = shutil.which(name)
        if path:
            found.append(((path,), f"{name} on PATH"))
    if WINDOWS and shutil.which("py"):
        found.append((("py", "-3"), "the py launcher"))
    seen, unique = set(), []
    for argv, why in found:
        key = tuple(os.path.realpath(a) if os.path.isabs(a) else a for a in argv)
        if key not in seen:
            seen.add(key)
            unique.append((argv, why))
    return unique


def probe_python(argv: tuple[str, ...], timeout: float = 30) -> tuple[tuple[int, int] | None, str]:
    """(version, "") when ``argv`` is a Python that can make venvs, else (version or None, why not)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    try:
        res = subprocess.run([*argv, "-c", PROBE], capture_output=True, text=True, timeout=timeout, env=env,
                             **_no_window())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"does not start ({exc})"
    match = re.search(r"(\d+)\.(\d+)\s*$", res.stdout)
    if res.returncode != 0 or not match:
        why = (res.stderr.strip().splitlines() or ["no version"])[-1]
        if "venv" in why or "ensurepip" in why:
            return None, "cannot make virtual environments (on Debian/Ubuntu: apt install python3-venv)"
        return None, f"is not usable ({why})"
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_PYTHON:
        return version, f"is Python {version[0]}.{version[1]}, Code-RSIC needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
    return version, ""


def find_base_pythons(extra: list[str] | None = None) -> tuple[list[BasePython], list[str]]:
    """(usable Pythons, one line per rejected candidate)."""
    usable, rejected = [], []
    for argv, why in [((p,), "chosen") for p in (extra or [])] + candidate_pythons():
        version, problem = probe_python(argv)
        if problem:
            rejected.append(f"{' '.join(argv)} {problem}")
        else:
            usable.append(BasePython(tuple(argv), version, why))
    return usable, rejected


def no_python_message(rejected: list[str]) -> str:
    tried = "; ".join(rejected) if rejected else "no python3 on PATH"
    return (f"No Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer that can make virtual environments was found "
            f"({tried}). Install one (python.org, or your package manager with venv support) and try again, "
            f"or choose its executable here; {MANUAL}")


# ---------------------------------------------------------------- what is installed

def project_source(wheel_dir: Path = WHEEL_DIR) -> Path:
    """The project's wheel carried by the plugin, else the source checkout the plugin runs from."""
    wheels = sorted(wheel_dir.glob("code_rsic-*.whl")) if wheel_dir.is_dir() else []
    if wheels:
        return wheels[-1]
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "core").is_dir():
        return checkout
    raise SetupError("this plugin carries no Code-RSIC wheel: install it from the zip made by "
                     f"'python3 -m coderic_qgis.build' (without --no-wheel); {MANUAL}")


def requirements(source: Path) -> list[str]:
    """The project's dependencies (Requires-Dist of the wheel, or pyproject.toml's list)."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as zf:
            meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = zf.read(meta).decode("utf-8") if meta else ""
        return [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    return re.findall(r'"([^"]+)"', block.group(1)) if block else []


def torch_requirements(source: Path) -> list[str]:
    wanted = [r for r in requirements(source) if re.split(r"[\s<>=!~;\[(]", r, 1)[0].lower() in TORCH_PACKAGES]
    return wanted or list(TORCH_PACKAGES)


# ---------------------------------------------------------------- which torch

# PyTorch's own index of CPU-only builds: on Linux the package index's torch is the CUDA build
# (about 3 GB of NVIDIA libraries and triton), useless without an NVIDIA GPU.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Measured (benchmarks/worker_env_size.py -> results/worker_env_size.json): torch 2.13 CPU wheel
# 0.19 GB download, 0.70 GB installed; the CUDA build with its libraries 4.5 GB installed; the
# project's other dependencies 0.72 GB installed (0.18 GB of it OpenVINO, a 0.06 GB download).
SIZES = {"cpu-only": ("about 0.5 GB", "about 1.4 GB"), "with-cuda": ("about 3 GB", "about 6 GB"),
         "default": ("about 0.5 GB", "about 1.4 GB")}
BUILD_NAMES = {"cpu-only": "CPU-only build", "with-cuda": "CUDA build", "default": "the index's default build"}


@dataclass(frozen=True)
class TorchChoice:
    """Which torch the set-up installs, from where, and how much it costs."""

    build: str  # "cpu-only": PyTorch's CPU index; "with-cuda": the package index's CUDA build; "default": its own
    index_options: tuple[str, ...]  # pip options of the torch step
    fallback: bool  # when the CPU index cannot be reached, install from the default index instead
    reason: str

    @property
    def download(self) -> str:
        return SIZES[self.build][0]

    @property
    def disk(self) -> str:
        return SIZES[self.build][1]

    @property
    def what(self) -> str:
        return f"PyTorch, {BUILD_NAMES[self.build]} ({self.reason})"

    def text(self) -> str:
        """What the set-up says before anything is downloaded."""
        return f"{self.what}: downloads {self.download}, takes {self.disk} on disk"


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is installed (its kernel module, or nvidia-smi on the PATH)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def choose_torch(system: str | None = None, machine: str | None = None, nvidia: bool | None = None) -> TorchChoice:
    """Linux without an NVIDIA GPU: the CPU-only build from PyTorch's CPU index (falling back
    to the default index); Linux with one: the default index's CUDA build; Windows and macOS:
    the default index, whose torch is already CPU-only (or Apple's MPS) there."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system != "Linux":
        return TorchChoice("default", (), False, f"the package index's torch for {system} has no CUDA libraries")
    nvidia = has_nvidia_gpu() if nvidia is None else nvidia
    if nvidia:
        return TorchChoice("with-cuda", (), False, "an NVIDIA GPU was found")
    if machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        return TorchChoice("default", (), False, f"no CPU-only build for {machine}")
    return TorchChoice("cpu-only", ("--index-url", CPU_INDEX), True, "no NVIDIA GPU was found")


# ---------------------------------------------------------------- the steps

@dataclass
class Step:
    name: str
    label: str
    argv: list[str]
    weight: float  # share of the whole set-up's progress bar
    fallback: list[str] | None = None  # run instead when argv fails (not when canceled)


@dataclass
class SetupPlan:
    base: BasePython
    target: Path  # where the environment ends up
    work: Path  # where it is built (== target unless an environment is there already)
    source: Path  # the wheel (or checkout) installed
    pip_options: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    torch: TorchChoice | None = None
    # Test worker codes and decodes a small tile (False: ping only, for an index of stand-ins)
    test_tile: bool = True

    @property
    def python(self) -> Path:
        return venv_python(self.target)

    @property
    def swap(self) -> bool:
        return self.work != self.target


def plan_setup(base: BasePython, target: str | Path, source: Path | None = None,
               pip_options: list[str] | None = None, torch: TorchChoice | None = None) -> SetupPlan:
    target = Path(target).expanduser().resolve()
    source = source or project_source()
    torch = torch or choose_torch()
    if target.exists() and not target.is_dir():
        raise SetupError(f"{target} is a file, not a folder: choose a folder for the environment")
    busy = target.is_dir() and any(target.iterdir())
    if busy and not (target / "pyvenv.cfg").is_file():
        raise SetupError(f"{target} is not empty and holds no Python environment: choose an empty or new folder")
    work = target.with_name(target.name + ".partial") if busy else target
    if not target.parent.is_dir():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"cannot create {target.parent}: {exc.strerror}") from None
    free = shutil.disk_usage(target.parent).free
    if free < MIN_FREE_BYTES:
        raise SetupError(f"only {free / 2**30:.1f} GB are free on the disk of {target.parent}; the worker "
                         f"environment needs {torch.disk}: free some space or choose a folder on another disk")
    options = list(pip_options or [])
    py = str(venv_python(work))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "on"]
    # A user's own --index-url (or --no-index) wins over the CPU index.
    own_index = any(o in ("--index-url", "-i", "--no-index") for o in options)
    torch_options = [] if own_index else list(torch.index_options)
    plan = SetupPlan(base, target, work, source, options, torch=torch)
    torch_argv = [*pip, *options, *torch_requirements(source)]
    plan.steps = [
        Step("venv", f"Creating the environment in {target}", [*base.argv, "-m", "venv", str(work)], 0.05),
        Step("torch", f"Installing PyTorch, {BUILD_NAMES[torch.build]} ({torch.download} to download)",
             [*pip, *options, *torch_options, *torch_requirements(source)], 0.6,
             fallback=torch_argv if torch_options and torch.fallback else None),
        Step("project", f"Installing Code-RSIC ({source.name}) and its dependencies", [*pip, *options, str(source)],
             0.3),
    ]
    return plan


def pip_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _no_window() -> dict:
    return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if WINDOWS else {}


# ---------------------------------------------------------------- reading pip

_SIZE = re.compile(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)\s*(kB|MB|GB)")
_RAW = re.compile(r"^Progress (\d+) of (\d+)")


class PipProgress:
    """Turns pip's output lines into a fraction of the step (0..1) and a short status."""

    def __init__(self):
        self.packages = 0
        self.fraction = 0.0
        self.status = ""

    def feed(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        raw, size = _RAW.match(text), _SIZE.search(text)
        if text.startswith(("Collecting ", "Processing ")):
            self.packages += 1
            self.status = text
            self.fraction = max(self.fraction, min(0.8, 0.05 * self.packages))
        elif text.startswith("Downloading "):
            self.status = text
        elif raw or size:
            done, total = (float(raw.group(1)), float(raw.group(2))) if raw else (float(size.group(1)),
                                                                                    float(size.group(2)))
            if total > 0:
                base = min(0.8, 0.05 * max(self.packages - 1, 0))
                self.fraction = max(self.fraction, base + (min(0.8, 0.05 * self.packages) - base) * done / total)
        elif text.startswith("Installing collected packages"):
            self.status, self.fraction = text[:120], max(self.fraction, 0.85)
        elif text.startswith("Successfully installed"):
            self.status, self.fraction = "installed", 1.0


_DISK = re.compile(r"No space left on device|Errno 28|ENOSPC|not enough space on the disk|Disk quota exceeded", re.I)
_NETWORK = re.compile(r"Failed to establish a new connection|Temporary failure in name resolution|"
                      r"Name or service not known|Network is unreachable|ProxyError|ConnectTimeout|"
                      r"Read timed out|SSLError|Could not fetch URL|nodename nor servname", re.I)
_NOT_FOUND = re.compile(r"(?:Could not find a version that satisfies the requirement|"
                        r"No matching distribution found for) ([^\s(]+)")


def explain_failure(step: Step, lines: list[str], returncode: int | None, plan: SetupPlan) -> str:
    """One sentence for a failed step, from pip's (or venv's) output."""
    text = "\n".join(lines)
    if _DISK.search(text):
        return (f"The disk is full: {step.label.lower()} needs more space in {plan.target.parent} (the environment "
                f"takes {plan.torch.disk if plan.torch else NEEDED_SPACE}); free some space or choose a folder on another disk")
    if _NETWORK.search(text):
        return ("pip could not reach the package index (no network, or a proxy is needed): connect to the "
                "internet, or give pip options such as --proxy or --index-url, and try again; " + MANUAL)
    missing = _NOT_FOUND.search(text)
    if missing:
        py = f"{plan.base.version[0]}.{plan.base.version[1]}"
        return (f"pip found no {missing.group(1)} for Python {py} in the package index (no network, or no build "
                f"of it for this Python or platform); give pip options such as --index-url, or choose another "
                f"Python; {MANUAL}")
    if step.name == "venv" and re.search(r"ensurepip|venv", text):
        return (f"{' '.join(plan.base.argv)} cannot make virtual environments (on Debian/Ubuntu: apt install "
                f"python3-venv); choose another Python; {MANUAL}")
    errors = [ln.strip() for ln in lines if ln.strip().startswith(("ERROR", "error"))] or \
             [ln.strip() for ln in lines if ln.strip()]
    last = errors[-1][:300] if errors else "no output"
    return f"{step.label} failed (exit status {returncode}): {last}"
