"""Stage 3: train HPIN (fusion Transformer blocks + MCM) into the frozen decoder D_H.

Starts from the stage-2 enhancer. Trainable: the HPIN fusion modules, the input gate
(with ``--input-skip``, see ``core.models.hpin.InputSkip``) and (with ``--train-encoder``, the
default) E_L; the lookup Transformer, codebook and D_H stay
frozen (checked at every checkpoint). Loss on the enhanced crop at fidelity ``--w``:
L1 + ``--lpips-weight`` * LPIPS + ``--ce-weight`` * cross-entropy of the code
prediction (keeps the lookup working while E_L adapts) + optional hinge GAN.
``--export`` writes the decode-time enhancer as fp16 safetensors.

Example::

    python -m training.train_hpin --pairs runs/lq-pairs.npz --val-pairs runs/lq-val.npz \
        --lookup runs/enh-lookup/last.pt --codebook runs/enh-codebook/last.pt \
        --out runs/enh-hpin --steps 1000 --threads 1
    python -m training.train_hpin --out runs/enh-hpin --export core/weights/enhancer-lite.safetensors
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
import torch.nn.functional as F

from core.models.hpin import Enhancer
from core.models.vqgan import EnhancerConfig, PatchDiscriminator

from .enhance_common import Run, add_common_args, export_checkpoint, freeze, load_lpips, lr_at, setup_device
from .lq_pairs import PairSampler
from .train_lookup import check_frozen, load_stage1, prior_snapshot, validate


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_hpin", description=__doc__.split("\n\n")[0])
    add_common_args(p, steps=1000, batch=8, crop=128, lr=2e-4)
    p.add_argument("--pairs", help="training pair cache (.npz from training.lq_pairs)")
    p.add_argument("--val-pairs", help="validation pair cache (.npz)")
    p.add_argument("--lookup", help="stage-2 checkpoint (runs/.../last.pt of train_lookup)")
    p.add_argument("--codebook", help="stage-1 checkpoint, for the code targets of the CE loss")
    p.add_argument("--w", type=float, default=1.0, help="fidelity weight used in training")
    p.add_argument("--ce-weight", type=float, default=0.5, help="weight of the code cross-entropy")
    p.add_argument("--no-train-encoder", dest="train_encoder", action="store_false",
                   help="keep E_L frozen too (train only the fusion modules)")
    p.add_argument("--gan-weight", type=float, default=0.0, help="hinge GAN loss weight (0: off)")
    p.add_argument("--fuse-levels", type=int, nargs="+", default=None,
                   help="decoder scales with HPIN fusion (0 = full resolution, 3 = 1/8; default: the config's)")
    p.add_argument("--input-skip", action="store_true",
                   help="add the gated fidelity path from the degraded input (core.models.hpin.InputSkip); new runs only")
    p.add_argument("--export", help="write the enhancer as fp16 safetensors and exit")
    return p


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    device = setup_device(args)
    run = Run(args.out, args.max_minutes)
    torch.manual_seed(args.seed)

    ck = run.load(device) if (args.resume or args.export) else None
    if args.export:
        return export_checkpoint(run, ck, args.export, lambda info: {
            "stage3_steps": run.step, "stage3_seconds": round(run.elapsed), **info})
    if not (args.pairs and args.codebook and (args.lookup or ck)):
        print("--pairs, --codebook and --lookup are required for training", file=sys.stderr)
        return 2
    vq = load_stage1(args.codebook, device)
    start = ck or torch.load(args.lookup, map_location=device, weights_only=True)
    cfg = EnhancerConfig.from_dict(start["config"])
    if args.fuse_levels and ck is None:
        cfg = replace(cfg, fuse_levels=tuple(sorted(args.fuse_levels)))
    if args.input_skip and ck is None:
        cfg = replace(cfg, input_skip=True)
    net = Enhancer(cfg).to(device)
    missing, unexpected = net.load_state_dict(start["model"], strict=False)
    bad = [k for k in missing + unexpected if not k.startswith(("fusion.", "skip."))]
    if bad or (ck is not None and (missing or unexpected)):
        raise RuntimeError(f"checkpoint does not fit the enhancer: {(missing + unexpected)[:5]}")
    info = dict(start.get("info", {}))
    if ck is None:
        info.update(stage2_steps=int(start["step"]), stage2_seconds=round(float(start["elapsed"])))
    for m in net.prior_modules():
        freeze(m)
    trainable = list(net.fusion.parameters())
    if net.skip is not None:
        trainable += list(net.skip.parameters())
    freeze(net.lookup)
    if args.train_encoder:
        net.lookup.encoder.requires_grad_(True)
        trainable += list(net.lookup.encoder.parameters())
    opt = torch.optim.Adam(trainable, lr=args.lr)
    disc = PatchDiscriminator().to(device) if args.gan_weight > 0 else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9)) if disc else None
    if ck:
        opt.load_state_dict(ck["opt"])
        if disc is not None and "disc" in ck:
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])
    reference = prior_snapshot(net)
    lpips = load_lpips(device, required=args.lpips_weight > 0)
    sampler = PairSampler(args.pairs, args.crop, seed=args.seed + run.step)
    val = PairSampler(args.val_pairs, args.val_size).fixed(args.val_limit, args.val_size) if args.val_pairs else None

    def set_modes():
        net.train()
        for m in net.prior_modules():
            m.eval()
        if not args.train_encoder:
            net.lookup.eval()

    def checkpoint():
        check_frozen(net, reference)
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "stage": "hpin",
                 "info": info}
        if disc is not None:
            state.update(disc=disc.state_dict(), opt_d=opt_d.state_dict())
        run.save(state)

    set_modes()
    run.pause_clock()
    while run.step < args.steps and not run.out_of_time():
        lr = lr_at(run.schedule_step(args.steps), args.steps, args.lr, warmup=50)
        for o in (opt, opt_d):
            if o is not None:
                for g in o.param_groups:
                    g["lr"] = lr
        hq, lq = (t.to(device) for t in sampler.batch(args.batch))
        out, logits, _ = net(lq, args.w)
        l1 = F.l1_loss(out, hq)
        loss = l1
        rec = {"l1": float(l1)}
        if args.train_encoder and args.ce_weight > 0:
            with torch.no_grad():
                idx_hq = vq.encode(hq)[1]
            ce = F.cross_entropy(logits, idx_hq)
            loss = loss + args.ce_weight * ce
            rec["ce"] = float(ce)
        if lpips is not None and args.lpips_weight > 0:
            lp = lpips(out, hq).mean()
            loss = loss + args.lpips_weight * lp
            rec["lpips"] = float(lp)
        if disc is not None:
            g_loss = -disc(out).mean()
            loss = loss + args.gan_weight * g_loss
            rec["g"] = float(g_loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, args.clip)
        opt.step()
        if disc is not None:
            d_loss = F.relu(1 - disc(hq)).mean() + F.relu(1 + disc(out.detach())).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            rec["d"] = float(d_loss)
        run.advance()
        if run.step % args.log_every == 0:
            run.log({"loss": float(loss), "lr": lr, **rec})
        if run.step % args.ckpt_every == 0 or run.step == args.steps:
            checkpoint()
        if val is not None and (run.step % args.val_every == 0 or run.step == args.steps):
            run.log({"val": validate(net, *val, device, lpips, ws=(0.0, 0.5, 1.0))}, echo=True)
            set_modes()
            run.pause_clock()
    checkpoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
