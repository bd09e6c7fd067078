"""What tiling costs: bits spent on tile overlap, and seams, for several tile / overlap choices.

Tiles overlap so the decoder can blend them without seams, but the overlap is coded
twice (768 px tiles with 32 px overlap code about 9 % more pixels than the raster has).
This compresses one mosaic of real aerial images with each (tile, overlap) at a few
qualities, decodes it plainly, and reports bpp, PSNR over the raster, PSNR in the seam
bands (pixels within 4 px of where this configuration's tiles meet) and how much worse
that is than the anchor's decode on the same pixels, beyond their overall difference (the
seam penalty: the content near the seams is the same for both, so only the seams differ), and per configuration the BD-rate
(PSNR) against the anchor (the first configuration, the default tiling).

    python benchmarks/tiling_cost.py --size 2048 --configs 768/32 768/16 768/0 1024/32 \
        --qualities 1 3 5 --out results/tiling_cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import build_raster, cli_roundtrip  # noqa: E402

from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.evaluation.metrics import psnr  # noqa: E402
from core.format.tiling import TileGrid  # noqa: E402
from core.options import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: E402

SEAM = 4  # half-width of a seam band in pixels


def seam_mask(size: int, tile: int, overlap: int) -> np.ndarray:
    """True within SEAM px of the middle of every overlap between neighbouring tiles."""
    grid = TileGrid(size, size, tile, overlap)
    lines = [start + overlap // 2 for start in grid.col_starts[1:]]
    band = np.zeros(size, bool)
    for x in lines:
        band[max(0, x - SEAM): x + SEAM] = True
    return band[None, :] | band[:, None]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048, help="mosaic side in pixels")
    p.add_argument("--images", nargs="+", default=sorted(str(x) for x in (ROOT.parent / "shared/data/val/dubai").glob("*.jpg")))
    p.add_argument("--configs", nargs="+", default=[f"{DEFAULT_TILE}/{DEFAULT_OVERLAP}", f"{DEFAULT_TILE}/16",
                                                    f"{DEFAULT_TILE}/0", "1024/32", "512/32"],
                   help="TILE/OVERLAP pairs; the first is the anchor of the BD-rates")
    p.add_argument("--qualities", nargs="+", default=["1", "3", "5"])
    p.add_argument("--model", default=None)
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    model = ["--model", args.model] if args.model else []
    rows = []
    print(f"{'tile/overlap':>12} {'q':>4} {'bpp':>7} {'PSNR':>7} {'seam PSNR':>10} {'vs anchor':>10} {'coded px':>9}")
    anchor_decodes = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mosaic.tif"
        build_raster(src, args.size, [Path(i) for i in args.images])
        with rasterio.open(src) as ds:
            ref = ds.read()
        for config in args.configs:
            tile, overlap = (int(v) for v in config.split("/"))
            seams = seam_mask(args.size, tile, overlap)
            grid = TileGrid(args.size, args.size, tile, overlap)
            coded = sum(t.width * t.height for t in grid) / args.size**2
            for q in args.qualities:
                bpp, out = cli_roundtrip(src, Path(tmp), ["--quality", q, "--tile", str(tile),
                                                          "--overlap", str(overlap), *model])
                anchor = anchor_decodes.setdefault(q, out)  # the first configuration's decode
                row = dict(tile=tile, overlap=overlap, quality=float(q), coded_pixels=coded,
                           bpp=bpp, psnr=psnr(ref, out),
                           seam_psnr=psnr(ref[:, seams], out[:, seams]),
                           # worse at its seams than the anchor on the same pixels, beyond the overall difference
                           seam_penalty_db=(psnr(ref[:, seams], anchor[:, seams]) - psnr(ref[:, seams], out[:, seams]))
                           - (psnr(ref, anchor) - psnr(ref, out)))
                rows.append(row)
                print(f"{config:>12} {q:>4} {row['bpp']:>7.4f} {row['psnr']:>7.2f} {row['seam_psnr']:>10.2f} "
                      f"{-row['seam_penalty_db']:>+10.2f} {coded:>9.3f}", flush=True)
    anchor = [r for r in rows if (r["tile"], r["overlap"]) == tuple(int(v) for v in args.configs[0].split("/"))]
    summary = {}
    for config in args.configs[1:]:
        tile, overlap = (int(v) for v in config.split("/"))
        test = [r for r in rows if (r["tile"], r["overlap"]) == (tile, overlap)]
        summary[config] = dict(
            bd_rate_psnr=bd_rate([r["bpp"] for r in anchor], [r["psnr"] for r in anchor],
                                 [r["bpp"] for r in test], [r["psnr"] for r in test]),
            mean_seam_penalty_db=float(np.mean([r["seam_penalty_db"] for r in test])))
        print(f"{config:>12} vs {args.configs[0]}: BD-rate (PSNR) {summary[config]['bd_rate_psnr']:+.2f} %, "
              f"seams {summary[config]['mean_seam_penalty_db']:.2f} dB worse than the anchor's on the same pixels")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "size": args.size, "rows": rows,
                                              "vs_anchor": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
