"""Train the variable-rate ELIC codec of ``core`` on folders of images or GeoTIFFs.

One network learns every rate level: each crop of a batch draws a level, and the loss
is ``lambda_level * 255^2 * MSE + bpp`` (plus compressai's auxiliary loss on the
entropy bottleneck). Checkpoints go to ``--out`` (``last.pt``), a JSON-lines log to
``--out/log.jsonl``; ``--resume`` continues after a restart.

Example::

    python -m training.train_elic --data ../shared/data/train --val ../shared/data/val \
        --out runs/elic-lite --steps 20000
    python -m training.train_elic --out runs/elic-lite --export core/weights/elic-lite.safetensors
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.compare.psnr import psnr_from_mse
from core.models import REGISTRY, build_model, save_weights

from .clock import TrainingClock
from .data import CropSampler, center_crops, list_images
from .new_group_lr import NewGroupSteps, new_group_slices
from .rate_proxy import rounded_rate
from .weight_average import WeightAverage


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # --precision -> the transforms' autocast type


def native_precision(device: torch.device) -> str:
    """``--precision auto``: bf16 where this device computes it natively (a CUDA GPU with bf16,
    a CPU with AVX512-BF16 or AMX, as for decoding: ``core.models.runtime.cpu_bf16``), else fp32:
    elsewhere bf16 is emulated and slow (``--precision``'s help gives the measured cost)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from core.models.runtime import cpu_bf16

    return "bf16" if device.type == "cpu" and cpu_bf16() else "fp32"


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_elic", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", help="training folders/files (images, GeoTIFFs)")
    p.add_argument("--val", nargs="*", default=[], help="validation folders/files")
    p.add_argument("--model", default="elic-lite", choices=sorted(REGISTRY), help="architecture (registry name)")
    p.add_argument("--out", required=True, help="run folder: checkpoints and log")
    p.add_argument("--steps", type=int, default=20000, help="total optimisation steps")
    p.add_argument("--batch", type=int, default=8, help="crops per step")
    p.add_argument("--crop", type=int, default=192, help="crop size in pixels (multiple of 64)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate (decays x0.1 at --decay-at)")
    p.add_argument("--decay-at", type=float, default=0.85, help="fraction of --steps where lr decays")
    p.add_argument("--aux-lr", type=float, default=1e-3, help="learning rate of the auxiliary loss")
    p.add_argument("--high-rate-weight", type=float, default=1.0,
                   help="draw the top rate level this many times as often as the lowest (linear in between; "
                        "1: uniform), so high rates are not starved when steps are few")
    p.add_argument("--mosaic", type=float, default=0.0,
                   help="fraction of crops assembled from four images (scene borders inside a tile, as in a "
                        "mosaic of chips); 0: crops of one image only")
    p.add_argument("--rounded-rate-groups", type=int, nargs="*", default=[],
                   help="channel groups (0-based) whose rate is that of the rounded latents, with no gradient "
                        "to them, until step --rounded-rate-until: a group added by training/widen.py leaves zero")
    p.add_argument("--rounded-rate-until", type=int, default=0, help="the global step --rounded-rate-groups ends at")
    p.add_argument("--new-group-lr-scale", type=float, default=1.0,
                   help="until --rounded-rate-until, the weights that write, read and code --rounded-rate-groups "
                        "take this many times the optimiser's step (training/new_group_lr.py): a widened group's "
                        "tiny rows reach the trained rows' scale sooner")
    p.add_argument("--new-group-only", action="store_true",
                   help="until --rounded-rate-until, train only the weights that write, read and code "
                        "--rounded-rate-groups; every other weight stays as it is")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    p.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    p.add_argument("--val-size", type=int, default=256, help="validation centre-crop size")
    p.add_argument("--val-limit", type=int, default=32, help="at most this many validation images")
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=20, help="log training loss every N steps")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    p.add_argument("--init", help="start from these weights (.safetensors or .pt) e.g. a base model")
    p.add_argument("--init-level-offset", type=int, default=0,
                   help="with --init: source level k becomes level k + this (gain tables mapped)")
    p.add_argument("--init-step", type=int, default=0,
                   help="with --init: the step the weights were trained to (a campaign continued on a new machine)")
    p.add_argument("--init-hours", type=float, default=0.0,
                   help="with --init: the training hours behind the weights (the learning curve's clock)")
    p.add_argument("--exact-qat", action="store_true",
                   help="train with the entropy path quantised like the bit-exact integer coder")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much training time; the lr decay then follows the time, not the steps")
    p.add_argument("--run-minutes", type=float, default=None,
                   help="like --max-minutes, counted from this start (with --resume, a new lr cycle: --lr until "
                        "--decay-at of it, then x0.1), whatever the earlier sessions took")
    p.add_argument("--precision", choices=["auto", *sorted(PRECISIONS)], default="auto",
                   help="compute type of the analysis and synthesis transforms in training steps (autocast); the "
                        "entropy model, the weights and validation stay float32. bf16: x1.89 the steps per second of "
                        "float32 on a CPU with AMX (results/train_step_speed.json), x0.11 on one with AVX2 only "
                        "(results/train_step_speed_avx2.json). auto (default): bf16 where the device computes it "
                        "natively, else fp32")
    p.add_argument("--compile", action="store_true",
                   help="compile the training step's forward and loss (torch.compile, inductor): x1.18 the steps "
                        "per second on the 2-core CPU in bf16 with --exact-qat (results/train_step_speed.json), x1.10 in fp32 on "
                        "an AVX2 CPU (results/train_step_speed_avx2.json); "
                        "the first step compiles for about 2 minutes (under 30 s from inductor's cache)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", type=float, default=0.0,
                   help="also keep an exponential moving average of the weights with this decay (e.g. 0.999): "
                        "validated beside the live weights, checkpointed, and exported instead of them")
    p.add_argument("--export-live", action="store_true",
                   help="(--export) the live weights even where the checkpoint keeps an average (--ema)")
    p.add_argument("--export", help="write the model (after update()) as fp16 safetensors and exit")
    return p


