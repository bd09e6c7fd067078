"""Inference runtimes for the float transforms (analysis ``g_a``, synthesis ``g_s``).

torch is the reference (and the training path). The transforms can be exported to ONNX
(``export_onnx``) and run by ONNX Runtime or OpenVINO. Only the float transforms move:
the entropy path stays integer (``exact_entropy``), so symbols, and therefore containers'
decodability, do not depend on the runtime.

Each runtime is a class ``(loaded model, exported files, threads)`` with ``analysis(x)``
and ``synthesis(y)`` on float32 NCHW numpy arrays; ``runtime_problem`` says in one line
why a runtime cannot be used here (``None`` when it can).

``load_transforms`` picks the runtime a process codes with: the one named by
``CODERSIC_RUNTIME`` (the CLI's ``--runtime`` sets it, so worker processes inherit it),
or with ``auto`` the fastest one installed (``RUNTIME_PREFERENCE``). The ONNX files are
exported once per weights into a cache folder. A runtime that is missing or fails falls
back to torch with a one-line notice on stderr.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..options import BF16_ISA_MARKS, ISA_CAP_ENV, PRECISION_CHOICES, PRECISION_ENV, RUNTIME_CHOICES, RUNTIME_ENV, RUNTIME_PREFERENCE

OPSET = 17
STAGES = ("analysis", "synthesis")
CACHE_ENV = "CODERSIC_CACHE_DIR"


def _module(stage: str, net):
    return net.g_a if stage == "analysis" else net.g_s


def export_onnx(loaded, folder: str | Path) -> dict[str, Path]:
    """Write ``analysis.onnx`` and ``synthesis.onnx`` (float32, any height and width) of a
    loaded model into ``folder`` -> {stage: path}."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = loaded.net
    channels = {"analysis": 3, "synthesis": int(loaded.spec.M)}
    files = {}
    for stage in STAGES:
        module = _module(stage, net).float().eval()
        dummy = torch.zeros(1, channels[stage], 64 if stage == "analysis" else 4, 64 if stage == "analysis" else 4)
        path = folder / f"{stage}.onnx"
        with torch.inference_mode():
            torch.onnx.export(module, (dummy,), str(path), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}},
                              opset_version=OPSET, dynamo=False)
        files[stage] = path
    return files


def runtime_problem(name: str) -> str | None:
    """None when runtime ``name`` can run here, else why not (one line)."""
    if name not in RUNTIMES:
        return f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})"
    package = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(name)
    if package and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package})"
    return None


class TorchTransforms:
    """The reference: the model's own torch modules."""

    name = "torch"

    def __init__(self, loaded, files=None, threads: int | None = None):
        self.net = loaded.net

    def _run(self, stage: str, x: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.net.parameters()).device
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            return _module(stage, self.net)(t.contiguous(memory_format=torch.channels_last)).contiguous().cpu().numpy()

    def analysis(self, x: np.ndarray) -> np.ndarray:
        return self._run("analysis", x)

    def synthesis(self, y: np.ndarray) -> np.ndarray:
        return self._run("synthesis", y)


_THREADS: list[int] = []  # the process's thread count, once set (``set_threads``)


def set_threads(threads: int) -> None:
    """The process's thread count (the CLI's ``--threads``): the transforms' runtime's, the
    BLAS's that runs the integer entropy path, and torch's (now, or when it is imported)."""
    from threadpoolctl import threadpool_limits

    _THREADS[:] = [threads]
    threadpool_limits(limits=threads, user_api="blas")  # stays in effect for the process
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _threads(threads: int | None) -> int:
    """The thread count to run with: ``threads``, else the process's (``set_threads``), else
    torch's where it is loaded, else the cores this process may use (torch's default)."""
    if threads:
        return threads
    if _THREADS:
        return _THREADS[0]
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    return available_cores()


