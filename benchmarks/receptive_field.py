"""How far the transforms see: the margins format 3 uses, measured rather than guessed.

Format 3 codes each tile's latents on their own; the decoder synthesises a tile from its
latents plus ``L`` latent samples of its neighbours (``LATENT_MARGIN``), the encoder runs
the analysis on the tile plus ``P`` pixels of its neighbours (``ANALYSIS_MARGIN``). This
measures, with the shipped model on a real aerial image:

1. the synthesis receptive field: perturb one latent sample (every channel, by the
   latent's standard deviation) and record how far from its 16 px footprint the output
   pixels change (largest absolute change per ring of distance, in latent samples);
2. what each decoder margin gives: the image cut into tiles, each synthesised from its
   latent window (tile + L on every side), stitched, and compared with one synthesis of
   the whole latent (PSNR, the target being >= 45 dB);
3. what each encoder margin gives: tile-wise analysis with P px of context against the
   whole-image analysis (share of latent symbols that round differently).

    python benchmarks/receptive_field.py --out results/receptive_field.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models import get_model  # noqa: E402
from core.options import DEFAULT_MODEL  # noqa: E402


def load_image(path: Path, size: int) -> torch.Tensor:
    from rasterio import open as ropen

    with ropen(path) as ds:
        data = ds.read(window=((0, size), (0, size)))[:3]
    return torch.from_numpy(data.astype(np.float32) / 255.0)[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@torch.inference_mode()
def synthesis_reach(net, y: torch.Tensor, level: torch.Tensor, radius: int = 10) -> list[float]:
    """Largest |change| of the output at each latent distance from one perturbed latent sample."""
    _, _, h, w = y.shape
    cy, cx = h // 2, w // 2
    base = net.synthesis(y, level)
    bumped = y.clone()
    bumped[:, :, cy, cx] += y.std(dim=(2, 3))[0]
    diff = (net.synthesis(bumped, level) - base).abs().amax(1)[0]  # (H, W) pixels
    reach = []
    for d in range(radius + 1):  # pixels whose latent cell is exactly d away (Chebyshev)
        cells = np.zeros((h, w), bool)
        cells[max(0, cy - d): cy + d + 1, max(0, cx - d): cx + d + 1] = True
        if d:
            cells[cy - d + 1: cy + d, cx - d + 1: cx + d] = False
        mask = torch.from_numpy(np.kron(cells, np.ones((16, 16), bool)))
        reach.append(float(diff[mask].max()))
    return reach


@torch.inference_mode()
def tiled_synthesis(net, y: torch.Tensor, level, tile_latents: int, margin: int) -> torch.Tensor:
    """Each tile synthesised from its latent window (tile + ``margin`` each side, clipped), stitched."""
    _, _, h, w = y.shape
    out = torch.empty((1, 3, h * 16, w * 16))
    for r0 in range(0, h, tile_latents):
        for c0 in range(0, w, tile_latents):
            r1, c1 = min(h, r0 + tile_latents), min(w, c0 + tile_latents)
            a0, b0 = max(0, r0 - margin), max(0, c0 - margin)
            a1, b1 = min(h, r1 + margin), min(w, c1 + margin)
            x = net.synthesis(y[:, :, a0:a1, b0:b1], level)
            out[:, :, r0 * 16: r1 * 16, c0 * 16: c1 * 16] = x[:, :, (r0 - a0) * 16: (r1 - a0) * 16,
                                                                (c0 - b0) * 16: (c1 - b0) * 16]
    return out


@torch.inference_mode()
def tiled_analysis(net, x: torch.Tensor, level, tile: int, margin: int) -> torch.Tensor:
    _, _, H, W = x.shape
    y = torch.empty((1, net.log_gain.shape[1], H // 16, W // 16))
    for r0 in range(0, H, tile):
        for c0 in range(0, W, tile):
            a0, b0 = max(0, r0 - margin), max(0, c0 - margin)
            a1, b1 = min(H, r0 + tile + margin), min(W, c0 + tile + margin)
            t = net.analysis(x[:, :, a0:a1, b0:b1], level)
            y[:, :, r0 // 16: (r0 + tile) // 16, c0 // 16: (c0 + tile) // 16] = \
                t[:, :, (r0 - a0) // 16: (r0 - a0 + tile) // 16, (c0 - b0) // 16: (c0 - b0 + tile) // 16]
    return y


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(ROOT.parent / "shared/data/val/dubai/tile7_image_part_001.jpg"))
    p.add_argument("--size", type=int, default=1024, help="side of the crop in pixels (multiple of 64)")
    p.add_argument("--tile", type=int, default=256, help="tile side for the margin sweeps (multiple of 64)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--qualities", nargs="+", type=float, default=[1.0, 3.0, 6.0])
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = get_model(args.model, "cpu").net
    x = load_image(Path(args.image), args.size)
    result = {"command": " ".join(["python"] + sys.argv), "model": args.model, "image": Path(args.image).name,
              "size": args.size, "tile": args.tile, "qualities": {}}
    for q in args.qualities:
        level = torch.tensor([q - 1.0])
        y_whole = torch.round(net.analysis(x, level))  # quantised latents (means aside, as decoded)
        whole = net.synthesis(y_whole, level)
        reach = synthesis_reach(net, y_whole, level)
        decoder = {L: psnr(tiled_synthesis(net, y_whole, level, args.tile // 16, L), whole) for L in range(0, 7)}
        encoder = {}
        for P in (0, 16, 32, 64, 128):
            y_t = torch.round(tiled_analysis(net, x, level, args.tile, P))
            encoder[P] = float((y_t != y_whole).float().mean())
        result["qualities"][str(q)] = {"synthesis_max_change_by_latent_distance": reach,
                                       "stitched_vs_whole_psnr_db_by_latent_margin": decoder,
                                       "symbols_differing_from_whole_analysis_by_pixel_margin": encoder}
        print(f"q={q}: reach {[f'{v:.2g}' for v in reach]}")
        print(f"  decoder margin -> PSNR vs whole: {', '.join(f'{k}: {v:.1f}' for k, v in decoder.items())}")
        print(f"  encoder margin -> symbols differing: {', '.join(f'{k}: {v:.4f}' for k, v in encoder.items())}",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
