"""What coding 16-bit rasters costs in precision.

For each uint16 raster: the error of the per-band normalisation alone (to [0, 1] and
back, without the codec), of a plain 8-bit conversion over the same range (what a
"convert to Byte first" workflow loses), and of the codec at several qualities: RMSE in
the raster's own digital numbers (DN) and PSNR with the band range as peak.

    python benchmarks/uint16_precision.py ../shared/data/fixtures/spacenet_*uint16*.tif \
        --out results/uint16_precision.json
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

from core.codec.compress import compress_raster  # noqa: E402
from core.codec.decompress import decompress_raster  # noqa: E402
from core.format.normalization import measured_range  # noqa: E402
from core.options import CompressParams  # noqa: E402


def errors(a: np.ndarray, b: np.ndarray, span: float) -> dict:
    rmse = float(np.sqrt(((a.astype(np.float64) - b) ** 2).mean()))
    return {"rmse_dn": rmse, "psnr": float(20 * np.log10(span / rmse)) if rmse > 0 else float("inf")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rasters", nargs="+")
    p.add_argument("--qualities", type=float, nargs="+", default=[1, 3, 6])
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    print(f"{'raster':<48} {'bands':>5} {'range':>11} {'method':<14} {'bpp':>6} {'RMSE DN':>9} {'PSNR':>7}")
    for path in args.rasters:
        with rasterio.open(path) as ds:
            if ds.dtypes[0] != "uint16":
                continue
            bands = [1, 2, 3] if ds.count >= 3 else [1]
            src = ds.read(bands)
        ranges = [measured_range(b) for b in src]
        span = max(r.hi for r in ranges) - min(r.lo for r in ranges)
        results = {}
        unit = np.stack([r.to_unit(b) for r, b in zip(ranges, src)])
        back = np.stack([r.from_unit(u, "uint16") for r, u in zip(ranges, unit)])
        results["normalisation"] = {"bpp": None, **errors(src, back, span)}
        byte = np.stack([np.rint(u * 255) / 255 for u in unit])
        byte_back = np.stack([r.from_unit(u, "uint16") for r, u in zip(ranges, byte)])
        results["8-bit convert"] = {"bpp": 8.0 * len(bands), **errors(src, byte_back, span)}
        with tempfile.TemporaryDirectory() as tmp:
            for q in args.qualities:
                c, d = Path(tmp) / "c.crsic", Path(tmp) / "d.tif"
                res = compress_raster(path, c, CompressParams(quality=q, bands=bands, overwrite=True))
                decompress_raster(c, d, overwrite=True)
                with rasterio.open(d) as dec:
                    results[f"codec q{q:g}"] = {"bpp": res["bpp"], **errors(src, dec.read(), span)}
        for method, r in results.items():
            bpp = "" if r["bpp"] is None else f"{r['bpp']:.3f}"
            print(f"{Path(path).name[:48]:<48} {len(bands):>5} {span:>11.0f} {method:<14} {bpp:>6} "
                  f"{r['rmse_dn']:>9.2f} {r['psnr']:>7.2f}")
            rows.append({"raster": Path(path).name, "bands": len(bands), "range_dn": span, "method": method, **r})
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
