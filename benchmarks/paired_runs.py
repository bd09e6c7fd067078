"""Compare two short training runs continued from the same checkpoint with the same seed
(so they draw the same batches): paired training losses, speed, and each run's last
validation against the validation at the start (BD-rate, PSNR on the val crops).

The pilot that chose ``--precision bf16`` for the ELIC v3 campaign (both from the
campaign's checkpoint at step 32400, 120 steps at lr 1e-4, 2 threads):

    python -m training.train_elic --model elic-v3 --data ../shared/data/train --val ../shared/data/val \\
        --out runs/pilotA --resume --exact-qat --high-rate-weight 3 --steps 32520 --batch 8 --crop 192 \\
        --lr 1e-4 --decay-at 1.0 --val-every 100000 --val-limit 16 --log-every 5 --threads 2 --precision fp32
    (the same with --out runs/pilotB --precision bf16)
    python benchmarks/paired_runs.py --a runs/pilotA/log.jsonl --b runs/pilotB/log.jsonl \\
        --start runs/elic-v3/log.jsonl --start-step 32400 --out results/campaign/precision_pilot.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.evaluation.bd_rate import bd_rate  # noqa: E402


def read_log(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def val_curve(val: dict) -> tuple[list[float], list[float]]:
    keys = sorted(val, key=lambda k: int(k[1:]))
    return [val[k]["bpp"] for k in keys], [val[k]["psnr"] for k in keys]


def last_val(log: list[dict], step: int | None = None) -> dict:
    vals = [r for r in log if "val" in r and (step is None or r["step"] == step)]
    if not vals:
        raise SystemExit(f"no validation{'' if step is None else f' at step {step}'} in the log")
    return vals[-1]


def training_rows(log: list[dict], start_step: int) -> dict[int, dict]:
    """step -> the logged training record, after ``start_step``."""
    return {r["step"]: r for r in log if "loss" in r and r["step"] > start_step}


def summary(log: list[dict], start_step: int, start_val: dict) -> dict:
    train = training_rows(log, start_step)
    steps = sorted(train)
    val = last_val(log)
    bpp, psnr = val_curve(val["val"])
    return {"steps": [steps[0], steps[-1]],
            "seconds_per_step": (train[steps[-1]]["elapsed_s"] - train[steps[0]]["elapsed_s"]) / (steps[-1] - steps[0]),
            "val_step": val["step"], "val_bd_rate_vs_start_percent": bd_rate(*val_curve(start_val), bpp, psnr),
            "val_top": {"bpp": bpp[-1], "psnr": psnr[-1]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="log.jsonl of run A (the reference)")
    p.add_argument("--b", required=True, help="log.jsonl of run B")
    p.add_argument("--start", required=True, help="log.jsonl holding the validation at the start")
    p.add_argument("--start-step", type=int, required=True)
    p.add_argument("--out")
    args = p.parse_args(argv)
    a, b = read_log(args.a), read_log(args.b)
    start = last_val(read_log(args.start), args.start_step)["val"]
    la, lb = training_rows(a, args.start_step), training_rows(b, args.start_step)
    common = sorted(set(la) & set(lb))
    mean = lambda log, key: float(np.mean([log[s][key] for s in common]))  # noqa: E731
    result = {
        "command": "python benchmarks/paired_runs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "start_step": args.start_step,
        "start_val_top": dict(zip(("bpp", "psnr"), (v[-1] for v in val_curve(start)))),
        "paired_logged_steps": len(common),
        "b_over_a": {key: mean(lb, key) / mean(la, key) for key in ("loss", "mse", "bpp")},
        "a": summary(a, args.start_step, start), "b": summary(b, args.start_step, start),
    }
    result["b_steps_per_second_vs_a"] = result["a"]["seconds_per_step"] / result["b"]["seconds_per_step"]
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
