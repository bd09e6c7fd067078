"""Enhancers' int8 networks side by side: seconds per window, and how closely each follows
its float network.

For each weights file (it must carry an int8 network, ``training.quantize_enhancer``):
- seconds per 256 px window on one thread, and with a stream per thread as ``StripEnhancer``
  runs them (``OpenVinoEnhancer.enhance_all``), in interleaved rounds so that host drift hits
  every file alike (median and best round);
- the PSNR of its int8 output against its float network (f32) on centre crops of the
  validation images, at the fidelity int8 serves.

    python benchmarks/enhancer_int8.py --weights OLD.safetensors core/weights/enhancer-fast.safetensors \\
        --val ../shared/data/val --out results/enhancer_int8_transformer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models.runtime import _threads  # noqa: E402 (after the path: run as a script)


def window_seconds(runner, x: np.ndarray, fidelity: float, windows: int) -> float:
    """Seconds per window for ``windows`` windows handed over together."""
    runner.enhance_all([x] * windows, fidelity)  # warm
    t0 = time.perf_counter()
    runner.enhance_all([x] * windows, fidelity)
    return (time.perf_counter() - t0) / windows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", required=True, help="enhancer .safetensors files carrying int8")
    p.add_argument("--val", nargs="+", default=[str(ROOT.parent / "shared/data/val")])
    p.add_argument("--crops", type=int, default=16, help="validation crops for the agreement")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args(argv)

    from core.enhance.runtime import OpenVinoEnhancer
    from core.models import load_enhancer
    from training.data import center_crops, list_images
    from training.quantize_enhancer import agreement_db

    streams = _threads(None)
    loaded = {w: load_enhancer(w, "cpu") for w in args.weights}
    runners = {w: {1: OpenVinoEnhancer(e, threads=1, precision="int8", window=args.window),
                   streams: OpenVinoEnhancer(e, threads=streams, precision="int8", window=args.window)}
               for w, e in loaded.items()}
    x = np.random.default_rng(0).random((1, 3, args.window, args.window), dtype=np.float32)
    times = {w: {n: [] for n in r} for w, r in runners.items()}
    for _ in range(args.rounds):
        for w, by_threads in runners.items():
            for n, runner in by_threads.items():
                times[w][n].append(window_seconds(runner, x, loaded[w].int8_fidelity, 2 * n))
    crops = np.stack([c.numpy() for c in center_crops(list_images(args.val), args.window, args.crops)])
    rows = []
    for w, e in loaded.items():
        agreement = agreement_db(e, e.int8_ir, crops, e.int8_fidelity)
        row = {"weights": w, "sha256": e.sha256, "int8": e.info.get("int8"), "agreement_db": round(agreement, 2)}
        for n, ts in times[w].items():
            row[f"window_s_{n}_thread{'s' if n > 1 else ''}"] = {"median": round(float(np.median(ts)), 4),
                                                                  "best": round(min(ts), 4)}
        rows.append(row)
        print(f"{Path(w).name}: {agreement:.2f} dB against f32; s/window "
              + ", ".join(f"{k[9:]} {v['median']:.4f} (best {v['best']:.4f})" for k, v in row.items()
                          if k.startswith("window_s_")), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "window": args.window,
                                              "crops": len(crops), "rounds": args.rounds, "rows": rows},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
