"""How close ``compress --target-bpp`` lands to its target on a large raster, whole files.

For each model and target, the CLI compresses the benchmark raster (the same rasters as
``large_raster_rd.py``) with ``--target-bpp``; the achieved rate is the whole container's
bits per pixel. A target above the model's top rate (or below its lowest) cannot be
reached: the row says so and is left out of the accuracy range. The model ``default`` gives
no ``--model``, as a user would: the default model codes what it reaches and the high-rate
model the targets above it (each row names the model its container was coded with).

    python benchmarks/target_bpp.py --raster dubai-pair --models elic-v3 elic-lite-s --threads 1 \
        --out results/target_bpp_dubai-pair.json
    python benchmarks/target_bpp.py --raster val-mosaic --models default --threads 1 \
        --targets 0.05 0.1 0.2 0.4 0.6 0.8 1.0 1.2 --out results/target_bpp_default_val-mosaic.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from large_raster_rd import build_named_raster  # noqa: E402

from core.format.container import ContainerReader  # noqa: E402
from core.models import REGISTRY  # noqa: E402
from core.options import DEFAULT_MODEL, HIGH_RATE_MODEL  # noqa: E402

ACCEPTED = (0.85, 1.15)  # the window, as a ratio achieved / target
NO_MODEL = "default"  # no --model: the CLI's own choice (CompressParams.model None)


def model_args(model: str) -> list[str]:
    return [] if model == NO_MODEL else ["--model", model]


def coded_by(container: Path) -> str:
    with ContainerReader(container) as reader:
        return reader.header.model.name


def compress_bpp(src: Path, dst: Path, args: list[str]) -> float:
    subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(src), "-o", str(dst), "--quiet",
                    "--overwrite", *args], check=True, cwd=ROOT)
    with rasterio.open(src) as ds:
        return dst.stat().st_size * 8 / (ds.width * ds.height)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raster", default="dubai-pair", choices=["dubai-tiled", "val-mosaic", "dubai-pair"])
    p.add_argument("--size", type=int, default=3072, help="mosaic side in pixels (dubai-tiled)")
    p.add_argument("--models", nargs="+", default=["elic-lite-s"])
    p.add_argument("--targets", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8, 1.2])
    p.add_argument("--threads", help="torch threads of the CLI runs (default: the CLI's)")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    common = ["--threads", args.threads] if args.threads else []
    images = sorted(str(x) for x in (ROOT.parent / "shared/data/val/dubai").glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "raster.tif", Path(tmp) / "out.crsic"
        build_named_raster(src, args.raster, args.size, images)
        for model in args.models:
            # the range: the lowest quality of the (default) model, the top of the (high-rate) one
            low_model, top_model = (DEFAULT_MODEL, HIGH_RATE_MODEL) if model == NO_MODEL else (model, model)
            lo = compress_bpp(src, dst, ["--model", low_model, "--quality", "0", *common])
            hi = compress_bpp(src, dst, ["--model", top_model, "--quality", str(REGISTRY[top_model].levels), *common])
            for target in args.targets:
                t0 = time.perf_counter()
                bpp = compress_bpp(src, dst, [*model_args(model), "--target-bpp", str(target), *common])
                reachable = lo <= target <= hi
                row = dict(model=model, coded_by=coded_by(dst), target=target, bpp=bpp, ratio=bpp / target,
                           reachable=reachable, model_range=[lo, hi], seconds=time.perf_counter() - t0)
                rows.append(row)
                ok = ACCEPTED[0] <= row["ratio"] <= ACCEPTED[1]
                note = ("within" if ok else "OUTSIDE") if reachable else f"unreachable ({lo:.3f}-{hi:.3f} bpp)"
                print(f"{model:>12} target {target:5.3f} -> {bpp:.4f} bpp  x{row['ratio']:.3f}  {note}  "
                      f"({row['coded_by']})", flush=True)
    for model in args.models:
        rs = [r["ratio"] for r in rows if r["model"] == model and r["reachable"]]
        if rs:
            print(f"{model}: achieved / target over the reachable targets: x{min(rs):.3f} to x{max(rs):.3f} "
                  f"(accepted x{ACCEPTED[0]} to x{ACCEPTED[1]})")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "raster": args.raster,
                                              "accepted": ACCEPTED, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
