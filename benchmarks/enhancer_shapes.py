"""Pilot for a slimmer enhancer student: FLOPs and OpenVINO time per 256 px window of
candidate shapes (random weights: the time does not depend on them), natively and with
the kernels narrowed to AVX2 (``codec_throughput.AVX2_ENV``), one thread.

    python benchmarks/enhancer_shapes.py --shapes "8 16 64 128" "8 16 48 96" --out results/enhancer_shapes.json

A shape is its channel widths at scales 1, 1/2, 1/4, 1/8; ``--tf-layers`` and
``--fuse-levels`` are those of enhancer-fast unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WINDOW = 256


def time_onnx(path: str, precision: str, rounds: int) -> float:
    """Median seconds per window of the ONNX enhancer at ``precision``, one thread (run in a
    child process, so that the ISA variables take effect)."""
    import time

    import numpy as np

    from core.models.runtime import openvino_core

    core = openvino_core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}
    model = core.read_model(path)
    model.reshape({"input": [1, 3, WINDOW, WINDOW], "fidelity": [1]})
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = [np.random.default_rng(0).random((1, 3, WINDOW, WINDOW), dtype=np.float32), np.ones(1, np.float32)]
    request.infer(x)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        request.infer(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", required=True, help='channel widths, e.g. "8 16 48 96"')
    p.add_argument("--tf-layers", type=int, default=2)
    p.add_argument("--fuse-levels", type=int, nargs="+", default=[2, 3])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # onnx path, precision, rounds
    args = p.parse_args()
    if args.child:
        print(json.dumps(time_onnx(args.child[0], args.child[1], int(args.child[2]))))
        return

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from codec_throughput import AVX2_ENV
    from core.enhance.runtime import export_enhancer_onnx
    from core.models.enhancer_config import EnhancerConfig
    from core.models.hpin import Enhancer
    from core.models.runtime import openvino_core, openvino_precision

    native = openvino_precision(openvino_core())
    hosts = (("native", {}, native), ("avx2", AVX2_ENV, "f32"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            channels = tuple(int(c) for c in shape.split())
            cfg = EnhancerConfig(channels=channels, tf_layers=args.tf_layers, fuse_levels=tuple(args.fuse_levels),
                                 input_skip=True)
            net = Enhancer(cfg).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                net(torch.rand(1, 3, WINDOW, WINDOW), 1.0)
            path = export_enhancer_onnx(net, Path(tmp) / "student.onnx")
            row = {"channels": list(channels), "tf_layers": cfg.tf_layers, "fuse_levels": list(cfg.fuse_levels),
                   "gflop_per_window": round(counter.get_total_flops() / 1e9, 3),
                   "parameters_m": round(sum(t.numel() for t in net.parameters()) / 1e6, 3)}
            for host, env, precision in hosts:
                out = subprocess.run([sys.executable, __file__, "--shapes", "-", "--child", str(path), precision,
                                      str(args.rounds)], env={**os.environ, **env}, capture_output=True, text=True,
                                     check=True)
                row[f"s_per_window_{host}_{precision}"] = round(json.loads(out.stdout.strip().splitlines()[-1]), 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/enhancer_shapes.py " + " ".join(
            f'"{a}"' if " " in a else a for a in sys.argv[1:]), "window": WINDOW, "threads": 1, "rows": rows},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
