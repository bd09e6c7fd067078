"""Seconds per ELIC training step for each ``--precision`` of ``training.train_elic``, and in
float32 on contiguous (NCHW) tensors, the trainer's layout before it went channels-last;
with ``--compile`` also the precision ``--precision auto`` picks here (bf16 where the CPU
computes it natively, else fp32) with the step's forward and loss compiled
(``train_elic --compile``).

One step as the trainer runs it (forward, rate-distortion loss, backward, Adam, the
entropy path fake-quantised with ``--exact-qat``), on random crops, one step of each variant
in turn (the host's speed drifts), after two warm-up steps each (the first compiles). The
rest of a real step (drawing crops, the auxiliary loss) is the same for every variant and
is left out.

    python benchmarks/train_step_speed.py --model elic-v3 --threads 2 --out results/train_step_speed.json
    python benchmarks/train_step_speed.py --model elic-v3 --threads 2 --compile --steps 12 \
        --out results/train_step_speed.json
    python benchmarks/train_step_speed.py --model elic-v3 --threads 2 --compile --steps 3 \
        --rounds 1 --out results/train_step_speed_avx2.json   # on a CPU without native bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models import REGISTRY  # noqa: E402
from core.models.elic import build_model  # noqa: E402
from training import qat  # noqa: E402
from training.train_elic import PRECISIONS, native_precision, step_loss_fn  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="elic-v3", choices=sorted(REGISTRY))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--steps", type=int, default=4, help="timed steps per precision and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="also the precision --precision auto picks, with the forward and loss compiled")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = REGISTRY[args.model]
    lambdas = torch.tensor(spec.lambdas)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.crop, args.crop, generator=gen)
    levels = torch.randint(0, spec.levels, (args.batch,), generator=gen).float()
    variants = {"fp32, contiguous": ("fp32", torch.contiguous_format)}
    variants.update({name: (name, torch.channels_last) for name in PRECISIONS})
    native = native_precision(torch.device("cpu"))
    if args.compile:
        variants[f"{native}, compiled"] = (native, torch.channels_last)
    runs = {}
    for name, (precision, layout) in variants.items():
        torch.manual_seed(0)
        net = build_model(spec).to(memory_format=layout)
        qat.enable(net)
        net.train()
        loss_fn = step_loss_fn(name.endswith("compiled"))
        runs[name] = (net, torch.optim.Adam(net.parameters(), lr=1e-5), x.contiguous(memory_format=layout),
                      PRECISIONS[precision], loss_fn)

    def step(name: str) -> float:
        net, opt, batch, dtype, loss_fn = runs[name]
        t = time.perf_counter()
        loss, _, _ = loss_fn(net, batch, levels, lambdas, dtype)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for name in runs:
        step(name)  # warm-up: oneDNN picks and caches its kernels; torch.compile compiles
        step(name)
    times = {name: [] for name in runs}
    for _ in range(args.rounds * args.steps):
        for name in runs:
            times[name].append(step(name))
    rows = {name: {"seconds_per_step": statistics.median(t), "runs": [round(v, 3) for v in t]}
            for name, t in times.items()}
    base = rows["fp32, contiguous"]["seconds_per_step"]
    for name, row in rows.items():
        row["steps_per_second_vs_contiguous_fp32"] = base / row["seconds_per_step"]
        print(f"{name}: {row['seconds_per_step']:.3f} s/step (x{row['steps_per_second_vs_contiguous_fp32']:.2f} "
              "the steps of contiguous fp32)")
    if args.compile:  # per pair of neighbouring steps: the drift of the host cancels
        ratios = [a / b for a, b in zip(times[native], times[f"{native}, compiled"])]
        rows[f"{native}, compiled"][f"steps_per_second_vs_{native}_paired"] = statistics.median(ratios)
        print(f"compiled: x{statistics.median(ratios):.2f} the steps per second of {native} (paired)")
    result = {"command": "python benchmarks/train_step_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": spec.name, "batch": args.batch, "crop": args.crop, "threads": torch.get_num_threads(),
              "cpu": cpu_name(), "native_precision": native, "torch": torch.__version__, "precisions": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
