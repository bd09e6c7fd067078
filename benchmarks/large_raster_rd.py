"""Rate-distortion on one large raster, as a GIS user codes it: our CLI against classical codecs.

Builds a mosaic GeoTIFF of real aerial images (several megapixels), compresses it with
``python -m core.tile_codec compress`` (default tiling, every tile's overlap paid for) at
each quality of each model, decodes it plainly (``--no-enhance``), and counts the whole
container. Each classical codec (JPEG, WebP, JPEG 2000, AVIF, JPEG XL, via
``core.evaluation.codec_adapters``; each counted by its whole file) codes the whole mosaic at the
bitrates ``--bpp`` (quality searched). Prints every point, then per model the BD-rate
against AVIF and JPEG 2000 (negative: fewer bits than they need for the same quality).

    python benchmarks/large_raster_rd.py --size 3072 --out results/large_raster_rd.json
    python benchmarks/large_raster_rd.py --raster val-mosaic --models elic-v3 \
        --anchors results/campaign/val-mosaic_anchors.json --out results/campaign/val-mosaic_elic-v3.json

``--raster``: ``dubai-tiled`` (a ``--size`` square of mirrored copies of the Dubai val
images), ``val-mosaic`` (all 160 UC Merced val scenes, 16 x 10, 4096 x 2560 = 10.5 MP, a
mosaic of separate scenes) or ``dubai-pair`` (the two Dubai val images side by side,
3633 x 2061 = 7.5 MP of continuous content). ``--anchors``: take the classical codecs'
points from an earlier output on the same raster instead of coding them again.
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

from codec_throughput import build_raster, cli_roundtrip, dubai_pair, write_rgb  # noqa: E402

from core.evaluation.bd_rate import bd_rate, quality_axis  # noqa: E402
from core.evaluation.codec_adapters import CODECS, EvalOptions  # noqa: E402
from core.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from core.evaluation.rate_search import RateSearch  # noqa: E402

def qualities(model: str) -> list[str]:
    """The qualities a model is measured at: every level up to 6, then every other one."""
    from core.models import REGISTRY

    top = REGISTRY[model].levels
    return [str(q) for q in range(top + 1) if q <= 2 or q == top or q % 2 == 0 or top <= 6]


def val_mosaic_rgb(cols: int = 16) -> np.ndarray:
    """The ``val-mosaic`` raster's pixels: every UC Merced val scene at 256 x 256, ``cols`` a
    row, (h, w, 3) uint8."""
    from PIL import Image

    files = sorted((ROOT.parent / "shared/data/val/ucmerced").glob("*/*"))
    tiles = [np.asarray(Image.open(f).convert("RGB").resize((256, 256))) for f in files]
    rows = [np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(len(tiles) // cols)]
    return np.concatenate(rows, axis=0)


def build_named_raster(path: Path, raster: str, size: int, images: list[str]) -> None:
    """Write the benchmark raster ``raster`` (see the module docstring) as a GeoTIFF."""
    if raster == "dubai-tiled":
        build_raster(path, size, [Path(i) for i in images])
        return
    if raster == "val-mosaic":
        write_rgb(path, val_mosaic_rgb().transpose(2, 0, 1))
    elif raster == "dubai-pair":
        dubai_pair(path)
    else:
        raise SystemExit(f"unknown raster {raster}")


def lpips_tiled(a: np.ndarray, b: np.ndarray, side: int = 1024) -> float:
    """LPIPS (AlexNet) averaged over side x side tiles, weighted by area."""
    from core.evaluation.metrics import lpips

    total, area = 0.0, 0
    for y in range(0, a.shape[0], side):
        for x in range(0, a.shape[1], side):
            pa, pb = a[y : y + side, x : x + side], b[y : y + side, x : x + side]
            if min(pa.shape[:2]) < 64:
                continue
            total += lpips(pa, pb) * pa.shape[0] * pa.shape[1]
            area += pa.shape[0] * pa.shape[1]
    return total / area


def measure(ref: np.ndarray, out: np.ndarray, metrics: list[str]) -> dict:
    res = {"psnr": psnr(ref, out)}
    if "ms_ssim" in metrics:
        res["ms_ssim"] = float(ms_ssim(ref, out))
    if "lpips" in metrics:
        res["lpips"] = lpips_tiled(ref, out)
    return res


def bd_summary(points: list[dict], metrics: list[str], window: tuple[float, float]) -> dict:
    """BD-rates of each of our models against AVIF and JPEG 2000, per metric: over the whole
    overlapping quality range, and over the qualities both reach within ``window`` bpp (issue
    20's target range, 0.05-1.0 bpp)."""
    from core.models import REGISTRY

    summary = {}
    for model in dict.fromkeys(pt["codec"] for pt in points if pt["codec"].removesuffix("+enh") in REGISTRY):
        ours = [pt for pt in points if pt["codec"] == model]
        for anchor in ("avif", "jp2"):
            theirs = [pt for pt in points if pt["codec"] == anchor]
            if not theirs:
                continue
            for m in metrics:
                q_theirs = quality_axis(m, np.array([pt[m] for pt in theirs]))
                q_ours = quality_axis(m, np.array([pt[m] for pt in ours]))
                for label, rate_window in (("", None), (f", {window[0]:g}-{window[1]:g} bpp", window)):
                    value, overlap = bd_rate([pt["bpp"] for pt in theirs], q_theirs, [pt["bpp"] for pt in ours],
                                             q_ours, with_overlap=True, rate_window=rate_window)
                    summary[f"{model} vs {anchor} ({m}{label})"] = {"bd_rate_percent": value, "overlap": overlap}
                    print(f"{model} vs {anchor}: BD-rate ({m}{label}) {value:+.1f} % "
                          f"(over {overlap:.0%} of the quality range)")
    return summary


def rescore(path: str, window: tuple[float, float], out: str | None) -> int:
    """Recompute an earlier output's BD-rates from its points (no coding)."""
    data = json.loads(Path(path).read_text())
    metrics = [m for m in ("psnr", "ms_ssim", "lpips") if all(m in pt for pt in data["points"])]
    data["bd_rate"] = bd_summary(data["points"], metrics, window)
    data["rescored"] = " ".join(sys.argv)
    if out:
        Path(out).write_text(json.dumps(data, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raster", default="dubai-tiled", choices=["dubai-tiled", "val-mosaic", "dubai-pair"])
    p.add_argument("--size", type=int, default=3072, help="mosaic side in pixels (dubai-tiled)")
    p.add_argument("--anchors", help="reuse the classical codecs' points of this earlier output (same raster)")
    p.add_argument("--images", nargs="+", default=sorted(str(x) for x in (ROOT.parent / "shared/data/val/dubai").glob("*.jpg")))
    p.add_argument("--models", nargs="+", default=["elic-lite", "elic-v2"])
    p.add_argument("--codecs", default="jpeg,webp,jp2,avif,jxl")
    p.add_argument("--bpp", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.4])
    p.add_argument("--metrics", default="psnr,ms-ssim", help="psnr, ms-ssim, lpips (needs metric_setup)")
    p.add_argument("--threads", help="torch threads of our CLI runs (default: the CLI's)")
    p.add_argument("--enhance", type=float, default=None, metavar="Q",
                   help="also decode the qualities up to Q with the default enhancer (points named MODEL+enh)")
    p.add_argument("--bd-window", type=float, nargs=2, default=[0.05, 1.0], metavar=("LOW", "HIGH"),
                   help="also give each BD-rate over the qualities both codecs reach within this bpp range")
    p.add_argument("--rescore", metavar="JSON", help="recompute the BD-rates of this earlier output (no coding)")
    p.add_argument("--out", help="also write the points and BD-rates as JSON here")
    args = p.parse_args(argv)
    if args.rescore:
        return rescore(args.rescore, tuple(args.bd_window), args.out)
    metrics = [m.replace("-", "_") for m in args.metrics.split(",")]
    points: list[dict] = []

    def show(pt):
        print(f"{pt['codec']:>10} {pt['param']:>8} {pt['bpp']:>7.4f} " +
              " ".join(f"{m} {pt[m]:.4f}" for m in metrics if m in pt), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mosaic.tif"
        build_named_raster(src, args.raster, args.size, args.images)
        with rasterio.open(src) as ds:
            ref = np.ascontiguousarray(ds.read().transpose(1, 2, 0))
        for model in args.models:
            for q in qualities(model):
                t0 = time.perf_counter()
                decodes = {model: ["--no-enhance"]}
                if args.enhance is not None and float(q) <= args.enhance:
                    decodes[f"{model}+enh"] = ["--enhance"]
                bpp, outs = cli_roundtrip(src, Path(tmp), ["--quality", q, "--model", model],
                                          ["--threads", args.threads] if args.threads else [], decodes)
                for name, out in outs.items():
                    pt = dict(codec=name, param=float(q), bpp=bpp, seconds=time.perf_counter() - t0,
                              **measure(ref, out.transpose(1, 2, 0), metrics))
                    points.append(pt)
                    show(pt)
        anchors = json.loads(Path(args.anchors).read_text())["points"] if args.anchors else []
        ours = {*args.models, *(f"{m}+enh" for m in args.models)}
        points.extend(pt for pt in anchors if pt["codec"] not in ours and pt["codec"] not in CODECS)
        for name in args.codecs.split(","):
            reused = [pt for pt in anchors if pt["codec"] == name]
            if reused:
                points.extend(reused)
                continue
            codec = CODECS[name](EvalOptions())
            search = RateSearch(codec, ref)
            for target in args.bpp:
                enc = search.match(target)
                if not enc.hit and any(abs(pt["bpp"] / enc.bpp - 1) < 0.03 for pt in points if pt["codec"] == name):
                    continue  # the codec cannot reach the target: its nearest point is already in
                out = codec.decode(enc.data, ref.shape[:2])
                pt = dict(codec=name, param=enc.quality, bpp=enc.bpp, target=target, hit=enc.hit,
                          **measure(ref, out, metrics))
                points.append(pt)
                show(pt)
    summary = bd_summary(points, metrics, tuple(args.bd_window))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "raster": args.raster, "size": args.size, "points": points,
                                              "bd_rate": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
