"""Distil the Code-RSIC enhancer into a slimmer student that keeps the method.

The student is an ``Enhancer`` too: the same codebook (frozen: it is the prior), code-lookup
Transformer and HPIN fusion, with slimmer full- and half-resolution stages (``--channels``)
and HPIN at ``--fuse-levels`` only, where most of the teacher's time goes (measured by
``benchmarks/profile_enhancer.py``). Every student tensor whose name and shape match the
teacher's starts as the teacher's (or, over those, as an earlier student's: ``--init``); the
rest starts fresh.

Targets, made once by the teacher on the cached degraded crops (``training.lq_pairs``) and kept
beside them (``teacher.npz``): its enhanced crop at fidelity ``--w`` and its code indices.
Loss: L1 + ``--lpips-weight`` * LPIPS against the teacher's output, ``--ce-weight`` *
cross-entropy against its codes (the lookup keeps choosing the teacher's codes), and
``--hq-weight`` * L1 against the original crop. Every ``--w0-every``-th step trains fidelity 0
(the codes alone) against the teacher's decoder on the teacher's codes, so every fidelity
the user may choose is learnt, not only the default. The learning rate follows a cosine over
``--steps`` or, with ``--max-minutes``, over the wall time.

    python -m training.distill_enhancer --pairs runs/distill/pairs.npz --val-pairs runs/distill/val_pairs.npz \\
        --teacher enhancer-lite --out runs/distill --max-minutes 60 --threads 1
    python -m training.distill_enhancer --out runs/distill --export core/weights/enhancer-lite-d.safetensors
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.models import load_enhancer
from core.models.hpin import Enhancer
from core.models.vqgan import EnhancerConfig

from .enhance_common import Run, add_common_args, export_checkpoint, freeze, load_lpips, lr_at, setup_device
from .lq_pairs import PairSampler
from .train_lookup import validate


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.distill_enhancer", description=__doc__.split("\n\n")[0])
    add_common_args(p, steps=3000, batch=8, crop=128, lr=2e-4)
    p.add_argument("--pairs", help="training pair cache (.npz from training.lq_pairs)")
    p.add_argument("--val-pairs", help="validation pair cache (.npz)")
    p.add_argument("--teacher", default="enhancer-lite", help="teacher enhancer: registry name or .safetensors")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 96, 128],
                   help="student feature widths at scales 1, 1/2, 1/4, 1/8")
    p.add_argument("--fuse-levels", type=int, nargs="+", default=[2, 3], help="student HPIN scales (channel index)")
    p.add_argument("--tf-layers", type=int, help="student code-lookup Transformer layers (default: the teacher's); "
                                                  "the first ones start as the teacher's")
    p.add_argument("--init", help="an earlier student (name or .safetensors) whose tensors of matching name and "
                                  "shape the new one starts from, over the teacher's (e.g. enhancer-fast)")
    p.add_argument("--w", type=float, default=1.0, help="fidelity of the teacher targets and the student")
    p.add_argument("--ce-weight", type=float, default=0.2, help="weight of the teacher-code cross-entropy")
    p.add_argument("--hq-weight", type=float, default=0.25, help="weight of the L1 against the original crop")
    p.add_argument("--w0-every", type=int, default=4,
                   help="every N-th step trains fidelity 0 instead: the codes alone, against the teacher's "
                        "codebook decoding of its own codes (0: never)")
    p.add_argument("--export", help="write the student as fp16 safetensors and exit")
    return p


@torch.no_grad()
def teacher_targets(teacher: Enhancer, lq: np.ndarray, w: float, batch: int = 8) -> dict[str, np.ndarray]:
    """The teacher's enhanced crops (uint8, like a decoded GeoTIFF) and code maps (int64)."""
    outs, codes = [], []
    for i in range(0, len(lq), batch):
        x = torch.from_numpy(lq[i : i + batch]).float().div_(255)
        out, logits, _ = teacher(x, w)
        outs.append(out.clamp(0, 1).mul(255).round().to(torch.uint8).numpy())
        codes.append(logits.argmax(1).numpy())
        if (i // batch) % 25 == 0:
            print(f"teacher targets {i + len(x)}/{len(lq)}", file=sys.stderr)
    return {"out": np.concatenate(outs), "codes": np.concatenate(codes)}


def cached_targets(path: Path, teacher: Enhancer, pairs: str, w: float) -> dict[str, np.ndarray]:
    if not path.exists():
        targets = teacher_targets(teacher, np.load(pairs)["lq"], w)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, w=np.float32(w), **targets)
        tmp.replace(path)
    d = np.load(path)
    if float(d["w"]) != w:
        raise SystemExit(f"error: {path} holds targets at fidelity {float(d['w'])}, not {w}: delete it")
    return {"out": d["out"], "codes": d["codes"]}


