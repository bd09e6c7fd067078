"""Are a widened model's new latent channels used yet? (training/widen.py, elic-v3 -> elic-v4)

For each checkpoint (a train_elic ``last.pt`` or a widened ``init.pt``): the gain-scaled
latent of a few val crops at some rate levels, split into the old channels and the new ones
(``--old-channels`` on), with the mean magnitude and the fraction that rounds to a non-zero
symbol. New channels that stay at zero cost nothing and add nothing; the fraction shows when
training starts to code information in them.

    python benchmarks/latent_growth.py --model elic-v4 --old-channels 192 \
        --checkpoints runs/elic-v4/init.pt runs/elic-v4/last.pt --labels init now
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from scene_borders import networks  # noqa: E402
from training.data import center_crops, list_images  # noqa: E402


@torch.no_grad()
def usage(checkpoint: str, net, step: int | None, old: int, crops: list[torch.Tensor], levels: list[int]) -> dict:
    rows = {}
    for level in levels:
        ys = [net.analysis(x[None], torch.tensor([float(level)])) for x in crops]
        new = torch.cat([y[:, old:].flatten() for y in ys])
        kept = torch.cat([y[:, :old].flatten() for y in ys])
        rows[str(level)] = dict(new_mean_abs=float(new.abs().mean()), new_nonzero=float((new.round() != 0).float().mean()),
                                old_mean_abs=float(kept.abs().mean()), old_nonzero=float((kept.round() != 0).float().mean()))
    return dict(checkpoint=checkpoint, step=step, levels=rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="elic-v4")
    p.add_argument("--old-channels", type=int, default=192, help="the latent's width before widening")
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", help="one per checkpoint (default: the paths)")
    p.add_argument("--levels", type=int, nargs="+", default=[5, 10], help="0-based rate levels")
    p.add_argument("--crops", type=int, default=4, help="val crops (256 px, spread over the val images)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    crops = center_crops(list_images([str(ROOT.parent / "shared/data/val")]), 256, limit=args.crops)
    labels = args.labels or args.checkpoints
    res = {}
    for label, (ck, net, step) in zip(labels, networks(args.model, args.checkpoints)):  # each read once
        res[label] = usage(ck, net, step, args.old_channels, crops, args.levels)
        for level, r in res[label]["levels"].items():
            print(f"{label:>24} (step {res[label]['step']}) level {level}: new channels mean |y| {r['new_mean_abs']:.4f}, "
                  f"non-zero {r['new_nonzero']:.4f} (old: {r['old_mean_abs']:.3f}, {r['old_nonzero']:.3f})")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/latent_growth.py " + " ".join(sys.argv[1:]),
                                              "model": args.model, "old_channels": args.old_channels,
                                              "checkpoints": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
