"""What the three enhancer trainers share: options, run folder, checkpoints, log, LPIPS.

Conventions follow ``training.train_elic``: ``--out`` run folder holding ``last.pt``
(``torch.save``, read back with ``weights_only=True``) and ``log.jsonl``; ``--resume``
continues after a restart; ``--export`` writes fp16 safetensors and exits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.compare.psnr import psnr_from_mse

from .clock import TrainingClock


def add_common_args(p: argparse.ArgumentParser, steps: int, batch: int, crop: int, lr: float) -> None:
    p.add_argument("--data", nargs="+", help="training folders/files (images, GeoTIFFs)")
    p.add_argument("--val", nargs="*", default=[], help="validation folders/files")
    p.add_argument("--out", required=True, help="run folder: checkpoints and log")
    p.add_argument("--config", default="lite", choices=["lite", "tiny"], help="network sizes (tiny: tests only)")
    p.add_argument("--steps", type=int, default=steps, help="total optimisation steps")
    p.add_argument("--batch", type=int, default=batch, help="crops per step")
    p.add_argument("--crop", type=int, default=crop, help="crop size in pixels (multiple of 64)")
    p.add_argument("--lr", type=float, default=lr, help="learning rate (cosine decay to 10%% over --steps)")
    p.add_argument("--lpips-weight", type=float, default=1.0,
                   help="weight of the LPIPS perceptual loss (0: off, no LPIPS weights needed)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    p.add_argument("--val-every", type=int, default=250, help="validate every N steps")
    p.add_argument("--val-size", type=int, default=256, help="validation centre-crop size")
    p.add_argument("--val-limit", type=int, default=16, help="at most this many validation images")
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10, help="log training loss every N steps")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=0,
                   help="stop (with a checkpoint) after this wall time; the LR schedule (and the GAN start, "
                        "codebook restarts) then follow whichever of --steps and the time runs out first")


def setup_device(args) -> torch.device:
    """Torch device of ``--device``, with ``--threads`` applied; TF32 matmuls on CUDA."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def get_config(name: str):
    from core.models.vqgan import TINY_CONFIG, EnhancerConfig

    return TINY_CONFIG if name == "tiny" else EnhancerConfig()


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def load_lpips(device, required: bool):
    """LPIPS (AlexNet) from ``core.evaluation.metrics`` as a loss ``f(x, y) -> (B,)`` on [0, 1] images.

    Returns None when not ``required`` and the metric or its local weights are missing.
    """
    try:
        from core.evaluation.metrics import LPIPS  # weights from the local cache (core.evaluation.weight_cache)

        net = LPIPS("alex").to(device)
        net.eval()
        for prm in net.parameters():
            prm.requires_grad_(False)
        return net
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        if required:
            print(f"error: LPIPS is not available ({exc}); run `python -m core.evaluation.metric_setup setup` "
                  "or pass --lpips-weight 0", file=sys.stderr)
            raise SystemExit(2)
        return None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [0, 1] (``a`` clamped first), as everywhere: ``core.compare.psnr``."""
    return psnr_from_mse(float(F.mse_loss(a.clamp(0, 1), b)), peak=1.0)


class Run:
    """Run folder: checkpoint (atomic), JSON-lines log, elapsed-time accounting."""

    def __init__(self, out: str, max_minutes: float = 0):
        self.dir = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.dir / "last.pt"
        self.step = 0
        self.clock = TrainingClock()
        self.start = time.time()
        self.max_s = max_minutes * 60
        self._log = None

    def load(self, device) -> dict | None:
        if not self.ckpt.exists():
            return None
        ck = torch.load(self.ckpt, map_location=device, weights_only=True)
        self.step, self.clock.elapsed = int(ck["step"]), float(ck["elapsed"])
        print(f"resumed from {self.ckpt} at step {self.step}", file=sys.stderr)
        return ck

    def save(self, state: dict) -> None:
        state = dict(state, step=self.step, elapsed=self.elapsed)
        tmp = self.dir / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.ckpt)

    @property
    def elapsed(self) -> float:
        """Training time (seconds) over every session of the run, pauses left out."""
        return self.clock.elapsed

    def advance(self) -> None:
        self.step += 1
        self.clock.step()

    def pause_clock(self) -> None:
        """Do not count validation time as training time."""
        self.clock.skip()

    def schedule_step(self, total: int) -> int:
        """Step that the schedules read: the real step, or further on when ``--max-minutes`` ends first.

        With a wall-time budget the learning rate decays over the time actually available, so
        a run cut by time (e.g. on a lent GPU) still ends at the low end of its schedule.
        """
        if not self.max_s:
            return self.step
        return max(self.step, int(total * (time.time() - self.start) / self.max_s))

    def out_of_time(self) -> bool:
        return bool(self.max_s) and time.time() - self.start > self.max_s

    def log(self, rec: dict, echo: bool = False) -> None:
        if self._log is None:
            self._log = open(self.dir / "log.jsonl", "a")
        rec = {"step": self.step, "elapsed_s": round(self.elapsed, 1), **rec}
        self._log.write(json.dumps(rec) + "\n")
        self._log.flush()
        if echo:
            print(json.dumps(rec), file=sys.stderr)


def frozen_state(module: torch.nn.Module) -> dict:
    """Copy of a module's tensors, to check later that they did not change."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def freeze(module: torch.nn.Module) -> None:
    module.eval()
    for prm in module.parameters():
        prm.requires_grad_(False)


def export_checkpoint(run: Run, ck: dict | None, path: str, info_of) -> int:
    """``--export``: the run's enhancer checkpoint as fp16 safetensors at ``path``, its metadata
    ``info_of(checkpoint info)``; prints the sha256 as JSON. 2 when the run has no checkpoint."""
    if ck is None:
        print(f"no checkpoint at {run.ckpt}", file=sys.stderr)
        return 2
    from core.models import save_enhancer
    from core.models.hpin import Enhancer
    from core.models.vqgan import EnhancerConfig

    net = Enhancer(EnhancerConfig.from_dict(ck["config"]))
    net.load_state_dict(ck["model"])
    sha = save_enhancer(net.eval(), path, info_of(ck.get("info", {})))
    print(json.dumps({"export": path, "sha256": sha, "step": run.step}))
    return 0
