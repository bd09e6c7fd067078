"""Would a residual layer lift the top rates? (a feasibility estimate; nothing ships from it)

elic-v3's top levels saturate because its transforms cap what any rate can buy (the card's
Limits). A second layer could code what the decoder misses, ``x - x_hat``, with a fixed
linear transform: each B x B x 3 block of the residual projected on its principal
components (fitted on training residuals at that level), each coefficient quantised with
one uniform step, coded with a static Laplacian per component (fitted on the same training
residuals). Rate is the Laplacian's cross-entropy; the base layer's is the model's own
likelihood (both without container overhead). A static model is a lower bound on what an
adaptive one would gain.

Measured on the large-raster benchmark's UCM val mosaic (160 scenes, 4096 x 2560), coded in
non-overlapping 512 px tiles: for each level and step, the bits the layer adds and the dB
it buys. Those deltas are then added to the real points of ``--anchors`` (an output of
``large_raster_rd.py`` on the same mosaic, whole containers) to give the BD-rate against
AVIF, plain and with the residual points (the concave hull of all operating points), over a
fixed PSNR interval: that of the plain curve's 0.05-1.0 bpp, and that up to the plain top.

    python benchmarks/residual_layer.py --anchors results/campaign/val-mosaic.json \
        --out results/campaign/residual_layer.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from large_raster_rd import val_mosaic_rgb  # noqa: E402
from scene_borders import networks  # noqa: E402

from core.compare.psnr import psnr_from_mse  # noqa: E402
from core.evaluation.metrics import psnr  # noqa: E402
from training.data import list_images, load_image  # noqa: E402
from training.train_elic import likelihood_bits  # noqa: E402

TILE = 512


def train_crops(folder: str, count: int, side: int = 256, seed: int = 1) -> list[np.ndarray]:
    rng, paths, crops = random.Random(seed), list_images([folder]), []
    while len(crops) < count:
        img = load_image(rng.choice(paths))
        h, w = img.shape[1:]
        if h >= side and w >= side:
            y, x = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
            crops.append(np.ascontiguousarray(img[:, y:y + side, x:x + side]))
    return crops


@torch.no_grad()
def base_layer(net, image: np.ndarray, level: int) -> tuple[float, np.ndarray]:
    """(bits by the model's likelihoods, decoded image on 0..255 as coded: rounded)."""
    bits, out = 0.0, np.empty_like(image)
    for y in range(0, image.shape[1], TILE):
        for x in range(0, image.shape[2], TILE):
            tile = torch.from_numpy(np.ascontiguousarray(image[:, y:y + TILE, x:x + TILE]))[None]
            res = net(tile, torch.tensor([float(level)]))
            bits += float(likelihood_bits(res["likelihoods"]).sum())
            out[:, y:y + TILE, x:x + TILE] = res["x_hat"][0].clamp(0, 1).numpy()
    return bits, np.round(out * 255)


def blocks(a: np.ndarray, b: int) -> np.ndarray:
    """(c, h, w) -> (blocks, c * b * b); h and w multiples of b."""
    c, h, w = a.shape
    return a.reshape(c, h // b, b, w // b, b).transpose(1, 3, 0, 2, 4).reshape(-1, c * b * b)


def laplace_bits(q: np.ndarray, step: float, scale: np.ndarray) -> float:
    """Bits of integer symbols ``q`` (n, k) under a Laplacian of ``scale`` (k,) per component,
    each symbol the probability of its quantisation bin."""
    def cdf(t):
        return np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(t, 0) / scale))
    p = cdf((q + 0.5) * step) - cdf((q - 0.5) * step)
    return float(-np.log2(np.clip(p, 1e-12, 1)).sum())


def concave_hull(points: list[dict]) -> list[dict]:
    """The operating points on the upper concave hull of (bpp, PSNR): those a choice of level
    and step would use."""
    hull = []
    for p in sorted(points, key=lambda p: p["bpp"]):
        while len(hull) >= 2 and ((hull[-1]["psnr"] - hull[-2]["psnr"]) * (p["bpp"] - hull[-2]["bpp"])
                                  <= (p["psnr"] - hull[-2]["psnr"]) * (hull[-1]["bpp"] - hull[-2]["bpp"])):
            hull.pop()
        hull.append(p)
    return hull


def bd_on(anchor: list[dict], curves: dict[str, list[dict]], low: float, high: float) -> dict:
    """Mean log-rate difference (%) of each curve against ``anchor`` over the same PSNR interval
    (low, high): unlike a rate window, adding better points at the top cannot move it."""
    from scipy.interpolate import PchipInterpolator

    def log_rate(points):
        pts = sorted(points, key=lambda p: p["psnr"])
        return PchipInterpolator([p["psnr"] for p in pts], np.log([p["bpp"] for p in pts]))

    q = np.linspace(low, high, 1000)
    ref = log_rate(anchor)(q)
    return {name: float(100 * (np.exp(np.mean(log_rate(pts)(q) - ref)) - 1)) for name, pts in curves.items()}


