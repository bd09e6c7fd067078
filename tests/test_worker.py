"""``python -m core.qgis_worker``: one JSON job in, JSON lines out (the QGIS plugin's worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_worker(job, stdin=True):
    argv = [sys.executable, "-m", "core.qgis_worker"] + ([] if stdin else [json.dumps(job)])
    p = subprocess.run(argv, input=json.dumps(job) if stdin else None, capture_output=True, text=True,
                       env=_env(), timeout=600)
    lines = [json.loads(line) for line in p.stdout.splitlines()]  # stdout holds JSON lines only
    return p.returncode, lines


def test_ping_is_cheap_and_complete():
    code, lines = run_worker({"action": "ping"}, stdin=False)
    assert code == 0 and len(lines) == 1
    ok = lines[0]
    assert ok["type"] == "ok" and ok["missing"] == [] and "compress" in ok["actions"]


def test_compress_decode_psnr(tmp_path, tiny_weights, neon_rgb):
    job = {"action": "compress", "input": str(neon_rgb), "output": str(tmp_path / "a.crsic"),
           "decode_to": str(tmp_path / "a.tif"), "model": tiny_weights, "quality": 1.5, "tile": 128, "overlap": 0,
           "threads": 1, "enhance": False}
    code, lines = run_worker(job)
    assert code == 0, lines
    progress, ok = lines[:-1], lines[-1]
    assert ok["type"] == "ok"
    assert {p["stage"] for p in progress} == {"compress", "decode", "psnr"}
    assert all(p["type"] == "progress" and 0 <= p["done"] <= p["total"] for p in progress)
    assert [p for p in progress if p["stage"] == "compress"][-1]["done"] == 16
    assert ok["bytes"] == (tmp_path / "a.crsic").stat().st_size and ok["bpp"] > 0 and ok["ratio"] > 1
    assert ok["input_bytes"] == neon_rgb.stat().st_size and ok["bands"] == [1, 2, 3]
    assert ok["psnr"] > 0 and ok["decode"]["tiles"] == 16
    with rasterio.open(tmp_path / "a.tif") as dec, rasterio.open(neon_rgb) as src:
        assert dec.crs == src.crs and dec.transform == src.transform and dec.shape == src.shape

    # a bbox in another CRS decodes only the tiles it touches
    with rasterio.open(neon_rgb) as src:
        from rasterio.warp import transform_bounds

        b = src.bounds
        bbox = transform_bounds(src.crs, "EPSG:4326", b.left, b.top - 10, b.left + 10, b.top)
    code, lines = run_worker({"action": "decompress", "input": str(tmp_path / "a.crsic"), "bbox": list(bbox),
                              "bbox_crs": "EPSG:4326", "output": str(tmp_path / "part.tif"), "model": tiny_weights})
    assert code == 0, lines
    ok = lines[-1]
    assert ok["tiles"] == 1 and ok["window"][:2] == [0, 0] and 100 <= ok["window"][2] <= 104


def test_decompress_enhance_auto_follows_the_quality_rule(tmp_path, tiny_weights, neon_rgb, monkeypatch):
    """"auto" enhances like `decompress`: not above the registry enhancer's qualities, always for other weights."""
    import dataclasses

    from core import qgis_worker as worker
    from core.enhance import enhancement_reason
    from core.models.files import model_info
    from core.format.container import ContainerReader
    from core.models import ENHANCERS, save_enhancer
    from core.models.hpin import Enhancer
    from core.models.vqgan import TINY_CONFIG

    container = tmp_path / "q2.crsic"
    code, lines = run_worker({"action": "compress", "input": str(neon_rgb), "output": str(container),
                              "model": tiny_weights, "quality": 2, "tile": 128, "threads": 1})
    assert code == 0, lines
    from core.options import DEFAULT_ENHANCER

    lambdas = model_info(tiny_weights).spec.lambdas
    spec = dataclasses.replace(ENHANCERS[DEFAULT_ENHANCER], max_default_lambda=lambdas[0])  # up to quality 1
    monkeypatch.setitem(ENHANCERS, DEFAULT_ENHANCER, spec)
    with ContainerReader(container) as reader:
        quality = reader.header.quality

    def not_enhanced_because(job):  # the worker's job -> decompress_enhanced's decision
        return enhancement_reason(worker.decompress_params(job), quality, lambdas)

    reason = not_enhanced_because({"enhance": "auto"})
    assert "quality <= 1" in reason and "quality 2" in reason
    from core.options import DecompressParams

    assert DecompressParams().enhance == "auto"  # absent: core.options' default, as the CLI's
    assert not_enhanced_because({}) == not_enhanced_because({"enhance": None}) == reason
    assert not_enhanced_because({"enhance": False}).startswith("turned off")
    assert not_enhanced_because({"enhance": True}) is None

    torch.manual_seed(0)
    weights = tmp_path / "tiny-enhancer.safetensors"
    save_enhancer(Enhancer(TINY_CONFIG).eval(), weights)
    base = {"action": "decompress", "input": str(container), "model": tiny_weights, "threads": 1}
    code, lines = run_worker(dict(base, output=str(tmp_path / "plain.tif"), enhance=False))
    assert code == 0 and lines[-1]["enhanced"] is False, lines
    code, lines = run_worker(dict(base, output=str(tmp_path / "enh.tif"), enhance="auto", enhancer=str(weights)))
    assert code == 0, lines
    assert lines[-1]["enhanced"] is True and {p["stage"] for p in lines[:-1]} == {"decode", "enhance"}
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "enh.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        assert not np.array_equal(a.read(), b.read())


