"""Runtimes for the float transforms: export, agreement with torch, fallback, cross-decoding.

The entropy path is integer under every runtime, so a container made with one runtime
decodes under another to identical symbols (the symbols CRC checks it) and to pixels
that differ only by float rounding; the same runtime writes the same bytes whatever the
thread count.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import rasterio

import golden
from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.codec.tile_coder import get_coder
from core.models import get_model
from core.models.runtime import (RUNTIMES, bf16_allowed, cpu_bf16, export_onnx, load_transforms, openvino_core, openvino_precision,
                                 runtime_problem)
from core.options import ISA_CAP_ENV, PRECISION_ENV, RUNTIME_CHOICES, RUNTIME_ENV, CompressParams
from testdata import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = [name for name in ("openvino", "onnxruntime") if runtime_problem(name) is None]


def test_runtimes_named_in_options_exist():
    assert set(RUNTIME_CHOICES) == {"auto", *RUNTIMES}
    assert runtime_problem("tensorrt").startswith("unknown runtime")


def test_the_fast_runtimes_are_installed():
    """OpenVINO is a dependency, ONNX Runtime one of the test extra (pyproject.toml): a test
    run without them is a broken install."""
    assert FAST == ["openvino", "onnxruntime"]


@pytest.mark.parametrize("name", FAST)
def test_exported_transforms_agree_with_torch(tiny_weights, tmp_path, name, monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "f32")
    loaded = get_model(tiny_weights)
    files = export_onnx(loaded, tmp_path)
    ref, other = RUNTIMES["torch"](loaded), RUNTIMES[name](loaded, files, 1)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 128, 192), dtype=np.float32)  # any height and width
    y = ref.analysis(x)
    assert y.shape[2:] == (8, 12)
    assert np.abs(other.analysis(x) - y).max() < 1e-3 * max(1.0, np.abs(y).max())
    yq = np.round(y)
    assert np.abs(other.synthesis(yq) - ref.synthesis(yq)).max() < 1e-3


def _native_bf16() -> bool:
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif("openvino" not in FAST, reason="OpenVINO is not installed")
def test_openvino_precision_is_bf16_only_where_native_and_asked(monkeypatch, tiny_weights, tmp_path):
    core = openvino_core()
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert openvino_precision(core) == ("bf16" if _native_bf16() else "f32")
    monkeypatch.setenv(PRECISION_ENV, "f32")
    assert openvino_precision(core) == "f32" and not cpu_bf16()
    loaded = get_model(tiny_weights)
    assert RUNTIMES["openvino"](loaded, export_onnx(loaded, tmp_path), 1).precision == "f32"


@pytest.mark.skipif("openvino" not in FAST, reason="OpenVINO is not installed")
def test_a_kernel_cap_below_bf16_computes_in_f32(monkeypatch):
    """With oneDNN's kernels capped below AVX512-BF16 the CPU still says "BF16", but the capped
    kernels cannot run it (OpenVINO then fails to compile the enhancer's bf16 Softmax)."""
    core = openvino_core()
    monkeypatch.setenv(PRECISION_ENV, "auto")
    for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI"):
        monkeypatch.setenv(ISA_CAP_ENV, cap)
        assert not bf16_allowed() and openvino_precision(core) == "f32" and not cpu_bf16()
    for cap in ("AVX512_CORE_AMX", "avx512_core_bf16", "ALL", ""):
        monkeypatch.setenv(ISA_CAP_ENV, cap)
        assert bf16_allowed() and openvino_precision(core) == ("bf16" if _native_bf16() else "f32")


_BRIDGE_PROBE = """
import sys, numpy as np, numpy.lib._version as version
import core.models.runtime as runtime
from core.codec.jobs import ThreadMapper
from core.codec.tile_coder import get_coder

under_lock = []  # pybind11 looks up NumPy's API once, from the binding's first array conversion
init = version.NumpyVersion.__init__
def spy(self, *args):
    caller = sys._getframe(1).f_code.co_filename  # the Python code that called into the binding
    if "openvino" in caller or caller == runtime.__file__:
        under_lock.append(runtime._BRIDGE_LOCK.locked())
    init(self, *args)
version.NumpyVersion.__init__ = spy
coder = get_coder(sys.argv[1])
y = np.zeros((1, coder.model.spec.M, 4, 4), np.float32)
out = list(ThreadMapper(2)(lambda level: coder.synthesis(y, level), [0, 1, 0, 1]))
print(type(coder.transforms).__name__, len(out), under_lock)
"""


@pytest.mark.skipif("openvino" not in FAST, reason="OpenVINO is not installed")
def test_openvino_sets_up_its_numpy_bridge_before_job_threads_infer(tiny_weights, monkeypatch):
    """Two job threads' first ``infer`` at once could deadlock in the binding's one-time
    NumPy set-up (a C++ static that runs Python code): ``openvino_core`` does it first, alone."""
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    res = subprocess.run([sys.executable, "-c", _BRIDGE_PROBE, tiny_weights], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().split(maxsplit=2) == ["OpenVinoTransforms", "4", "[True]"], res.stdout


@pytest.mark.skipif("openvino" not in FAST or not _native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_transforms_stay_close_to_torch_and_ignore_the_thread_count(tiny_weights, tmp_path, monkeypatch):
    """bf16 keeps 8 bits of mantissa: latents within a few hundredths (the quantiser rounds them
    to integers), pixels within 1/255; the analysis does not depend on the thread count, so
    containers stay byte-identical."""
    monkeypatch.setenv(PRECISION_ENV, "auto")
    loaded = get_model(tiny_weights)
    files = export_onnx(loaded, tmp_path)
    ref = RUNTIMES["torch"](loaded)
    one, two = (RUNTIMES["openvino"](loaded, files, n) for n in (1, 2))
    assert one.precision == "bf16"
    x = np.random.default_rng(1).random((1, 3, 128, 192), dtype=np.float32)
    y = ref.analysis(x)
    err = np.abs(one.analysis(x) - y)
    assert 0 < err.max() < 0.05 * max(1.0, np.abs(y).max())  # really bf16, and close
    assert np.array_equal(one.analysis(x), two.analysis(x))
    yq = np.round(y)
    assert np.abs(one.synthesis(yq) - ref.synthesis(yq)).max() < 1 / 255


def test_cli_rejects_an_unknown_precision(neon_rgb, tmp_path):
    res = subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(neon_rgb), "-o",
                          str(tmp_path / "a.crsic"), "--precision", "fp8"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0 and "invalid choice: 'fp8'" in res.stderr
    assert not (tmp_path / "a.crsic").exists()


def _decoded(path, model, runtime, monkeypatch, out) -> np.ndarray:
    monkeypatch.setenv(RUNTIME_ENV, runtime)
    decompress_raster(path, out, model=model)
    with rasterio.open(out) as ds:
        return ds.read().astype(np.int16)


@pytest.mark.parametrize("name", FAST)
def test_a_file_made_with_one_runtime_decodes_under_the_others(tiny_weights, tmp_path, monkeypatch, name, neon_rgb):
    monkeypatch.setenv(RUNTIME_ENV, name)
    assert get_coder(tiny_weights).transforms.name == name
    made = tmp_path / f"{name}.crsic"
    compress_raster(neon_rgb, made, CompressParams(model=tiny_weights, quality=2, tile=128))
    # identical symbols: a desync would raise; the pixels differ by float rounding at most
    pixels = {r: _decoded(made, tiny_weights, r, monkeypatch, tmp_path / f"{r}.tif") for r in ["torch", *FAST]}
    for r in FAST:
        assert np.abs(pixels[r] - pixels["torch"]).max() <= 1
        # f32 rounding flips under 1 % of the pixels by one level, bf16's (OpenVINO, auto) a few %
        bf16 = r == "openvino" and _native_bf16()
        assert (pixels[r] != pixels["torch"]).mean() < (0.05 if bf16 else 0.01)
    # and a torch-made file decodes under this runtime
    monkeypatch.setenv(RUNTIME_ENV, "torch")
    ref = tmp_path / "torch.crsic"
    compress_raster(neon_rgb, ref, CompressParams(model=tiny_weights, quality=2, tile=128))
    a = _decoded(ref, tiny_weights, name, monkeypatch, tmp_path / "x.tif")
    b = _decoded(ref, tiny_weights, "torch", monkeypatch, tmp_path / "y.tif")
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("name", FAST)
def test_same_runtime_same_bytes_whatever_the_threads(tiny_weights, tmp_path, neon_rgb, name):
    """Two processes with 1 and 2 threads write byte-identical containers."""
    digests = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}.crsic"
        subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(neon_rgb), "-o", str(out),
                        "--model", tiny_weights, "--tile", "128", "--quality", "2", "--runtime", name,
                        "--threads", threads, "--quiet"], check=True, cwd=ROOT, capture_output=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_golden_container_decodes_under_every_runtime(tmp_path, tiny_weights, monkeypatch):
    g = golden.GOLDENS[3]
    ref = _decoded(g.path, tiny_weights, "torch", monkeypatch, tmp_path / "torch.tif")
    assert golden.pixels_sha256(tmp_path / "torch.tif") == g.decoded_sha256  # torch is the reference
    for name in FAST:
        assert np.abs(_decoded(g.path, tiny_weights, name, monkeypatch, tmp_path / f"{name}.tif") - ref).max() <= 1


def test_a_missing_runtime_falls_back_to_torch_with_one_line(tiny_weights, monkeypatch, capsys):
    import core.models.runtime as rt

    monkeypatch.setattr(rt, "_NOTICES", set())
    monkeypatch.setattr(rt.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    transforms = load_transforms(get_model(tiny_weights))
    assert transforms.name == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["code-rsic: runtime openvino unavailable (openvino is not installed (pip install openvino)): "
                   "using torch"]


def test_a_broken_runtime_falls_back_to_the_next_then_torch(tiny_weights, monkeypatch, capsys):
    import core.models.runtime as rt

    monkeypatch.setattr(rt, "_NOTICES", set())

    def broken(*a, **k):
        raise RuntimeError("CPU plugin failed to compile\nmore detail")

    monkeypatch.setitem(rt.RUNTIMES, "openvino", broken)
    monkeypatch.setenv(RUNTIME_ENV, "auto")
    transforms = load_transforms(get_model(tiny_weights))
    assert transforms.name == "onnxruntime"
    monkeypatch.setitem(rt.RUNTIMES, "onnxruntime", broken)
    assert load_transforms(get_model(tiny_weights)).name == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["code-rsic: runtime openvino failed: CPU plugin failed to compile: using onnxruntime",
                   "code-rsic: runtime openvino failed: CPU plugin failed to compile; runtime onnxruntime failed: "
                   "CPU plugin failed to compile: using torch"]


def test_cli_rejects_an_unknown_runtime(neon_rgb, tmp_path):
    res = subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(neon_rgb), "-o",
                          str(tmp_path / "a.crsic"), "--runtime", "tensorrt"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0 and "invalid choice: 'tensorrt'" in res.stderr
    assert not (tmp_path / "a.crsic").exists()


def test_an_unknown_precision_in_the_environment_means_auto_with_one_line(monkeypatch, capsys):
    import core.models.runtime as rt

    monkeypatch.setattr(rt, "_NOTICES", set())
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    assert rt.requested_precision() == rt.requested_precision() == "auto"
    assert capsys.readouterr().err.strip().splitlines() == [
        "code-rsic: CODERSIC_PRECISION='fp8' is not one of auto, f32: using auto"]


@pytest.mark.parametrize("name", FAST)
def test_coding_runs_without_torch_once_the_cache_is_made(tiny_weights, tmp_path, neon_rgb, monkeypatch, name):
    """With the integer tables and the exported transforms in the cache, compress and plain
    decompress never import torch (about 1.1 s of every command's start-up), nor OpenVINO's
    usage telemetry (it sends events from a forked process: a network call, and a hang when
    the fork meets another thread's lock), and leave no thread behind."""
    monkeypatch.setenv(RUNTIME_ENV, name)
    coder = get_coder(tiny_weights)
    assert coder.transforms.name == name and coder.tables is not None  # the cache is made (torch, here)
    out, decoded = tmp_path / "a.crsic", tmp_path / "a.tif"
    code = ("import sys\nfrom core.tile_codec import main\n"
            f"assert main(['compress', {str(neon_rgb)!r}, '-o', {str(out)!r}, '--model', {tiny_weights!r}, "
            f"'--tile', '128', '--quality', '2', '--runtime', {name!r}, '--quiet']) == 0\n"
            f"assert main(['decompress', {str(out)!r}, '-o', {str(decoded)!r}, '--model', {tiny_weights!r}, "
            f"'--runtime', {name!r}, '--no-enhance', '--quiet']) == 0\n"
            "import threading\n"
            "print('torch' in sys.modules, sys.modules.get('openvino_telemetry') is not None, "
            "threading.active_count())")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False False 1"
    with rasterio.open(neon_rgb) as src, rasterio.open(decoded) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        pixels = dst.read().astype(np.int16)
    # the same pixels as this process's decoding (which had torch at hand), to float rounding
    assert np.abs(pixels - _decoded(out, tiny_weights, name, monkeypatch, tmp_path / "b.tif")).max() <= 1


def test_a_damaged_tables_cache_is_converted_again_with_one_line(tiny_weights, monkeypatch, capsys):
    import core.models.runtime as rt
    from core.codec.tile_coder import LazyModel
    from core.models.exact_entropy import ExactElicEntropy

    monkeypatch.setattr(rt, "_NOTICES", set())
    model = LazyModel(tiny_weights)
    good = rt.cached_tables(model)
    path = next(rt.cache_dir().glob(f"{model.sha256[:16]}-tables-*/tables.npz"))
    data = path.read_bytes()
    try:
        path.write_bytes(data[: len(data) // 2])
        again = rt.cached_tables(model)
    finally:
        path.write_bytes(data)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable" in err[0] and "converting again" in err[0]
    assert sorted(again.arrays) == sorted(good.arrays)
    assert all(np.array_equal(again.arrays[k], good.arrays[k]) for k in good.arrays)
    assert ExactElicEntropy(again).groups == ExactElicEntropy(good).groups