def psnr_at(points: list[dict], bpp: float) -> float:
    pts = sorted(points, key=lambda p: p["bpp"])
    return float(np.interp(np.log(bpp), np.log([p["bpp"] for p in pts]), [p["psnr"] for p in pts]))


def summary(rows: list[dict], anchors: list[dict], model: str) -> dict:
    """BD-rates against AVIF of the real plain points and of the plain points plus the residual
    layer's deltas (concave hull), over the PSNR interval of the plain curve's 0.05-1.0 bpp
    (within AVIF's measured range) and over the interval up to the plain top."""
    real = {int(pt["param"]): pt for pt in anchors if pt["codec"] == model}
    avif = [pt for pt in anchors if pt["codec"] == "avif"]
    plain = [{"bpp": pt["bpp"], "psnr": pt["psnr"]} for pt in real.values()]
    layered = plain + [{"bpp": real[r["quality"]]["bpp"] + lay["added_bpp"],
                        "psnr": real[r["quality"]]["psnr"] + lay["added_db"]}
                       for r in rows if r["quality"] in real for lay in r["layers"]]
    curves = {"plain": concave_hull(plain), "with residual layer": concave_hull(layered)}
    floor = max(min(p["psnr"] for p in avif), psnr_at(plain, 0.05))
    out = {"hull": curves["with residual layer"]}
    for label, top in (("0.05-1.0 bpp of the plain curve", psnr_at(plain, 1.0)),
                       ("up to the plain top", max(p["psnr"] for p in plain))):
        top = min(top, max(p["psnr"] for p in avif))
        out[f"psnr {floor:.2f}-{top:.2f} dB ({label})"] = bd_on(avif, curves, floor, top)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="elic-v3")
    p.add_argument("--weights", default="core/weights/elic-v3.safetensors")
    p.add_argument("--anchors", required=True, help="large_raster_rd.py output on the val mosaic")
    p.add_argument("--qualities", type=int, nargs="+", default=[8, 10, 11], help="1-based levels that get a layer")
    p.add_argument("--steps", type=float, nargs="+", default=[40, 56, 80, 112], help="quantiser steps on 0..255")
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--train", default=str(ROOT.parent / "shared/data/train"))
    p.add_argument("--train-crops", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows-from", help="reuse the levels of an earlier output (no coding)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    anchors = json.loads(Path(args.anchors).read_text())["points"]
    if args.rows_from:
        rows = json.loads(Path(args.rows_from).read_text())["levels"]
    else:
        rows = measure(args)
    result = summary(rows, anchors, args.model)
    for k, v in result.items():
        if k != "hull":
            print(f"BD-rate vs AVIF over {k}: " + ", ".join(f"{n} {x:+.2f} %" for n, x in v.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python benchmarks/residual_layer.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": args.model, "weights": args.weights, "block": args.block, "tile": TILE,
            "levels": rows, "bd_rate_vs_avif": result}, indent=1) + "\n")
    return 0


def measure(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    _, net, _ = next(networks(args.model, [args.weights]))
    mosaic = val_mosaic_rgb().transpose(2, 0, 1).astype(np.float32) / 255
    crops = train_crops(args.train, args.train_crops)
    x255, pixels = mosaic * 255, mosaic.shape[1] * mosaic.shape[2]
    rows = []
    for quality in args.qualities:
        level = quality - 1
        residuals = np.concatenate([blocks(c * 255 - base_layer(net, c, level)[1], args.block) for c in crops])
        _, basis = np.linalg.eigh(residuals.T @ residuals / len(residuals))
        basis = basis[:, ::-1]
        scale = np.abs(residuals @ basis).mean(0) + 1e-6
        bits, decoded = base_layer(net, mosaic, level)
        res = blocks(x255 - decoded, args.block)
        coeffs = res @ basis
        base = {"quality": quality, "bpp": bits / pixels, "psnr": psnr(x255, decoded), "layers": []}
        for step in args.steps:
            q = np.round(coeffs / step)
            left = res - (q * step) @ basis.T
            layer = {"step": step, "added_bpp": laplace_bits(q, step, scale) / pixels,
                     "psnr": psnr_from_mse(np.mean(left**2))}
            layer["added_db"] = layer["psnr"] - base["psnr"]
            base["layers"].append(layer)
            print(f"q{quality}: base {base['bpp']:.3f} bpp {base['psnr']:.2f} dB, step {step:g}: "
                  f"+{layer['added_bpp']:.3f} bpp +{layer['added_db']:.2f} dB", flush=True)
        rows.append(base)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
