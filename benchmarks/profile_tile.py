"""Where a tile's time goes: the stages of encoding, decoding and enhancing one default tile.

Times (median of ``--repeat`` runs, after a warm-up) the analysis transform, the
bit-exact entropy coding (split into its integer networks: hyper-synthesis, channel
context, spatial context, parameter aggregation, and the rest: rANS, checkerboard
bookkeeping, hyper-analysis), the synthesis transform, and the enhancer on the windows
that cover the tile (split into its parts: E_L, the lookup Transformer, the codebook
decoder, HPIN fusion per scale, the input gate). The tile is a real aerial crop, padded as
the codec pads it.

    python benchmarks/profile_tile.py --threads 2 --out results/profile_tile.json
    CODERSIC_RUNTIME=torch python benchmarks/profile_tile.py ...   # the transforms on another runtime
    python benchmarks/profile_tile.py --enhancer enhancer-lite-d ...   # another enhancer
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core  # noqa: E402,F401 - before NumPy loads OpenBLAS: its kernels for this CPU (core.openblas_coretype)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from core.codec.tile_coder import get_coder  # noqa: E402
from core.format.tiling import padded  # noqa: E402
from core.models import get_enhancer, quality_to_level  # noqa: E402
from core.models.runtime import set_threads  # noqa: E402
from core.options import DEFAULT_ENHANCE_OVERLAP, DEFAULT_ENHANCE_WINDOW, DEFAULT_MODEL, DEFAULT_QUALITY, DEFAULT_TILE  # noqa: E402,E501


class Timed:
    """Wraps a callable and adds its wall time to ``totals[name]``."""

    def __init__(self, fn, name, totals):
        self.fn, self.name, self.totals = fn, name, totals

    def __call__(self, *a, **k):
        t0 = time.perf_counter()
        out = self.fn(*a, **k)
        self.totals[self.name] += time.perf_counter() - t0
        return out


def time_enhancer_parts(net, totals) -> None:
    """Time the enhancer's parts into ``totals`` ("codebook decoder" includes the HPIN
    modules it calls; the caller takes them out)."""
    parts = {"E_L (lookup encoder)": net.lookup.encoder, "codebook decoder": net.decoder,
             **{f"HPIN fusion at 1/{2 ** int(k)}": m for k, m in net.fusion.items()}}
    if net.skip is not None:
        parts["input gate"] = net.skip
    for i, layer in enumerate(net.lookup.layers):
        parts[f"lookup Transformer layer {i}"] = layer
    for name, m in parts.items():
        m.forward = Timed(m.forward, "lookup Transformer" if name.startswith("lookup T") else name, totals)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(next((ROOT.parent / "shared/data/val/dubai").glob("*.jpg"), "")))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--enhancer", default=None, help="enhancer registry name or file (default: the default one)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    set_threads(args.threads)
    side = padded(DEFAULT_TILE)  # a default tile (overlap included), as the codec pads it
    img = np.asarray(Image.open(args.image).convert("RGB"))[:side, :side]
    tile = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0
    coder = get_coder(args.model)
    exact = coder.exact
    level = quality_to_level(DEFAULT_QUALITY, coder.model.spec.levels)
    totals: dict[str, float] = defaultdict(float)
    exact.h_s = Timed(exact.h_s, "hyper-synthesis (int)", totals)
    exact.channel_context = {k: Timed(v, "channel context (int)", totals) for k, v in exact.channel_context.items()}
    for v in exact.spatial:  # the coder calls it at the non-anchors only
        v.at_non_anchors = Timed(v.at_non_anchors, "spatial context (int)", totals)
    exact.aggregation = [Timed(v, "parameter aggregation (int)", totals) for v in exact.aggregation]
    exact.anchor_aggregation = [Timed(v, "parameter aggregation (int)", totals) for v in exact.anchor_aggregation]
    enhancer = get_enhancer(args.enhancer)
    time_enhancer_parts(enhancer.net, totals)
    from core.enhance.windows import enhance_array

    stages = defaultdict(list)
    for run in range(args.repeat + 1):
        totals.clear()
        x = tile[None]
        t0 = time.perf_counter()
        y = coder.analysis(x, level)
        t1 = time.perf_counter()
        enc = exact.compress(y)
        t2 = time.perf_counter()
        enc_parts = dict(totals)
        totals.clear()
        dec = exact.decompress(enc["strings"], (side // 64, side // 64))
        t3 = time.perf_counter()
        dec_parts = dict(totals)
        coder.synthesis(dec["y_hat"], level)
        t4 = time.perf_counter()
        totals.clear()
        enhance_array(img, enhancer.default_fidelity, args.enhancer, DEFAULT_ENHANCE_WINDOW, DEFAULT_ENHANCE_OVERLAP)
        t5 = time.perf_counter()
        enh_parts = dict(totals)
        if run == 0:
            continue  # warm-up
        stages[f"analysis (float, {coder.transforms.name})"].append(t1 - t0)
        stages["entropy encode (int), total"].append(t2 - t1)
        for k, v in enc_parts.items():
            stages[f"  encode: {k}"].append(v)
        stages["  encode: other (rANS, h_a, bookkeeping)"].append((t2 - t1) - sum(enc_parts.values()))
        stages["entropy decode (int), total"].append(t3 - t2)
        for k, v in dec_parts.items():
            stages[f"  decode: {k}"].append(v)
        stages["  decode: other (rANS, bookkeeping)"].append((t3 - t2) - sum(dec_parts.values()))
        stages[f"synthesis (float, {coder.transforms.name})"].append(t4 - t3)
        stages["enhancement (windows over the tile)"].append(t5 - t4)
        fusion = sum(v for k, v in enh_parts.items() if k.startswith("HPIN"))
        for k, v in enh_parts.items():
            stages[f"  enhance: {k}"].append(v - fusion if k == "codebook decoder" else v)
        if enh_parts:  # torch: its parts were timed (OpenVINO runs the network as one piece)
            stages["  enhance: other (blending, padding, codes)"].append((t5 - t4) - sum(enh_parts.values()) + fusion)
    mp = side * side / 1e6
    print(f"one {side} x {side} tile ({mp:.2f} MP), model {args.model}, quality {DEFAULT_QUALITY}, "
          f"{args.threads} threads, median of {args.repeat}")
    rows = {k: statistics.median(v) for k, v in stages.items()}
    for k, v in rows.items():
        print(f"{k:<48} {v:7.3f} s")
    runtime = coder.transforms.name
    enc_total = rows[f"analysis (float, {runtime})"] + rows["entropy encode (int), total"]
    dec_total = rows["entropy decode (int), total"] + rows[f"synthesis (float, {runtime})"]
    print(f"{'encode, per tile':<48} {enc_total:7.3f} s  ({mp / enc_total:.2f} MP/s)")
    print(f"{'plain decode, per tile':<48} {dec_total:7.3f} s  ({mp / dec_total:.2f} MP/s)")
    if args.out:
        from codec_throughput import instruction_sets  # the CPU's extensions and any kernel cap set

        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "environment": instruction_sets(),
                                              "tile": side, "threads": args.threads,
                                              "runtime": runtime, "model": args.model,
                                              "enhancer": enhancer.net.cfg.to_dict(), "seconds": rows},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
