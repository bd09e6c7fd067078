"""What scene borders inside a tile cost a model: 768 px mosaics of nine 256 px UCM val
scenes, each coded as one tile and as its nine scenes alone, at equal rate levels.

Rate is the model's likelihoods (no container), distortion the pooled MSE of the mosaics:
the gap between the two rows is what a tile spanning borders pays, not what a container
pays (``benchmarks/mosaic_tiling.sh`` measures whole files). ``training.train_elic
--mosaic`` trains on such borders; run this before and after to see what it buys.

    python benchmarks/scene_borders.py --weights core/weights/elic-v3.safetensors runs/elic-v3/last.pt \
        --out results/campaign/scene_borders.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models import REGISTRY, build_model  # noqa: E402
from training.data import list_images, load_image  # noqa: E402
from training.train_elic import likelihood_bits, read_state  # noqa: E402

SCENE = 256
GRID = 3  # scenes per side of a mosaic


def scene_mosaics(folder: str, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` mosaics (3, 768, 768) of distinct 256 x 256 scenes drawn at random."""
    paths = list_images([folder])
    rng = random.Random(seed)
    mosaics = []
    for _ in range(count):
        scenes = [a for a in (load_image(p) for p in rng.sample(paths, 2 * GRID * GRID))
                  if a.shape[1:] == (SCENE, SCENE)][: GRID * GRID]
        rows = [np.concatenate(scenes[r * GRID:(r + 1) * GRID], axis=2) for r in range(GRID)]
        mosaics.append(torch.from_numpy(np.concatenate(rows, axis=1)).float())
    return mosaics


@torch.no_grad()
def code(net, x: torch.Tensor, level: int) -> tuple[float, float]:
    """(bits, summed squared error) of one image at a 0-based rate level."""
    out = net(x[None], torch.tensor([float(level)]))
    return float(likelihood_bits(out["likelihoods"]).sum()), float((out["x_hat"].clamp(0, 1) - x[None]).pow(2).sum())


def measure(net, mosaics, level: int) -> dict:
    rows = {}
    for mode in ("one tile", "nine scenes"):
        bits = se = 0.0
        for x in mosaics:
            parts = [x] if mode == "one tile" else [
                x[:, r * SCENE:(r + 1) * SCENE, c * SCENE:(c + 1) * SCENE] for r in range(GRID) for c in range(GRID)]
            for part in parts:
                b, s = code(net, part, level)
                bits, se = bits + b, se + s
        pixels = sum(x.shape[1] * x.shape[2] for x in mosaics)
        rows[mode] = {"bpp": bits / pixels, "psnr": float(10 * np.log10(1.0 / (se / (3 * pixels))))}
    one, nine = rows["one tile"], rows["nine scenes"]
    rows["border cost"] = {"bits_percent": 100 * (one["bpp"] / nine["bpp"] - 1), "psnr_db": one["psnr"] - nine["psnr"]}
    return rows


def probe_options(description: str, val: str, mosaics: int, levels: list[int]) -> argparse.ArgumentParser:
    """The options of the model probes (this one and ``transform_ceiling.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="elic-v3", choices=sorted(REGISTRY))
    p.add_argument("--weights", nargs="+", required=True, help=".safetensors exports or training checkpoints (.pt)")
    p.add_argument("--val", default=val)
    p.add_argument("--mosaics", type=int, default=mosaics)
    p.add_argument("--levels", type=int, nargs="+", default=levels, help="1-based rate levels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    return p


def networks(model: str, weights: list[str]):
    """(weights, network in eval mode, training step or None) for each weights file, one at a
    time; a checkpoint is read once, without unpickling code."""
    for path in weights:
        if path.endswith(".pt"):
            ck = torch.load(path, map_location="cpu", weights_only=True)
            state, step = ck["model"], ck.get("step")  # a widened init.pt has no step
        else:
            state, step = read_state(path), None
        net = build_model(REGISTRY[model])
        net.load_state_dict(state, strict=False)
        yield path, net.eval(), step


def main(argv=None) -> int:
    args = probe_options(__doc__.split("\n\n")[0], "../shared/data/val/ucmerced", 4, [3, 7, 11]).parse_args(argv)
    torch.set_num_threads(args.threads)
    mosaics = scene_mosaics(args.val, args.mosaics)
    result = {"command": "python benchmarks/scene_borders.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "mosaics": len(mosaics), "runs": []}
    for weights, net, step in networks(args.model, args.weights):
        run = {"weights": weights, "step": step, "levels": {}}
        for level in args.levels:
            rows = measure(net, mosaics, level - 1)
            run["levels"][f"q{level}"] = rows
            cost = rows["border cost"]
            print(f"{Path(weights).name} q{level}: one tile {rows['one tile']['bpp']:.3f} bpp {rows['one tile']['psnr']:.2f} dB, "
                  f"nine scenes {rows['nine scenes']['bpp']:.3f} bpp {rows['nine scenes']['psnr']:.2f} dB: borders cost "
                  f"{cost['bits_percent']:+.1f} % bits, {cost['psnr_db']:+.2f} dB", flush=True)
        result["runs"].append(run)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
