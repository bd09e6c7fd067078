"""What bit-exact decoding costs: format 2 (integer entropy parameters) against format 1
(CompressAI's float path), same weights, same images.

For every image and quality both paths code the whole image as one tile; the script
prints bits, PSNR and decode time per path, the BD-rate of format 2 against format 1
(PSNR) and the decode-time ratio, and writes them as JSON. Run it on an idle machine
for the times::

    python benchmarks/exact_entropy_cost.py ../shared/data/val --limit 34 --out results/exact_entropy_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.codec.tile_coder import get_coder  # noqa: E402
from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.evaluation.images import center_crop, list_images, read_rgb  # noqa: E402
from core.evaluation.metrics import psnr  # noqa: E402
from core.format.normalization import BandRange  # noqa: E402
from core.format.payload import prepare_tile  # noqa: E402
from core.models import quality_to_level  # noqa: E402
from core.options import DEFAULT_MODEL  # noqa: E402


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", help="folder of images (e.g. ../shared/data/val)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=34, help="images, taken evenly over the folders")
    p.add_argument("--crop", type=int, default=512, help="central crop size (0: whole image)")
    p.add_argument("--qualities", type=float, nargs="+", default=None, help="default: every trained level")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="JSON file for the results")
    return p


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    coder = get_coder(args.model)
    levels = coder.model.spec.levels
    qualities = args.qualities or [float(q) for q in range(1, levels + 1)]
    images = [center_crop(read_rgb(p), args.crop) for p in list_images(args.images, args.limit)]
    rows = {q: {"float": [0.0, 0.0, 0.0], "exact": [0.0, 0.0, 0.0]} for q in qualities}  # bits, psnr sum, seconds
    pixels = 0
    for img in images:
        h, w = img.shape[:2]
        pixels += h * w
        tile = prepare_tile(img.transpose(2, 0, 1), None, [(0.0, 255.0)] * 3)
        for q in qualities:
            level = quality_to_level(q, levels)
            for path, exact in (("float", False), ("exact", True)):
                data, crc = coder.encode_tile(tile, level, exact)
                t0 = time.perf_counter()
                out = coder.decode_tile(data, level, crc, exact)
                seconds = time.perf_counter() - t0
                dec = np.stack([BandRange(0, 255).from_unit(b, "uint8") for b in out[:, :h, :w]]).transpose(1, 2, 0)
                r = rows[q][path]
                r[0] += len(data) * 8
                r[1] += psnr(img, dec)
                r[2] += seconds
    table = {}
    for q, r in rows.items():
        table[q] = {p: {"bpp": v[0] / pixels, "psnr": v[1] / len(images), "decode_s": v[2]} for p, v in r.items()}
        f, e = table[q]["float"], table[q]["exact"]
        print(f"quality {q:g}: float {f['bpp']:.4f} bpp {f['psnr']:.3f} dB {f['decode_s']:.2f} s | "
              f"exact {e['bpp']:.4f} bpp {e['psnr']:.3f} dB {e['decode_s']:.2f} s")
    rate = {p: [table[q][p]["bpp"] for q in qualities] for p in ("float", "exact")}
    qual = {p: [table[q][p]["psnr"] for q in qualities] for p in ("float", "exact")}
    bd = bd_rate(rate["float"], qual["float"], rate["exact"], qual["exact"])
    t_float = sum(table[q]["float"]["decode_s"] for q in qualities)
    t_exact = sum(table[q]["exact"]["decode_s"] for q in qualities)
    summary = {"model": args.model, "weights_sha256": coder.model.sha256, "images": len(images), "crop": args.crop,
               "bd_rate_psnr_percent": bd, "decode_time_ratio": t_exact / t_float,
               "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
               "command": "python benchmarks/exact_entropy_cost.py " + " ".join(argv or sys.argv[1:]),
               "per_quality": {str(q): v for q, v in table.items()}}
    print(f"BD-rate (PSNR) of format 2 against format 1: {bd:+.3f} %; decode time x{t_exact / t_float:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
