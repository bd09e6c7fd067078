"""Pilot: the ELIC transforms in int8 (NNCF post-training quantisation on OpenVINO), for CPUs
that do not compute bf16 natively.

On such a CPU the transforms run in f32 and are most of the plain codec's time (an AVX2-only
host emulated, py-spy of a 4096 px raster: analysis 52 % of compress, synthesis 38 % of a
plain decode). This measures what int8 would buy and cost, without changing the codec:
- PSNR against the original of 256 px val crops, per rate level, with f32 transforms, with the
  synthesis in int8, and with both in int8 (the rate effect of an int8 analysis is not measured:
  the latents' flips are reported instead);
- seconds per 768 px tile on one thread, f32 (bf16 where native) against int8, natively and
  with the CPU narrowed to AVX2 (``codec_throughput.AVX2_ENV``), each in a process of its own.

    python benchmarks/int8_transforms.py --out results/int8_transforms_pilot.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import AVX2_ENV  # noqa: E402 (after the path: run as a script)


def crops(folder: str, count: int, seed: int, size: int = 256) -> list[np.ndarray]:
    """Random ``size`` px crops of ``count`` images spread over ``folder``, (1, 3, s, s) in [0, 1]."""
    from training.data import list_images, load_image

    paths = list_images([folder])
    paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).round()]
    rng, out = np.random.default_rng(seed), []
    for p in paths:
        a = load_image(p)
        if min(a.shape[1:]) < size:
            continue
        y, x = rng.integers(0, a.shape[1] - size + 1), rng.integers(0, a.shape[2] - size + 1)
        out.append(np.ascontiguousarray(a[None, :3, y : y + size, x : x + size], dtype=np.float32))
    return out


def tile_seconds(files: dict[str, str], precision: str) -> dict[str, float]:
    """Best of four: seconds per 768 px tile on one thread for each network file (stage in its name)."""
    import openvino as ov

    core, res = ov.Core(), {}
    for name, path in files.items():
        model = core.read_model(path)
        shape = [1, 3, 768, 768] if name.startswith("analysis") else [1, model.inputs[0].partial_shape[1].get_length(), 48, 48]
        model.reshape({0: shape})
        request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                     "INFERENCE_NUM_THREADS": 1}).create_infer_request()
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        request.infer([x])
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            request.infer([x])
            times.append(time.perf_counter() - t0)
        res[name] = round(min(times), 4)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="registry name (default: the shipped default model)")
    p.add_argument("--train", default=str(ROOT.parent / "shared/data/train"), help="calibration images")
    p.add_argument("--val", default=str(ROOT.parent / "shared/data/val"))
    p.add_argument("--calibration", type=int, default=48)
    p.add_argument("--crops", type=int, default=16)
    p.add_argument("--out")
    p.add_argument("--time", nargs=2, metavar=("PRECISION", "JSON"), help=argparse.SUPPRESS)  # the timing child
    args = p.parse_args(argv)
    if args.time:
        print(json.dumps(tile_seconds(json.loads(args.time[1]), args.time[0])))
        return 0

    import nncf
    import openvino as ov

    from core.codec.tile_coder import get_coder
    from core.compare.psnr import psnr_from_mse
    from core.models import load_model
    from core.models.runtime import cached_export, openvino_precision
    from core.options import DEFAULT_MODEL

    name = args.model or DEFAULT_MODEL
    onnx = {k: str(v) for k, v in cached_export(load_model(name, "cpu")).items()}
    coder, core = get_coder(name, "cpu"), ov.Core()
    f32 = {k: core.compile_model(v, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for k, v in onnx.items()}
    levels = coder.tables.arrays["log_gain"].shape[0]

    def latents(x, level, analysis):
        y = np.round(analysis(x)[0] * coder.gain(level))
        return (y * coder.gain(level, inverse=True)).astype(np.float32)

    train = crops(args.train, args.calibration, 0)
    calibration = {"analysis": train,
                   "synthesis": [latents(x, k % levels, f32["analysis"]) for k, x in enumerate(train)]}
    int8, folder = {}, Path(tempfile.mkdtemp())
    for stage, data in calibration.items():
        model = nncf.quantize(core.read_model(onnx[stage]), nncf.Dataset(data), subset_size=len(data),
                              preset=nncf.QuantizationPreset.MIXED)
        ov.save_model(model, str(folder / f"{stage}_int8.xml"), compress_to_fp16=False)
        int8[stage] = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def psnr(out, x):
        out = np.clip(out[..., : x.shape[2], : x.shape[3]], 0, 1)
        return psnr_from_mse(float(np.mean((out - x) ** 2)), peak=1.0)

    quality, val = [], crops(args.val, args.crops, 1)
    for level in range(levels):
        rows = {"f32": [], "int8 synthesis": [], "int8 both": [], "latents changed %": []}
        for x in val:
            y, y8 = latents(x, level, f32["analysis"]), latents(x, level, int8["analysis"])
            rows["f32"].append(psnr(f32["synthesis"](y)[0], x))
            rows["int8 synthesis"].append(psnr(int8["synthesis"](y)[0], x))
            rows["int8 both"].append(psnr(int8["synthesis"](y8)[0], x))
            rows["latents changed %"].append(100 * float(np.mean(y != y8)))
        quality.append({"level": level, **{k: round(float(np.mean(v)), 3) for k, v in rows.items()}})
        print(quality[-1], flush=True)

    files = {**{f"{k} f32": v for k, v in onnx.items()}, **{f"{k} int8": str(folder / f"{k}_int8.xml") for k in int8}}
    speed = {}
    for host, env, precision in (("native", {}, openvino_precision(core)), ("avx2", AVX2_ENV, "f32")):
        out = subprocess.run([sys.executable, __file__, "--time", precision, json.dumps(files)], check=True,
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT).stdout
        speed[host] = {"float_precision": precision, "seconds_per_768px_tile": json.loads(out.splitlines()[-1])}
        print(host, speed[host], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "model": name,
                                              "calibration_crops": len(train), "val_crops": len(val),
                                              "psnr_db": quality, "speed": speed}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