def rd_loss(net, x, levels, lambdas, transform_dtype=None):
    """Per-sample rate-distortion loss; returns (loss, mse, bpp) batch means."""
    out = net(x, levels, transform_dtype)
    num_px = x.shape[2] * x.shape[3]
    bpp = likelihood_bits(out["likelihoods"]) / num_px
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    lam = lambdas[levels.long()]
    loss = (lam * 255**2 * mse + bpp).mean()
    return loss, mse.mean(), bpp.mean()


def step_loss_fn(compile_step: bool):
    """``rd_loss``, or ``rd_loss`` compiled for the training step (``--compile``; fixed shapes)."""
    return torch.compile(rd_loss, dynamic=False) if compile_step else rd_loss


def level_weights(levels: int, high_rate_weight: float) -> torch.Tensor:
    """Sampling weights of the rate levels: linear from 1 (lowest) to ``high_rate_weight`` (top)."""
    return torch.linspace(1.0, high_rate_weight, levels) if levels > 1 else torch.ones(1)


def likelihood_bits(likelihoods) -> torch.Tensor:
    """Estimated bits per sample, (B,), of a model's (nested) likelihoods."""
    return sum((-torch.log2(lk.clamp_min(1e-9))).flatten(1).sum(1) for lk in _flat_likelihoods(likelihoods))


def _flat_likelihoods(lk):
    if isinstance(lk, dict):
        for v in lk.values():
            yield from _flat_likelihoods(v)
    elif isinstance(lk, (list, tuple)):
        for v in lk:
            yield from _flat_likelihoods(v)
    else:
        yield lk


@torch.no_grad()
def validate(net, crops, levels, device) -> dict:
    """Estimated bpp (likelihoods) and PSNR per rate level on the validation crops."""
    net.eval()
    res = {}
    for lv in range(levels):
        bpps, psnrs = [], []
        for c in crops:
            x = c[None].to(device)
            out = net(x, torch.tensor([float(lv)], device=device))
            bpps.append(float(likelihood_bits(out["likelihoods"]).sum()) / (x.shape[2] * x.shape[3]))
            psnrs.append(psnr_from_mse(float((out["x_hat"].clamp(0, 1) - x).pow(2).mean()), peak=1.0))
        res[f"q{lv + 1}"] = {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))}
    net.train()
    return res