def available_cores() -> int:
    """CPU cores this process may use (cgroup/affinity aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _PerThreadCount:
    """A runtime's compiled networks, one set per thread count (float sums may depend on it,
    and in-process work must match workers that run with their own count)."""

    def __init__(self, files: dict[str, Path], threads: int | None = None):
        self.files, self.fixed, self._by_threads = files, threads, {}
        self._lock = threading.Lock()  # job threads (``ThreadMapper``) compile a count once
        self._compiled()  # fail here, where the caller can fall back, not in the middle of a job

    def _compiled(self) -> dict:
        n = _threads(self.fixed)
        if n not in self._by_threads:
            with self._lock:
                if n not in self._by_threads:
                    self._by_threads[n] = {stage: self._compile(self.files[stage], n) for stage in STAGES}
        return self._by_threads[n]

    def analysis(self, x: np.ndarray) -> np.ndarray:
        return self._run(self._compiled()["analysis"], np.ascontiguousarray(x, dtype=np.float32))

    def synthesis(self, y: np.ndarray) -> np.ndarray:
        return self._run(self._compiled()["synthesis"], np.ascontiguousarray(y, dtype=np.float32))


class OnnxRuntimeTransforms(_PerThreadCount):
    """ONNX Runtime's CPU execution provider, all graph optimisations, sequential execution."""

    name = "onnxruntime"

    def __init__(self, loaded, files: dict[str, Path], threads: int | None = None):
        super().__init__(files, threads)

    def _compile(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _run(self, session, x: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": x})[0]


class OpenVinoTransforms(_PerThreadCount):
    """OpenVINO's CPU plugin on the same ONNX files (latency hint; bf16 or f32, see
    ``options.PRECISION_ENV``)."""

    name = "openvino"

    def __init__(self, loaded, files: dict[str, Path], threads: int | None = None, precision: str | None = None):
        self.core = openvino_core()
        self.precision = precision or openvino_precision(self.core)
        # a compiled network runs one request at a time: one per job thread (``ThreadMapper``)
        self._requests = threading.local()
        super().__init__(files, threads)

    def _compile(self, path: Path, threads: int):
        # compiled networks are cached beside the ONNX files: later processes start faster
        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads, "CACHE_DIR": str(Path(path).parent / "openvino")}
        return self.core.compile_model(self.core.read_model(str(path)), "CPU", config)

    def _run(self, compiled, x: np.ndarray) -> np.ndarray:
        requests = self._requests.__dict__
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        return requests[id(compiled)].infer(x)[compiled.output(0)]


def openvino_core():
    """A new OpenVINO ``Core``, OpenVINO imported without its usage telemetry.

    ``import openvino`` otherwise starts openvino-telemetry, which is opt-out (no consent file
    counts as consent) and sends each event from a forked process: a network call no GIS user
    asked for, and a fork while other threads hold the BLAS's or the runtime's locks, which
    hung decoding. With its module blocked, openvino uses its own no-op stub."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # its import now fails: openvino falls back
    import openvino as ov

    _warm_numpy_bridge(ov)
    return ov.Core()


_BRIDGE_LOCK = threading.Lock()
_bridge_warm = False


def _warm_numpy_bridge(ov) -> None:
    """Make OpenVINO's binding set up its NumPy bridge now, on one thread.

    Its first tensor-to-array conversion fills a C++ static that runs Python code (pybind11
    looks up NumPy's API): two job threads (``ThreadMapper``) converting for the first time
    at once deadlock there, one holding the static's guard and waiting for the GIL, the other
    holding the GIL and waiting for the guard (seen as a rare hang of a two-thread decode,
    reproduced with four threads' first ``infer`` at once)."""
    global _bridge_warm
    with _BRIDGE_LOCK:
        if not _bridge_warm:
            tensor = ov.Tensor(np.zeros(1, np.float32))
            tensor.data[:] = tensor.data  # both directions infer's data dispatch takes
            _bridge_warm = True


def requested_precision() -> str:
    return _env_choice(PRECISION_ENV, PRECISION_CHOICES)


def bf16_allowed() -> bool:
    """``auto`` is asked and no ``options.ISA_CAP_ENV`` keeps the kernels below bf16."""
    cap = os.environ.get(ISA_CAP_ENV, "").strip().upper()
    return requested_precision() == "auto" and (not cap or any(mark in cap for mark in BF16_ISA_MARKS))


def openvino_precision(core) -> str:
    """The inference precision OpenVINO computes the transforms in here: bf16 where the CPU
    does it natively and ``bf16_allowed``, else f32."""
    if bf16_allowed() and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "bf16"
    return "f32"


def cpu_bf16() -> bool:
    """Whether torch computes in bf16 here (the enhancer): ``auto`` is asked and the CPU does
    bf16 natively (oneDNN says so: AVX512-BF16 or AMX) and ``bf16_allowed``."""
    if not bf16_allowed():
        return False
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


RUNTIMES = {cls.name: cls for cls in (TorchTransforms, OnnxRuntimeTransforms, OpenVinoTransforms)}


def cache_dir() -> Path:
    """Where exported transforms are kept: ``$CODERSIC_CACHE_DIR`` or ``~/.cache/code-rsic``."""
    env = os.environ.get(CACHE_ENV)
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "code-rsic") / "transforms"


def cached_files(folder_name: str, names: dict[str, str], write) -> dict[str, Path]:
    """Files of the cache folder ``folder_name`` (key -> path), written on first use by
    ``write(folder)`` into a temporary folder renamed into place: atomic, and a process that
    loses the race uses the winner's files."""
    folder = cache_dir() / folder_name
    files = {key: folder / name for key, name in names.items()}
    if not all(f.exists() for f in files.values()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".export-"))
        try:
            write(tmp)
            try:
                tmp.rename(folder)
            except OSError:  # another process exported it meanwhile
                if not all(f.exists() for f in files.values()):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return files


def cached_export(loaded) -> dict[str, Path]:
    """The model's ONNX transforms from the cache, exported on first use."""
    return cached_files(f"{loaded.sha256[:16]}-opset{OPSET}", {stage: f"{stage}.onnx" for stage in STAGES},
                        lambda folder: export_onnx(loaded, folder))


def cached_tables(loaded):
    """The model's integer tables (``core.models.exact_entropy``) from the cache, converted
    from its network (torch) on first use."""
    from .exact_entropy import SCHEME, TABLES_VERSION, IntegerTables

    def integer_tables(net):
        from .tables_from_torch import integer_tables  # torch: only to convert

        return integer_tables(net)

    def write(folder: Path) -> None:
        integer_tables(loaded.net).save(folder / "tables.npz")

    files = cached_files(f"{loaded.sha256[:16]}-tables-{SCHEME}-v{TABLES_VERSION}", {"tables": "tables.npz"}, write)
    try:
        return IntegerTables.load(files["tables"])
    except Exception as exc:  # noqa: BLE001 - a damaged cache file: convert again, in memory
        notice(f"integer tables cache {files['tables']} unreadable ({failure(exc)}): converting again")
        return integer_tables(loaded.net)


def failure(exc: Exception) -> str:
    """``failed: <the first line of the error>``, for a fallback notice."""
    text = str(exc).strip()
    return f"failed: {text.splitlines()[0][:160] if text else type(exc).__name__}"


_NOTICES: set[str] = set()


def notice(text: str) -> None:
    """One line on stderr, once per process."""
    if text not in _NOTICES:
        _NOTICES.add(text)
        print(f"code-rsic: {text}", file=sys.stderr)


def _env_choice(env: str, choices: tuple[str, ...]) -> str:
    """The choice named by ``$env`` (default ``auto``); anything else is ``auto``, with a notice."""
    name = os.environ.get(env, "auto") or "auto"
    if name not in choices:
        notice(f"{env}={name!r} is not one of {', '.join(choices)}: using auto")
        return "auto"
    return name


def requested_runtime() -> str:
    return _env_choice(RUNTIME_ENV, RUNTIME_CHOICES)


def load_transforms(loaded, device: str = "cpu"):
    """The transforms this process runs ``loaded`` with (see the module docstring); their
    ``name`` says which runtime it is."""
    requested = requested_runtime()
    if str(device) != "cpu" or requested == "torch":
        if requested not in ("auto", "torch"):
            notice(f"runtime {requested} runs on the CPU only: using torch on {device}")
        return TorchTransforms(loaded)
    failed = []
    for name in RUNTIME_PREFERENCE if requested == "auto" else (requested,):
        if name == "torch":
            break
        problem = runtime_problem(name)
        if problem is None:
            try:
                transforms = RUNTIMES[name](loaded, cached_export(loaded))
            except Exception as exc:  # a broken install or export must not stop the job
                problem = failure(exc)
            else:
                if failed:
                    notice(f"{'; '.join(failed)}: using {name}")
                return transforms
        failed.append(f"runtime {name} {problem if problem.startswith('failed') else f'unavailable ({problem})'}")
    if failed:
        notice(f"{'; '.join(failed)}: using torch")
    return TorchTransforms(loaded)
