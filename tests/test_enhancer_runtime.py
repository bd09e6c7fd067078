"""The enhancer on OpenVINO: export, agreement with torch, fallback, and what decoding uses."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import torch

from core.enhance.runtime import OpenVinoEnhancer, enhancer_runtime
from core.enhance.windows import enhance_tile
from core.models import load_enhancer
from core.models.runtime import runtime_problem
from core.options import ISA_CAP_ENV, PRECISION_ENV, RUNTIME_ENV
from testdata import TEST_DATA

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(runtime_problem("openvino") is not None, reason="OpenVINO is not installed")]


@pytest.fixture(scope="module")
def lite():
    return load_enhancer("enhancer-lite")


def _crop(neon_rgb, h=120, w=136) -> np.ndarray:  # not multiples of the enhancer's padding
    with rasterio.open(neon_rgb) as ds:
        return ds.read(window=((0, h), (0, w))).astype(np.float32) / 255


@pytest.mark.parametrize("fidelity", [1.0, 0.0])
def test_openvino_f32_agrees_with_torch_at_any_size_and_fidelity(lite, neon_rgb, monkeypatch, fidelity):
    monkeypatch.setenv(PRECISION_ENV, "f32")
    runner = OpenVinoEnhancer(lite)
    x = _crop(neon_rgb)[None]
    with torch.inference_mode():
        ref = lite.net.enhance(torch.from_numpy(x), fidelity).numpy()
    out = runner.enhance(x, fidelity)
    assert out.shape == x.shape and runner.precision == "f32"
    assert np.abs(out - ref).max() < 1e-4


def test_decoding_enhances_on_openvino_only_when_asked(lite, neon_rgb, monkeypatch):
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    runner = enhancer_runtime(lite)
    assert isinstance(runner, OpenVinoEnhancer)
    unit = _crop(neon_rgb)
    monkeypatch.setenv(PRECISION_ENV, "f32")
    f32 = OpenVinoEnhancer(lite)
    with torch.inference_mode():
        ref = lite.net.enhance(torch.from_numpy(unit)[None], 1.0)[0].numpy()
    assert np.abs(enhance_tile(f32, unit, 1.0) - ref).max() < 1e-4
    for name in ("auto", "torch", "onnxruntime"):  # auto without int8: torch (memory); onnxruntime: not measured
        monkeypatch.setenv(RUNTIME_ENV, name)
        assert enhancer_runtime(lite) is lite.net


def test_a_missing_openvino_falls_back_to_torch_with_one_line(lite, monkeypatch, capsys):
    import core.enhance.runtime as er
    import core.models.runtime as rt

    monkeypatch.setattr(rt, "_NOTICES", set())
    monkeypatch.setattr(er, "runtime_problem", lambda name: "openvino is not installed (pip install openvino)")
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    assert enhancer_runtime(lite) is lite.net
    assert capsys.readouterr().err.strip().splitlines() == [
        "code-rsic: enhancer on openvino openvino is not installed (pip install openvino): using torch"]


def test_a_broken_export_falls_back_to_torch(lite, monkeypatch, capsys):
    import core.enhance.runtime as er
    import core.models.runtime as rt

    def broken(*a, **k):
        raise RuntimeError("export failed\ndetail")

    monkeypatch.setattr(rt, "_NOTICES", set())
    monkeypatch.setattr(er, "OpenVinoEnhancer", broken)
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    assert enhancer_runtime(lite) is lite.net
    assert capsys.readouterr().err.strip() == "code-rsic: enhancer on openvino failed: export failed: using torch"


def test_stand_in_networks_are_used_as_they_are(identity_enhancer):
    from core.models import get_enhancer

    loaded = get_enhancer(None)
    assert enhancer_runtime(loaded) is loaded.net


def test_compiled_window_shapes_are_bounded(lite):
    from core.enhance.runtime import MAX_COMPILED_SHAPES

    runner = OpenVinoEnhancer(lite)
    for side in (64, 96, 128, 64):
        out = runner.enhance(np.full((1, 3, side, side), 0.5, np.float32), 1.0)
        assert out.shape == (1, 3, side, side)
        assert len(runner._compiled) <= MAX_COMPILED_SHAPES
    assert (64, 64) in {k[:2] for k in runner._compiled}  # the most recent shape is kept


def test_windows_run_a_stream_per_thread_with_the_results_of_one_at_a_time(lite, neon_rgb, monkeypatch):
    """enhance_all runs up to ``threads`` windows at once (one stream each), in batches of one
    shape; every window comes out as enhance gives it alone, in order."""
    monkeypatch.setenv(PRECISION_ENV, "f32")
    runner = OpenVinoEnhancer(lite, threads=2, window=128)
    assert [len(requests) for _, requests in runner._compiled.values()] == [2]
    crop = _crop(neon_rgb, 128, 200)
    xs = [crop[None, :, :, :128], crop[None, :, :, 72:], crop[None, :, :96, :96], crop[None, :, :, 40:168]]
    together = runner.enhance_all(xs, 1.0)
    alone = [runner.enhance(x, 1.0) for x in xs]
    assert [y.shape for y in together] == [x.shape for x in xs]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    assert not np.array_equal(together[0], together[3])  # different windows, not one result repeated


def test_a_raster_with_edge_windows_compiles_one_shape_the_one_made_at_start(lite):
    """The network compiled when the runtime is made (where a failure can still fall back) is the
    one every window of a raster uses, edge windows included: no compile after the start."""
    from core.enhance import StripEnhancer
    from core.format.normalization import BandRange

    runner = OpenVinoEnhancer(lite, window=128)
    first = dict(runner._compiled)
    assert [k[:2] for k in first] == [(128, 128)]
    values = np.random.default_rng(0).integers(0, 256, (3, 150, 200)).astype(np.uint8)
    enh = StripEnhancer(runner, 1.0, 200, 150, [BandRange(0, 255)] * 3, "uint8", None, window=128, overlap=16)
    out = np.concatenate([v for _, v, _ in enh.run([(0, values, np.zeros((150, 200), bool))])], axis=1)
    assert out.shape == values.shape and len(enh.grid) == 4
    assert runner._compiled == first  # the same compiled network object, nothing else


# ---------------------------------------------------------------- int8 (training.quantize_enhancer)

@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """enhancer-lite (shipped without int8) quantised on eight fixture crops -> (path of the new
    file, original loaded)."""
    pytest.importorskip("nncf", reason="nncf is a test and training dependency (pip install -e .[test])")
    from training.quantize_enhancer import main

    folder = tmp_path_factory.mktemp("int8")
    with rasterio.open(TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif") as ds:
        img = ds.read()[:3, :256, :256]
    lq = np.stack([img[:, i : i + 64, j : j + 64] for i in (0, 96, 192) for j in (0, 96, 192)][:8])
    np.savez(folder / "pairs.npz", lq=lq, hq=lq)
    out = folder / "lite-int8.safetensors"
    assert main(["--enhancer", "enhancer-lite", "--pairs", str(folder / "pairs.npz"), "--count", "8",
                 "--out", str(out)]) == 0
    return out, load_enhancer("enhancer-lite")


def test_an_int8_network_rides_in_the_weights_file_beside_unchanged_tensors(quantized, neon_rgb):
    path, original = quantized
    loaded = load_enhancer(str(path))
    assert loaded.int8_ir is not None and loaded.int8_ir[0].startswith(b"<?xml")
    assert original.int8_ir is None
    ref = original.net.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.net.state_dict().items())
    runner = OpenVinoEnhancer(loaded)
    assert runner.precision == "int8"
    x = _crop(neon_rgb)[None]
    with torch.inference_mode():
        want = original.net.enhance(torch.from_numpy(x), 1.0).numpy()
    out = runner.enhance(x, 1.0)
    assert out.shape == x.shape
    assert np.abs(out - want).mean() < 0.02  # int8 is close to the float network, not equal
    assert np.abs(out - want).max() > 1e-4


def test_auto_enhances_on_openvino_int8_when_the_weights_carry_it(quantized, monkeypatch):
    loaded = load_enhancer(str(quantized[0]))
    monkeypatch.setenv(RUNTIME_ENV, "auto")
    runner = enhancer_runtime(loaded)
    assert isinstance(runner, OpenVinoEnhancer) and runner.precision == "int8"
    monkeypatch.setenv(RUNTIME_ENV, "torch")
    assert enhancer_runtime(loaded) is loaded.net


def test_f32_asked_uses_the_float_network_even_when_int8_is_there(quantized, neon_rgb, monkeypatch):
    path, original = quantized
    monkeypatch.setenv(PRECISION_ENV, "f32")
    runner = OpenVinoEnhancer(load_enhancer(str(path)))
    assert runner.precision == "f32"
    x = _crop(neon_rgb)[None]
    with torch.inference_mode():
        want = original.net.enhance(torch.from_numpy(x), 1.0).numpy()
    assert np.abs(runner.enhance(x, 1.0) - want).max() < 1e-4


def test_int8_runs_with_f32_around_it_where_the_kernels_are_capped_at_avx2(quantized, neon_rgb, tmp_path):
    """An AVX2-only host, as far as oneDNN is concerned (the cap is read when a process first
    uses it, so a fresh one): the int8 network compiles with its float layers in f32 and
    gives this process's int8 pixels, up to kernel rounding."""
    import subprocess
    import sys

    from testdata import ROOT

    path, x_file, y_file = str(quantized[0]), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    x = _crop(neon_rgb)[None]
    np.save(x_file, x)
    code = ("import numpy as np\nfrom core.models import load_enhancer\n"
            "from core.enhance.runtime import OpenVinoEnhancer\n"
            f"r = OpenVinoEnhancer(load_enhancer({path!r}), threads=1)\n"
            f"np.save({y_file!r}, r.enhance(np.load({x_file!r}), 1.0))\n"
            "print(r.precision, r.float_precision)")
    env = {**os.environ, ISA_CAP_ENV: "AVX2", PRECISION_ENV: "auto"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["int8", "f32"]
    here = OpenVinoEnhancer(load_enhancer(path), threads=1).enhance(x, 1.0)
    assert np.abs(np.load(y_file) - here).mean() < 0.01


def test_int8_asked_of_weights_without_it_says_so_in_one_line(lite):
    with pytest.raises(ValueError, match="no int8 network") as err:
        OpenVinoEnhancer(lite, precision="int8")
    assert "\n" not in str(err.value)


def test_enhanced_decoding_on_int8_never_imports_torch(quantized, tiny_weights, neon_rgb, tmp_path):
    """Compress, then decode with an int8 enhancer in a fresh process: torch (about 0.5 GB of
    memory and 1 s of start-up) is never imported, and the pixels are this process's. The
    first decode with a weights file exports its transforms with torch into the cache, so this
    process decodes first (alone, this test used to see that export in the fresh process)."""
    import subprocess
    import sys

    from core.tile_codec import main
    from testdata import ROOT

    path = str(quantized[0])
    out, a, b = tmp_path / "a.crsic", tmp_path / "a.tif", tmp_path / "b.tif"
    assert main(["compress", str(neon_rgb), "-o", str(out), "--model", tiny_weights, "--tile", "128",
                 "--quality", "1", "--quiet"]) == 0
    decode = ["decompress", str(out), "--model", tiny_weights, "--enhance", "--enhancer", path, "--quiet"]
    code = ("import sys\nfrom core.tile_codec import main\n"
            f"assert main({decode + ['-o', str(a)]!r}) == 0\n"
            "print('torch' in sys.modules)")
    assert main(decode + ["-o", str(b)]) == 0
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"
    with rasterio.open(a) as x, rasterio.open(b) as y, rasterio.open(neon_rgb) as src:
        assert x.crs == src.crs and x.transform == src.transform
        assert np.array_equal(x.read(), y.read())


def test_an_enhancer_given_by_path_keeps_its_default_fidelity(quantized, tmp_path):
    """A registered file given by its path is that enhancer (the same bytes: its fidelity and
    the qualities it enhances by default); an unregistered one defaults to the fidelity its
    int8 network serves, and without one to UNREGISTERED_FIDELITY."""
    import shutil

    from core.enhance.decode import default_enhancement
    from core.enhance.windows import enhance_array
    from core.models import save_enhancer
    from core.models.registry import DEFAULT_LAMBDAS, ENHANCERS, WEIGHTS_DIR
    from core.options import UNREGISTERED_FIDELITY

    copies = {}
    for name in ("enhancer-fast", "enhancer-lite"):
        copies[name] = tmp_path / f"copy-of-{name}.safetensors"
        shutil.copy(WEIGHTS_DIR / ENHANCERS[name].weights_file, copies[name])
        assert load_enhancer(str(copies[name])).default_fidelity == ENHANCERS[name].default_fidelity
        lambdas = DEFAULT_LAMBDAS
        for quality in (1, len(lambdas)):  # and the qualities it enhances by default
            assert (default_enhancement(quality, lambdas, str(copies[name]))
                    == default_enhancement(quality, lambdas, name))
    int8_path, original = quantized
    with_int8 = load_enhancer(str(int8_path))
    assert with_int8.default_fidelity == with_int8.int8_fidelity != UNREGISTERED_FIDELITY
    save_enhancer(original.net, tmp_path / "retrained.safetensors", {"note": "not registered"})
    assert load_enhancer(str(tmp_path / "retrained.safetensors")).default_fidelity == UNREGISTERED_FIDELITY
    # so a user who names the shipped file gets what the default gives, pixel for pixel
    img = np.random.default_rng(0).integers(0, 256, (96, 112, 3), dtype=np.uint8)
    assert np.array_equal(enhance_array(img, enhancer=str(copies["enhancer-fast"])), enhance_array(img))


def test_enhance_array_builds_its_runtime_once_for_many_images(monkeypatch):
    """An evaluation enhances image after image: the OpenVINO network is compiled once, not per
    image, and a changed runtime request gets its own."""
    import core.enhance.runtime as er
    import core.enhance.windows as ew

    built, build = [], er.enhancer_runtime

    def counting(loaded, window):
        built.append(window)
        return build(loaded, window)

    monkeypatch.setattr(er, "enhancer_runtime", counting)
    monkeypatch.setattr(ew, "_ARRAY_RUNTIMES", {})
    monkeypatch.setenv(RUNTIME_ENV, "auto")
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (96, 112, 3), dtype=np.uint8) for _ in range(2))
    first = ew.enhance_array(a)
    assert not np.array_equal(first, a)  # it enhanced
    ew.enhance_array(b)
    assert np.array_equal(ew.enhance_array(a), first)
    assert built == [256]
    assert isinstance(next(iter(ew._ARRAY_RUNTIMES.values()))[1], OpenVinoEnhancer)
    monkeypatch.setenv(RUNTIME_ENV, "torch")
    ew.enhance_array(a)
    assert built == [256, 256]
