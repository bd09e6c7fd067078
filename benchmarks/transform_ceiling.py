"""How close a model's rate levels come to what its transforms can reproduce at all.

synthesis(analysis(x)) with the latent left unquantised is the ceiling no number of bits
can pass; the same with the latent rounded (no entropy coding needed) is what a level's
quantiser leaves of it. Where a top level's rounded PSNR is near the ceiling, more bits
cannot help: only better transforms can (``../shared/DESIGN.md``, "what caps the high rates").
Measured on 768 px mosaics of UCM val scenes (``scene_borders.scene_mosaics``) and on
512 px crops of the Dubai val images; mean PSNR over the images.

    python benchmarks/transform_ceiling.py --weights core/weights/elic-v3.safetensors \
        --out results/campaign/transform_ceiling.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scene_borders import networks, probe_options, scene_mosaics  # noqa: E402
from training.data import list_images, load_image  # noqa: E402

CROP = 512


def dubai_crops(folder: str) -> list[torch.Tensor]:
    """Three 512 px crops per Dubai val image: top left, centre, bottom right."""
    crops = []
    for path in list_images([folder]):
        img = load_image(path)
        h, w = img.shape[1:]
        for y, x in ((0, 0), ((h - CROP) // 2, (w - CROP) // 2), (h - CROP, w - CROP)):
            crops.append(torch.from_numpy(np.ascontiguousarray(img[:, y:y + CROP, x:x + CROP])).float())
    return crops


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * np.log10(1.0 / float((a.clamp(0, 1) - b).pow(2).mean())))


@torch.no_grad()
def ceiling(net, images, level: int) -> dict:
    lv = torch.tensor([float(level)])
    unquantised, rounded = [], []
    for x in images:
        y = net.g_a(x[None]) * net.gain(lv)
        unquantised.append(psnr(net.g_s(y * net.inverse_gain(lv)), x[None]))
        rounded.append(psnr(net.g_s(torch.round(y) * net.inverse_gain(lv)), x[None]))
    return {"unquantised_psnr": float(np.mean(unquantised)), "rounded_psnr": float(np.mean(rounded))}


def main(argv=None) -> int:
    args = probe_options(__doc__.split("\n\n")[0], "../shared/data/val", 3, [7, 9, 11]).parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = {"ucm scene mosaics": scene_mosaics(str(Path(args.val) / "ucmerced"), args.mosaics),
            "dubai crops": dubai_crops(str(Path(args.val) / "dubai"))}
    result = {"command": "python benchmarks/transform_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "images": {k: len(v) for k, v in sets.items()}, "runs": []}
    for weights, net, _ in networks(args.model, args.weights):
        run = {"weights": weights, "sets": {}}
        for name, images in sets.items():
            run["sets"][name] = {}
            for level in args.levels:
                row = ceiling(net, images, level - 1)
                run["sets"][name][f"q{level}"] = row
                print(f"{Path(weights).name} {name} q{level}: unquantised {row['unquantised_psnr']:.2f} dB, "
                      f"rounded {row['rounded_psnr']:.2f} dB", flush=True)
        result["runs"].append(run)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
