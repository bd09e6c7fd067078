"""Stage 1: learn the codebook prior (VQGAN: E_H, codebook, D_H) on high-quality images.

Loss: L1 + ``--lpips-weight`` * LPIPS + codebook/commitment loss, plus an optional
hinge GAN (``--gan-weight``, from ``--gan-start``). Codebook entries unused for
``--restart-every`` steps are re-seeded from encoder outputs (first 80 % of training).

Example::

    python -m training.train_codebook --data ../shared/data/train --val ../shared/data/val \
        --out runs/enh-codebook --steps 3000 --threads 1
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from core.models.vqgan import VQGAN, PatchDiscriminator

from .data import CropSampler, center_crops, list_images
from .enhance_common import Run, add_common_args, get_config, load_lpips, lr_at, psnr, setup_device


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_codebook", description=__doc__.split("\n\n")[0])
    add_common_args(p, steps=3000, batch=8, crop=128, lr=4e-4)
    p.add_argument("--gan-weight", type=float, default=0.0, help="hinge GAN loss weight (0: off)")
    p.add_argument("--gan-start", type=int, default=0, help="first step of the GAN loss")
    p.add_argument("--restart-every", type=int, default=100, help="re-seed unused codes every N steps (0: never)")
    return p


@torch.no_grad()
def validate(net, crops, device, lpips) -> dict:
    net.eval()
    ps, lp, used = [], [], set()
    for c in crops:
        x = c[None].to(device)
        x_hat, idx, _ = net(x)
        ps.append(psnr(x_hat, x))
        if lpips is not None:
            lp.append(float(lpips(x_hat.clamp(0, 1), x).mean()))
        used.update(idx.flatten().tolist())
    net.train()
    res = {"psnr": sum(ps) / len(ps), "codes_used": len(used)}
    if lp:
        res["lpips"] = sum(lp) / len(lp)
    return res


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    device = setup_device(args)
    cfg = get_config(args.config)
    run = Run(args.out, args.max_minutes)
    torch.manual_seed(args.seed)
    net = VQGAN(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.5, 0.9))
    disc = PatchDiscriminator().to(device) if args.gan_weight > 0 else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9)) if disc else None
    ck = run.load(device) if args.resume else None
    if ck:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if disc is not None and "disc" in ck:
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])
    if not args.data:
        print("--data is required for training", file=sys.stderr)
        return 2
    lpips = load_lpips(device, required=args.lpips_weight > 0)
    sampler = CropSampler(list_images(args.data), args.crop, seed=args.seed + run.step)
    val_crops = center_crops(list_images(args.val), args.val_size, args.val_limit) if args.val else []
    gen = torch.Generator().manual_seed(args.seed + run.step)
    print(f"{sampler.megapixels:.1f} MP of training images; "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters", file=sys.stderr)

    def checkpoint():
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "stage": "codebook"}
        if disc is not None:
            state.update(disc=disc.state_dict(), opt_d=opt_d.state_dict())
        run.save(state)

    net.train()
    run.pause_clock()
    since_restart = 0  # usage counts are not checkpointed: count steps since they started
    while run.step < args.steps and not run.out_of_time():
        sched = run.schedule_step(args.steps)
        lr = lr_at(sched, args.steps, args.lr)
        for o in (opt, opt_d):
            if o is not None:
                for g in o.param_groups:
                    g["lr"] = lr
        x = sampler.batch(args.batch).to(device)
        zq, idx, vq_loss, z = net.encode(x)
        x_hat = net.decoder(zq)
        l1 = F.l1_loss(x_hat, x)
        loss = l1 + vq_loss
        rec = {"l1": float(l1), "vq": float(vq_loss)}
        if lpips is not None and args.lpips_weight > 0:
            lp = lpips(x_hat, x).mean()
            loss = loss + args.lpips_weight * lp
            rec["lpips"] = float(lp)
        use_gan = disc is not None and sched >= args.gan_start
        if use_gan:
            g_loss = -disc(x_hat).mean()
            loss = loss + args.gan_weight * g_loss
            rec["g"] = float(g_loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
        opt.step()
        if use_gan:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(x_hat.detach())).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            rec["d"] = float(d_loss)
        run.advance()
        since_restart += 1
        if args.restart_every and since_restart >= args.restart_every and sched < 0.8 * args.steps:
            rec["restarted"] = net.quantizer.restart_dead(z, gen)
            since_restart = 0
        if run.step % args.log_every == 0:
            run.log({"loss": float(loss), "lr": lr, **rec})
        if run.step % args.ckpt_every == 0 or run.step == args.steps:
            checkpoint()
        if val_crops and (run.step % args.val_every == 0 or run.step == args.steps):
            run.log({"val": validate(net, val_crops, device, lpips)}, echo=True)
            run.pause_clock()
    checkpoint()
    if val_crops:
        run.log({"val": validate(net, val_crops, device, lpips)}, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
