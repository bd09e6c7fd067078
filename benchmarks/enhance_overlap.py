"""The enhancer's window overlap: quality, seams and windows per overlap, on whole rasters.

The enhancer runs over overlapping windows blended with linear ramps (``StripEnhancer``).
A narrower overlap needs fewer windows, so less time; too narrow and the blend bands show.
For each raster (``large_raster_rd.py``'s: the Dubai pair, continuous, 7.5 MP; the UC
Merced val mosaic, 10.5 MP) and each quality: compress with the defaults, then decode with
enhancement once per overlap, in this process, and report per overlap:
- windows, and the seconds the enhancement took;
- PSNR and LPIPS (AlexNet, 1024 px tiles) against the original;
- the band contrast: the mean absolute difference between neighbouring pixels inside the
  blend bands, relative to the original's there, divided by the same ratio over the whole
  raster. 1.0: the bands look like the rest; below 1: blended textures wash out; above:
  an edge.

    python benchmarks/enhance_overlap.py --overlaps 16 8 32 --qualities 1 2 --out results/enhance_overlap.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from large_raster_rd import build_named_raster, lpips_tiled  # noqa: E402

from core.evaluation.metrics import psnr  # noqa: E402
from core.format.tiling import TileGrid  # noqa: E402
from core.options import DEFAULT_ENHANCE_WINDOW, CompressParams, DecompressParams, EnhanceParams  # noqa: E402
from core.usecases import compress, decompress  # noqa: E402


def blend_bands(length: int, window: int, overlap: int) -> np.ndarray:
    """True where windows overlap along one axis of ``length`` px (at least 2 px wide)."""
    band = np.zeros(length, bool)
    for start in TileGrid(length, 1, window, overlap).col_starts[1:]:
        band[start : start + max(overlap, 2)] = True
    return band


def band_contrast(ref: np.ndarray, out: np.ndarray, window: int, overlap: int) -> float:
    """(bands, h, w): neighbour differences of ``out`` over ``ref``'s inside the blend bands,
    divided by the same ratio over the whole raster."""
    ref, out = ref.astype(np.float32), out.astype(np.float32)
    gx_ref, gx_out = np.abs(np.diff(ref, axis=2)), np.abs(np.diff(out, axis=2))
    gy_ref, gy_out = np.abs(np.diff(ref, axis=1)), np.abs(np.diff(out, axis=1))
    cols = blend_bands(ref.shape[2], window, overlap)[1:]  # a difference belongs to its right pixel
    rows = blend_bands(ref.shape[1], window, overlap)[1:]
    inside = gx_out[:, :, cols].sum() + gy_out[:, rows, :].sum()
    inside_ref = gx_ref[:, :, cols].sum() + gy_ref[:, rows, :].sum()
    return float((inside / inside_ref) / ((gx_out.sum() + gy_out.sum()) / (gx_ref.sum() + gy_ref.sum())))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rasters", nargs="+", default=["dubai-pair", "val-mosaic"])
    p.add_argument("--overlaps", type=int, nargs="+", default=[16, 8, 32])
    p.add_argument("--qualities", type=float, nargs="+", default=[1, 2])
    p.add_argument("--window", type=int, default=DEFAULT_ENHANCE_WINDOW)
    p.add_argument("--out")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for raster in args.rasters:
            src = Path(tmp) / f"{raster}.tif"
            build_named_raster(src, raster, 0, [])
            with rasterio.open(src) as ds:
                ref = ds.read()
            for quality in args.qualities:
                crsic = Path(tmp) / "q.crsic"
                bpp = compress(src, crsic, CompressParams(quality=quality, overwrite=True))["bpp"]
                for overlap in args.overlaps:
                    dec = Path(tmp) / f"o{overlap}.tif"
                    params = DecompressParams(overwrite=True, enhance=True,
                                              enhancement=EnhanceParams(window=args.window, overlap=overlap))
                    t0 = time.perf_counter()
                    decompress(crsic, dec, params)
                    seconds = time.perf_counter() - t0
                    with rasterio.open(dec) as ds:
                        out = ds.read()
                    row = {"raster": raster, "quality": quality, "bpp": bpp, "overlap": overlap,
                           "windows": len(TileGrid(ref.shape[2], ref.shape[1], args.window, overlap)),
                           "seconds": seconds, "psnr": psnr(ref.transpose(1, 2, 0), out.transpose(1, 2, 0)),
                           "lpips": lpips_tiled(ref.transpose(1, 2, 0), out.transpose(1, 2, 0)),
                           "band_contrast": band_contrast(ref, out, args.window, overlap)}
                    rows.append(row)
                    print(f"{raster:>10} q{quality:g} {bpp:.3f} bpp overlap {overlap:>2}: {row['windows']:>4} windows "
                          f"{seconds:6.1f} s  PSNR {row['psnr']:.2f}  LPIPS {row['lpips']:.4f}  "
                          f"band contrast {row['band_contrast']:.3f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "window": args.window,
                                              "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