def student_from(cfg: EnhancerConfig, teacher: Enhancer, *earlier: Enhancer) -> tuple[Enhancer, list[str]]:
    """A student with every tensor of the teacher, then of ``earlier`` students, whose name and
    shape match copied in (a later source over an earlier one; the codebook is always the
    teacher's: it is the prior) -> (net, copied names)."""
    net = Enhancer(cfg)
    own, theirs = net.state_dict(), teacher.state_dict()
    prior = {k: v for k, v in theirs.items() if k.startswith("quantizer.")}
    start = {}
    for source in (theirs, *(e.state_dict() for e in earlier), prior):
        start.update({k: v.float() for k, v in source.items() if k in own and own[k].shape == v.shape})
    net.load_state_dict({**own, **start})
    return net, sorted(start)


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    device = setup_device(args)
    run = Run(args.out, args.max_minutes)
    torch.manual_seed(args.seed)
    ck = run.load(device) if (args.resume or args.export) else None
    if args.export:
        return export_checkpoint(run, ck, args.export, lambda info: {
            **info, "distill_steps": run.step, "distill_seconds": round(run.elapsed)})
    if not args.pairs:
        print("--pairs is required for training", file=sys.stderr)
        return 2
    teacher = load_enhancer(args.teacher, "cpu").net.float().to(memory_format=torch.contiguous_format)
    freeze(teacher)
    targets = cached_targets(Path(args.out) / "teacher.npz", teacher, args.pairs, args.w)
    cfg = replace(teacher.cfg, channels=tuple(args.channels), fuse_levels=tuple(sorted(args.fuse_levels)),
                  tf_layers=args.tf_layers or teacher.cfg.tf_layers)
    if ck is not None:
        cfg = EnhancerConfig.from_dict(ck["config"])
    earlier = [load_enhancer(args.init, "cpu").net.float()] if args.init and ck is None else []
    net, copied = student_from(cfg, teacher, *earlier)
    if ck is not None:
        net.load_state_dict(ck["model"])
    net = net.to(device)
    info = dict(ck["info"]) if ck else {"teacher": args.teacher, "init": args.init, "copied_tensors": len(copied),
                                        "student_tensors": len(net.state_dict()), "w": args.w}
    freeze(net.quantizer)  # the codebook is the prior
    trainable = [p for n, p in net.named_parameters() if not n.startswith("quantizer.")]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=args.lr)
    if ck:
        opt.load_state_dict(ck["opt"])
    lpips = load_lpips(device, required=args.lpips_weight > 0)
    sampler = PairSampler(args.pairs, args.crop, seed=args.seed + run.step, extra=targets)
    val = PairSampler(args.val_pairs, args.val_size).fixed(args.val_limit, args.val_size) if args.val_pairs else None
    if val is not None and ck is None:
        run.log({"teacher_val": validate(teacher, *val, device, lpips, ws=(args.w,))}, echo=True)

    def checkpoint():
        run.save({"model": net.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "stage": "distill",
                  "info": info})

    net.train()
    net.quantizer.eval()
    run.pause_clock()
    while run.step < args.steps and not run.out_of_time():
        lr = lr_at(run.schedule_step(args.steps), args.steps, args.lr, warmup=50)
        for g in opt.param_groups:
            g["lr"] = lr
        hq, lq, t_out, t_codes = (t.to(device) for t in sampler.batch(args.batch))
        w0 = args.w0_every > 0 and run.step % args.w0_every == args.w0_every - 1
        if w0:  # the prior path: what the teacher's decoder makes of the teacher's codes
            with torch.no_grad():
                t_out = teacher.decoder(teacher.quantizer.lookup(t_codes.long().to("cpu"))).clamp(0, 1).to(device)
        out, logits, _ = net(lq, 0.0 if w0 else args.w)
        l1 = F.l1_loss(out, t_out)
        ce = F.cross_entropy(logits, t_codes.long())
        hq_l1 = F.l1_loss(out, hq)
        loss = l1 + args.ce_weight * ce + (0.0 if w0 else args.hq_weight) * hq_l1
        rec = {"w": 0.0 if w0 else args.w, "l1": l1.item(), "ce": ce.item(), "hq_l1": hq_l1.item()}
        if lpips is not None and args.lpips_weight > 0:
            lp = lpips(out, t_out).mean()
            loss = loss + args.lpips_weight * lp
            rec["lpips"] = lp.item()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, args.clip)
        opt.step()
        run.advance()
        if run.step % args.log_every == 0:
            run.log({"loss": loss.item(), "lr": lr, **rec})
        if run.step % args.ckpt_every == 0 or run.step == args.steps:
            checkpoint()
        if val is not None and (run.step % args.val_every == 0 or run.step == args.steps):
            run.log({"val": validate(net, *val, device, lpips, ws=(0.0, 0.5, 1.0))}, echo=True)
            net.train()
            net.quantizer.eval()
            run.pause_clock()
    checkpoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