@pytest.mark.parametrize("job, words", [
    ({"action": "compress", "input": "/nonexistent.tif", "output": "/tmp/x.crsic"}, "no such file"),
    ({"action": "explode"}, "unknown action"),
    ({"action": "compress", "input": "x.tif"}, "no 'output'"),
    ({"action": "enhance", "input": "x.tif", "output": "y.tif", "enhancer": "/no/enh.safetensors"},
     "enhancement is unavailable"),
])
def test_errors_are_one_json_line(job, words):
    code, lines = run_worker(job)
    assert code == 1 and len(lines) == 1
    assert lines[0]["type"] == "error" and words in lines[0]["message"] and "\n" not in lines[0]["message"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_is_a_clear_error(neon_rgb, tmp_path):
    code, lines = run_worker({"action": "compress", "input": str(neon_rgb), "output": str(tmp_path / "a.crsic"),
                              "device": "cuda"})
    assert code == 1 and "no usable CUDA GPU" in lines[-1]["message"]


def test_bad_json():
    p = subprocess.run([sys.executable, "-m", "core.qgis_worker", "{not json"], capture_output=True, text=True,
                       env=_env())
    assert p.returncode == 1 and json.loads(p.stdout)["message"].startswith("the job is not valid JSON")


def test_sigterm_stops_cleanly_without_files(tmp_path, tiny_weights, neon_rgb):
    with rasterio.open(neon_rgb) as src:
        data = np.tile(src.read(), (1, 2, 2))
        profile = src.profile | {"width": data.shape[2], "height": data.shape[1]}
    big = tmp_path / "big.tif"
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(data)
    job = {"action": "compress", "input": str(big), "output": str(tmp_path / "big.crsic"),
           "decode_to": str(tmp_path / "big.decoded.tif"), "model": tiny_weights, "quality": 1, "tile": 64,
           "overlap": 0, "threads": 1}
    p = subprocess.Popen([sys.executable, "-m", "core.qgis_worker", json.dumps(job)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=_env())
    first = json.loads(p.stdout.readline())
    assert first["type"] == "progress" and first["done"] < first["total"]
    p.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in p.stdout.read().splitlines()]
    assert p.wait(timeout=60) == 130
    assert rest[-1] == {"type": "canceled"}
    assert sorted(os.listdir(tmp_path)) == ["big.tif"]
