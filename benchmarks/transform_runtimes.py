"""Which runtime runs the float transforms fastest on this CPU: torch, ONNX Runtime, OpenVINO.

Exports the model's analysis (``g_a``) and synthesis (``g_s``) transforms with
``core.models.runtime.export_onnx``, then times each runtime on the shapes one format-3 tile
needs (a 768 px tile with its analysis margin, its latent with the synthesis margin), in
turns, one thread each, and reports the median seconds per call, the speed-up over torch
and the largest difference from torch's output (pixels in [0, 1], latents in their scale).

    python benchmarks/transform_runtimes.py --model elic-lite --repeat 5 --out results/transform_runtimes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="registry name or weights file (default: the shipped model)")
    p.add_argument("--tile", type=int, default=768)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime", "openvino"])
    p.add_argument("--out")
    args = p.parse_args(argv)

    import torch

    from core.models import get_model
    from core.models.runtime import RUNTIMES, export_onnx, runtime_problem
    from core.options import ANALYSIS_MARGIN, DEFAULT_MODEL, LATENT_MARGIN

    torch.set_num_threads(args.threads)
    loaded = get_model(args.model or DEFAULT_MODEL, "cpu")
    rng = np.random.default_rng(0)
    side = args.tile + 2 * ANALYSIS_MARGIN
    x = rng.random((1, 3, side, side), dtype=np.float32)
    with torch.inference_mode():
        y = loaded.net.g_a(torch.from_numpy(x)).numpy()
    lat = args.tile // 16 + 2 * LATENT_MARGIN
    y = np.round(y[:, :, :lat, :lat])
    inputs = {"analysis": x, "synthesis": np.ascontiguousarray(y)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = export_onnx(loaded, Path(tmp))
        engines = {}
        for name in args.runtimes:
            problem = runtime_problem(name)
            if problem:
                print(f"{name}: skipped ({problem})")
                continue
            engines[name] = RUNTIMES[name](loaded, files, args.threads)
        times = {(n, s): [] for n in engines for s in inputs}
        outputs = {}
        for _ in range(args.repeat):
            for stage, arr in inputs.items():
                for name, engine in engines.items():
                    t0 = time.perf_counter()
                    out = getattr(engine, stage)(arr)
                    times[(name, stage)].append(time.perf_counter() - t0)
                    outputs[(name, stage)] = out
        for stage in inputs:
            ref = np.median(times[("torch", stage)]) if ("torch", stage) in times else None
            for name in engines:
                sec = float(np.median(times[(name, stage)]))
                diff = float(np.abs(outputs[(name, stage)] - outputs[("torch", stage)]).max()) if ref else None
                row = dict(runtime=name, stage=stage, seconds=sec, speedup_vs_torch=ref / sec if ref else None,
                           max_abs_diff_vs_torch=diff, shape=list(inputs[stage].shape))
                rows.append(row)
                print(f"{stage:>9} {name:>12} {sec:7.3f} s  x{row['speedup_vs_torch'] or 0:.2f}  "
                      f"max |diff| {diff if diff is not None else float('nan'):.2e}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "model": loaded.spec.name,
                                              "threads": args.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
