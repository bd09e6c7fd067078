"""Entropy decoding of one tile with the spatial context at the non-anchors only, against
the full convolution it replaces (``IntConv.at_non_anchors``; issue 24).

The integer entropy path computes each checkerboard group's spatial context from its
decoded anchors. The full masked convolution of the joined checkerboard reads zeros at
every non-anchor and is kept at the non-anchors only; ``at_non_anchors`` sums only the taps
that land on anchors, at the non-anchors. The anchors' parameter aggregation likewise drops
its all-zero context inputs. Both give the same integers (the symbols CRC is checked here);
this times the decode of the same streams both ways, alternating, on one thread.

    python benchmarks/checkerboard_context.py --models elic-lite-s elic-v3 --out results/checkerboard_context.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import core  # noqa: E402,F401 (before numpy: OpenBLAS's kernels)
import numpy as np  # noqa: E402

from core.codec.tile_coder import get_coder  # noqa: E402
from core.models.exact_entropy import ExactElicEntropy  # noqa: E402


def full_convolution(exact: ExactElicEntropy) -> None:
    """Make ``exact`` compute as before: full convolutions, zero context inputs."""
    for seq in exact.spatial:
        seq.at_non_anchors = seq.joined_at_non_anchors
    exact.anchor_aggregation = [
        (lambda agg, g: lambda side: agg(np.concatenate([np.zeros((side.shape[0], 2 * g, *side.shape[2:])), side],
                                                        axis=1)))(agg, g)
        for agg, g in zip(exact.aggregation, exact.groups)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["elic-lite-s", "elic-v3"])
    p.add_argument("--tile", type=int, default=768, help="tile side in pixels (latent: side / 16)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args(argv)
    rows = []
    for model in args.models:
        coder = get_coder(model, "cpu")
        new, old = coder.exact, ExactElicEntropy(coder.tables)
        full_convolution(old)
        side = args.tile // 16
        y = (np.random.default_rng(0).standard_normal((1, sum(new.groups), side, side)) * 3).astype(np.float32)
        enc = new.compress(y)
        assert old.compress(y)["strings"] == enc["strings"]  # the same streams both ways
        seconds = {"full convolution": [], "non-anchors only": []}
        for _ in range(args.repeat):
            for name, exact in (("full convolution", old), ("non-anchors only", new)):
                t0 = time.perf_counter()
                out = exact.decompress(enc["strings"], (side // 4, side // 4))
                seconds[name].append(time.perf_counter() - t0)
                assert out["crc"] == enc["crc"]
        best = {k: min(v) for k, v in seconds.items()}
        rows.append({"model": model, "tile": args.tile, "decode_seconds_min": best,
                     "decode_seconds_median": {k: float(np.median(v)) for k, v in seconds.items()},
                     "ratio": best["non-anchors only"] / best["full convolution"]})
        print(f"{model}: entropy decode of one {args.tile} px tile {best['full convolution']:.3f} -> "
              f"{best['non-anchors only']:.3f} s (x{rows[-1]['ratio']:.2f})")
    if args.out:
        result = {"command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *(argv or sys.argv[1:])]),
                  "what": __doc__.split("\n\n")[1].replace("\n", " "),
                  "latents": "random normal, std 3 (the same streams for both)", "threads": 1, "rows": rows}
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
