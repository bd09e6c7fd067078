"""How many latent channels the high rates need: a linear bound from principal components.

ELIC's analysis maps each 16 x 16 x 3 block of pixels (768 values) to M latent values. A
linear code that keeps k values per block can do no better than the k leading principal
components of the blocks; what the other 768 - k leave out is the error floor of any rate.
This prints that floor as a PSNR for several k on the val images (UC Merced scenes and the
Dubai pair), to set beside the ceiling the trained transforms reach unquantised
(``benchmarks/transform_ceiling.py``): where the two meet, the latent's width, not the
training, caps the top rates.

    python benchmarks/latent_dimension.py --out results/campaign/latent_dimension.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared/data/val"
BLOCK = 16  # ELIC's total downsampling


def blocks(images: list[np.ndarray], stride: int) -> np.ndarray:
    """(count, BLOCK * BLOCK * 3) blocks, ``stride`` px apart, of each (h, w, 3) image."""
    out = [img[y : y + BLOCK, x : x + BLOCK].reshape(-1) for img in images
           for y in range(0, img.shape[0] - BLOCK + 1, stride) for x in range(0, img.shape[1] - BLOCK + 1, stride)]
    return np.asarray(out, np.float64)


def floors(x: np.ndarray, dims: list[int]) -> dict[int, float]:
    """PSNR (8-bit peak) of the best k-dimensional linear code of the rows of ``x``, per k."""
    x = x - x.mean(0)
    eig = np.sort(np.linalg.eigvalsh(x.T @ x / len(x)))[::-1]
    return {k: float(10 * np.log10(255.0**2 / (eig[k:].sum() / x.shape[1]))) for k in dims}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[96, 192, 256, 320, 384])
    p.add_argument("--out")
    args = p.parse_args(argv)
    ucm = [np.asarray(Image.open(f).convert("RGB").resize((256, 256)), np.float64)
           for f in sorted((VAL / "ucmerced").glob("*/*"))]  # as in the val mosaic (large_raster_rd.py)
    dubai = [np.asarray(Image.open(f).convert("RGB"), np.float64) for f in sorted((VAL / "dubai").glob("*.jpg"))]
    res = {"ucmerced": floors(blocks(ucm, BLOCK), args.dims), "dubai": floors(blocks(dubai, 2 * BLOCK), args.dims)}
    for name, row in res.items():
        print(f"{name:>9}: " + ", ".join(f"{k} -> {v:.2f} dB" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python benchmarks/latent_dimension.py " + " ".join(sys.argv[1:]),
            "what": "PSNR floor of the best linear code keeping k values per 16 x 16 x 3 block (principal "
                    "components of the val blocks; UC Merced scenes resized to 256 px as in the val mosaic, "
                    "every block; the Dubai pair, every other block in each direction)",
            "psnr_db": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
