"""Side-by-side crops at the default quality: original, ours, AVIF at the same bits per pixel.

Each fixture's RGB bands are compressed with the CLI at the default quality (whole
container counted, plain decoding); AVIF codes the same RGB image at the same bpp
(quality searched, whole file counted). A crop of each is shown at 2x (nearest
neighbour), labelled, in one PNG under docs/img/; the numbers go to a JSON.

    python benchmarks/default_quality_crops.py --out results/default_quality_crops.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import cli_roundtrip  # noqa: E402

from core.evaluation.codec_adapters import CODECS, EvalOptions  # noqa: E402
from core.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from core.evaluation.rate_search import RateSearch  # noqa: E402
from core.options import DEFAULT_MODEL, DEFAULT_QUALITY  # noqa: E402

FIXTURES = ROOT.parent / "shared/data/fixtures"
# (name, file, crop col, row, side): NAIP ponds and shorelines at 5 m; NEON canopy and grass at 0.1 m
CROPS = [("naip", "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif", 300, 180, 200),
         ("neon", "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif", 100, 100, 200)]


def panel(images: list[tuple[str, np.ndarray]], scale: int = 2) -> Image.Image:
    side = images[0][1].shape[0] * scale
    out = Image.new("RGB", (len(images) * (side + 8) - 8, side + 22), "white")
    draw = ImageDraw.Draw(out)
    for i, (label, img) in enumerate(images):
        x = i * (side + 8)
        out.paste(Image.fromarray(img).resize((side, side), Image.NEAREST), (x, 22))
        draw.text((x + 2, 5), label, fill="black")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality", type=float, default=DEFAULT_QUALITY)
    p.add_argument("--img-dir", default=str(ROOT / "docs/img"))
    p.add_argument("--out")
    args = p.parse_args(argv)
    avif = CODECS["avif"](EvalOptions())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, file, x, y, side in CROPS:
            src = FIXTURES / file
            with rasterio.open(src) as ds:
                ref = ds.read([1, 2, 3]).transpose(1, 2, 0)
            bpp, dec = cli_roundtrip(src, Path(tmp), ["--quality", str(args.quality), "--bands", "1,2,3"])
            ours = dec.transpose(1, 2, 0)
            enc = RateSearch(avif, ref).match(bpp)
            theirs = avif.decode(enc.data, ref.shape[:2])
            row = {"raster": name, "quality": args.quality, "bpp": round(bpp, 4), "avif_bpp": round(enc.bpp, 4),
                   "avif_quality": enc.quality, "psnr": round(psnr(ref, ours), 3), "avif_psnr": round(psnr(ref, theirs), 3),
                   "ms_ssim": round(float(ms_ssim(ref, ours)), 4), "avif_ms_ssim": round(float(ms_ssim(ref, theirs)), 4),
                   "crop": [x, y, side, side]}
            print(json.dumps(row), flush=True)
            rows.append(row)
            crop = (slice(y, y + side), slice(x, x + side))
            img = panel([("original", ref[crop]),
                         (f"Code-RSIC {DEFAULT_MODEL} q{args.quality:g}: {bpp:.3f} bpp, MS-SSIM {row['ms_ssim']:.3f}",
                          ours[crop]),
                         (f"AVIF: {enc.bpp:.3f} bpp, MS-SSIM {row['avif_ms_ssim']:.3f}", theirs[crop])])
            img.save(Path(args.img_dir) / f"default_quality_{name}.png")
    if args.out:
        res = {"model": DEFAULT_MODEL, "rows": rows,
               "command": "python benchmarks/default_quality_crops.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
