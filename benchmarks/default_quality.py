"""Which quality keeps features: bpp, PSNR and MS-SSIM per quality level on real rasters.

Each raster is compressed with the CLI (every band, default tiling, the default model) and
decoded plainly (``--no-enhance``), each its own process, whole containers counted. The
metrics are taken per group of three bands (RGB, then NIR as a grey image for NAIP), so a
4-band raster reports what its NIR costs and keeps. The default quality in
``core/options.py`` must reach MS-SSIM >= 0.95 on every raster here (or be the top level
when the model cannot); ``tests/test_default_quality.py`` checks this file against it.

    python benchmarks/default_quality.py --out results/default_quality.json
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

from core.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from core.options import DEFAULT_MODEL, DEFAULT_QUALITY  # noqa: E402

FIXTURES = ROOT.parent / "shared/data/fixtures"
VAL = ROOT.parent / "shared/data/val"
TARGET_MS_SSIM = 0.95


def groups(img: np.ndarray) -> dict[str, np.ndarray]:
    """(bands, h, w) -> named (h, w, 3) uint8 images: 'rgb' (bands 1-3) and 'nir' (band 4 as grey)."""
    out = {"rgb": img[:3].transpose(1, 2, 0)}
    if img.shape[0] >= 4:
        out["nir"] = np.repeat(img[3][:, :, None], 3, axis=2)
    return out


def measure(ref: np.ndarray, dec: np.ndarray) -> dict:
    res = {}
    for name, a in groups(ref).items():
        b = groups(dec)[name]
        res[f"psnr_{name}"] = round(psnr(a, b), 3)
        res[f"ms_ssim_{name}"] = round(float(ms_ssim(a, b)), 4)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qualities", type=float, nargs="+", default=[2, 3, 4, 5, 6])
    p.add_argument("--mosaic-size", type=int, default=2048, help="side of the val mosaic in pixels")
    p.add_argument("--out", help="write the points as JSON here")
    p.add_argument("--points-from", help="start from the points of an earlier run (JSON); measure only qualities "
                   "it lacks, and summarise all with today's defaults")
    args = p.parse_args(argv)
    earlier = json.loads(Path(args.points_from).read_text()) if args.points_from else {"points": [], "commands": []}
    rasters = {
        "naip_rgbn_5m": FIXTURES / "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif",
        "neon_rgb_0p1m": FIXTURES / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif",
    }
    points = list(earlier["points"])
    done = {(pt["raster"], pt["quality"]) for pt in points}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mosaic = tmp / "val_mosaic.tif"
        build_raster(mosaic, args.mosaic_size, sorted(VAL.glob("dubai/*.jpg")))
        rasters[f"val_dubai_mosaic_{args.mosaic_size}"] = mosaic
        for name, path in rasters.items():
            with rasterio.open(path) as ds:
                ref = ds.read()
            for q in args.qualities:
                if (name, q) in done:
                    continue
                bpp, dec = cli_roundtrip(path, tmp, ["--quality", str(q)])
                pt = {"raster": name, "bands": int(ref.shape[0]), "quality": q, "bpp": round(bpp, 4), **measure(ref, dec)}
                print(json.dumps(pt), flush=True)
                points.append(pt)
    points.sort(key=lambda pt: (pt["raster"], pt["quality"]))
    chosen = {}
    for name in rasters:
        pts = [pt for pt in points if pt["raster"] == name]
        ok = [pt["quality"] for pt in pts if pt["ms_ssim_rgb"] >= TARGET_MS_SSIM]
        chosen[name] = min(ok) if ok else None
    command = "python benchmarks/default_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"model": DEFAULT_MODEL, "default_quality": DEFAULT_QUALITY, "target_ms_ssim": TARGET_MS_SSIM,
              "lowest_quality_reaching_target": chosen, "points": points,
              "commands": earlier.get("commands", []) + [command]}
    print(json.dumps(result["lowest_quality_reaching_target"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