def read_state(path: str) -> dict:
    """A model state dict (float32) from exported weights (.safetensors) or a checkpoint (.pt)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def load_init(net, path: str, level_offset: int = 0):
    """Start from other weights; gain tables of another level count are mapped.

    Level ``k`` of the source becomes level ``k + level_offset``; levels outside the
    source's range are extrapolated linearly in log-gain from its two nearest levels.
    """
    state = read_state(path)
    own = net.state_dict()
    for key in ("log_gain", "log_inv_gain"):
        src, dst = state.get(key), own[key]
        if src is None or src.shape == dst.shape:
            continue
        n = src.shape[0]
        rows = []
        for j in range(dst.shape[0]):
            k = j - level_offset
            if 0 <= k < n:
                rows.append(src[k])
            elif k < 0:
                rows.append(src[0] + k * (src[1] - src[0]))
            else:
                rows.append(src[n - 1] + (k - n + 1) * (src[n - 1] - src[n - 2]))
        state[key] = torch.stack(rows)
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def split_parameters(net) -> tuple[list, list]:
    """(name, parameter) pairs of the main loss and of the auxiliary loss (the entropy
    bottleneck's quantiles), in the order their optimisers hold them."""
    named = list(net.named_parameters())
    aux = [(n, p) for n, p in named if n.endswith(".quantiles")]
    return [(n, p) for n, p in named if not n.endswith(".quantiles")], aux


def adam(params, lr: float) -> torch.optim.Adam:
    """The training runs' Adam: fused (one kernel for all tensors). On a 2-core CPU its step
    on elic-v3's 9.1 M parameters takes 8.5 ms against 33 ms per tensor (ad hoc, same results
    to 1.5e-8), which was 12.6 % of a campaign step."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def load_optimiser(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict``, keeping how ``opt`` computes its steps (a checkpoint's groups
    carry the flags of the run that wrote it, e.g. not fused): only the state and lr carry over."""
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, kept in zip(opt.param_groups, flags):
        group.update(kept)


def fit_quantiles(net, steps: int = 4000, lr: float = 0.05) -> tuple[float, float]:
    """Fit the entropy bottleneck's quantiles (its CDF table range) to the learned density.

    During training the auxiliary optimiser moves them slowly (lr 1e-3) while the
    density keeps changing, so before export they are refit to convergence: the aux
    loss only depends on the bottleneck's own parameters, so this needs no data.
    Quantiles that are too narrow would push symbols into the coder's costly
    escape path; the fitted ones bound the table tightly.
    """
    params = [p for _, p in split_parameters(net)[1]]
    opt = torch.optim.Adam(params, lr=lr)
    with torch.no_grad():
        before = float(net.aux_loss())
    best = (before, [p.detach().clone() for p in params])
    for i in range(steps):
        loss = net.aux_loss()
        value = loss.detach().item()
        if value < best[0]:  # the quantiles this loss was computed with
            best = (value, [p.detach().clone() for p in params])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == steps // 2:
            for g in opt.param_groups:
                g["lr"] = lr / 10
    # Adam can oscillate about a very steep density (a nearly unused channel): keep the best seen
    with torch.no_grad():
        after = float(net.aux_loss())
        if after > best[0]:
            for p, kept in zip(params, best[1]):
                p.copy_(kept)
            after = best[0]
    return before, after


def time_window(elapsed: float, max_minutes: float | None, run_minutes: float | None) -> tuple[float, float] | None:
    """The training time (start, length in seconds) the schedule spans: the whole run's first
    ``max_minutes``, or ``run_minutes`` from now (``elapsed``: the run's training time so far);
    None: the schedule follows the steps."""
    if max_minutes and run_minutes:
        raise SystemExit("give --max-minutes or --run-minutes, not both")
    if run_minutes:
        return elapsed, run_minutes * 60
    if max_minutes and elapsed >= max_minutes * 60:
        raise SystemExit(f"--max-minutes {max_minutes:g} counts the whole run's training time, already "
                         f"{elapsed / 60:.0f} minutes: give --run-minutes for a window from now")
    return (0.0, max_minutes * 60) if max_minutes else None


def progress(step: int, steps: int, elapsed: float, window: tuple[float, float] | None) -> float:
    """How far the schedule is, 0 to 1: along the time window if there is one, else the steps."""
    if window is None:
        return step / steps
    start, length = window
    return (elapsed - start) / length


def out_of_time(elapsed: float, window: tuple[float, float] | None) -> bool:
    return window is not None and elapsed - window[0] >= window[1]


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = REGISTRY[args.model]
    device = torch.device(args.device)
    torch.manual_seed(args.seed)  # a fresh run's initial weights follow --seed
    net = build_model(spec).to(device, memory_format=torch.channels_last)  # oneDNN's fast layout
    precision = native_precision(device) if args.precision == "auto" else args.precision
    transform_dtype = PRECISIONS[precision]
    lambdas = torch.tensor(spec.lambdas, device=device)

    main_named, aux_named = split_parameters(net)
    main_params, aux_params = [p for _, p in main_named], [p for _, p in aux_named]
    opt, aux_opt = adam(main_params, args.lr), adam(aux_params, args.aux_lr)
    step, elapsed, averaged = 0, 0.0, None
    ckpt_path = out_dir / "last.pt"
    if (args.resume or args.export) and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(ck["model"])
        load_optimiser(opt, ck["opt"])
        load_optimiser(aux_opt, ck["aux_opt"])
        step, elapsed, averaged = int(ck["step"]), float(ck["elapsed"]), ck.get("ema")
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
    elif args.export:
        print(f"no checkpoint at {ckpt_path}", file=sys.stderr)
        return 2
    elif args.init:
        load_init(net, args.init, args.init_level_offset)
        step, elapsed = args.init_step, args.init_hours * 3600

    if args.export:
        if averaged is not None and not args.export_live:
            net.load_state_dict({**net.state_dict(), **averaged})
            print("exporting the weights' moving average (--export-live: the live weights)", file=sys.stderr)
        net = net.cpu().eval()
        aux_before, aux_after = fit_quantiles(net)
        print(f"entropy-bottleneck quantiles refit: aux loss {aux_before:.1f} -> {aux_after:.3f}", file=sys.stderr)
        net.update(force=True)
        sha = save_weights(net, spec, args.export)
        print(json.dumps({"export": args.export, "sha256": sha, "step": step}))
        return 0

    if args.exact_qat:
        from .qat import enable

        print(f"quantisation-aware entropy path: {enable(net)} layers", file=sys.stderr)
    if not args.data:
        print("--data is required for training", file=sys.stderr)
        return 2
    ema = WeightAverage(net, args.ema, averaged) if args.ema else None
    random.seed(args.seed + step)
    torch.manual_seed(args.seed + step)
    t0 = time.time()
    sampler = CropSampler(list_images(args.data), args.crop, seed=args.seed + step, mosaic=args.mosaic)
    val_crops = center_crops(list_images(args.val), args.val_size, args.val_limit) if args.val else []
    log = open(out_dir / "log.jsonl", "a")
    print(f"{sampler.megapixels:.1f} MP of training images loaded in {time.time() - t0:.0f}s", file=sys.stderr)

    print(f"transforms compute in {precision}" + (" (--precision auto)" if args.precision == "auto" else ""),
          file=sys.stderr)
    step_loss = step_loss_fn(args.compile)
    gen = torch.Generator().manual_seed(args.seed + step)
    level_probs = level_weights(spec.levels, args.high_rate_weight)
    net.train()
    clock = TrainingClock(elapsed)  # pauses (SIGSTOP while benchmarks run) are not training time
    window = time_window(elapsed, args.max_minutes, args.run_minutes)
    rounded_rate(net, args.rounded_rate_groups, step < args.rounded_rate_until)
    boost = None  # --new-group-lr-scale / --new-group-only, while the rounded rate lasts
    if (args.new_group_lr_scale != 1 or args.new_group_only) and step < args.rounded_rate_until:
        targets = [t for k in args.rounded_rate_groups for t in new_group_slices(net, spec.groups, k)]
        boost = NewGroupSteps(targets, args.new_group_lr_scale, main_params if args.new_group_only else None)
    while step < args.steps and not out_of_time(elapsed, window):
        if step == args.rounded_rate_until:
            rounded_rate(net, args.rounded_rate_groups, False)
            if boost:
                boost.release()
            boost = None
        lr = args.lr * (0.1 if progress(step, args.steps, elapsed, window) >= args.decay_at else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler.batch(args.batch).to(device, memory_format=torch.channels_last)
        levels = torch.multinomial(level_probs, args.batch, replacement=True, generator=gen).float().to(device)
        loss, mse, bpp = step_loss(net, x, levels, lambdas, transform_dtype)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, args.clip)
        if boost:
            boost.before()
            opt.step()
            boost.after()
        else:
            opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        if ema:
            ema.update()
        step += 1
        elapsed = clock.step()
        if step % args.log_every == 0:
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "loss": loss.item(), "mse": mse.item(),
                   "bpp": bpp.item(), "aux": aux.item(), "lr": lr}
            log.write(json.dumps(rec) + "\n")
            log.flush()
        last = step == args.steps or out_of_time(elapsed, window)
        if step % args.ckpt_every == 0 or last:
            tmp = out_dir / "last.pt.tmp"
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                        "step": step, "elapsed": elapsed, "model_name": spec.name,
                        **({"ema": ema.state_dict()} if ema else {})}, tmp)
            tmp.replace(ckpt_path)
        if val_crops and (step % args.val_every == 0 or last):
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "val": validate(net, val_crops, spec.levels, device)}
            if ema:
                with ema.applied(net):
                    rec["val_ema"] = validate(net, val_crops, spec.levels, device)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            for key in ("val", "val_ema") if ema else ("val",):
                print(f"step {step} {elapsed / 60:.1f} min {key} " +
                      " ".join(f"{k}:{v['bpp']:.3f}bpp/{v['psnr']:.2f}dB" for k, v in rec[key].items()), file=sys.stderr)
            clock.skip()
    return 0


if __name__ == "__main__":
    sys.exit(main())
