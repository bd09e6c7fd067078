"""Stage 2: train the code lookup (E_L + Transformer) against the frozen codebook.

For each cached (high-quality, degraded) pair, the frozen stage-1 encoder E_H gives the
target code indices and code vectors of the high-quality crop; E_L reads the degraded
crop and the Transformer predicts the indices. Loss: cross-entropy on the indices +
``--feat-weight`` * L2 between E_L's latent and the target code vectors. Codebook and
D_H stay frozen (checked at every checkpoint).

Example::

    python -m training.train_lookup --pairs runs/lq-pairs.npz --val-pairs runs/lq-val.npz \
        --codebook runs/enh-codebook/last.pt --out runs/enh-lookup --steps 1000 --threads 1
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from core.models.hpin import Enhancer
from core.models.vqgan import VQGAN, EnhancerConfig

from .enhance_common import Run, add_common_args, freeze, frozen_state, load_lpips, lr_at, psnr, setup_device
from .lq_pairs import PairSampler


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_lookup", description=__doc__.split("\n\n")[0])
    add_common_args(p, steps=1000, batch=8, crop=128, lr=3e-4)
    p.add_argument("--pairs", required=True, help="training pair cache (.npz from training.lq_pairs)")
    p.add_argument("--val-pairs", help="validation pair cache (.npz, made with --center from the val folder)")
    p.add_argument("--codebook", required=True, help="stage-1 checkpoint (runs/.../last.pt of train_codebook)")
    p.add_argument("--feat-weight", type=float, default=1.0, help="weight of the latent L2 loss")
    p.set_defaults(lpips_weight=0.0)  # no perceptual loss in this stage; LPIPS is only reported
    return p


def load_stage1(path: str, device) -> VQGAN:
    ck = torch.load(path, map_location=device, weights_only=True)
    vq = VQGAN(EnhancerConfig.from_dict(ck["config"])).to(device)
    vq.load_state_dict(ck["model"])
    freeze(vq)
    return vq


def check_frozen(net: Enhancer, reference: dict) -> None:
    now = {f"{i}.{k}": v for i, m in enumerate(net.prior_modules()) for k, v in m.state_dict().items()}
    changed = [k for k, v in reference.items() if not torch.equal(v, now[k])]
    if changed:
        raise RuntimeError(f"frozen codebook/decoder changed: {changed[:5]}")


def prior_snapshot(net: Enhancer) -> dict:
    return {f"{i}.{k}": v for i, m in enumerate(net.prior_modules()) for k, v in frozen_state(m).items()}


@torch.no_grad()
def validate(net: Enhancer, hq, lq, device, lpips, ws=(0.0,), target_vq: VQGAN | None = None) -> dict:
    """PSNR/LPIPS of the degraded input and of the enhancer at each fidelity ``w``."""
    net.eval()
    res: dict = {}
    outs = {"input": [], **{f"w{w:g}": [] for w in ws}}
    acc = []
    for i in range(len(hq)):
        x, y = hq[i : i + 1].to(device), lq[i : i + 1].to(device)
        outs["input"].append((y, x))
        for w in ws:
            out, logits, _ = net(y, w)
            outs[f"w{w:g}"].append((out.clamp(0, 1), x))
        if target_vq is not None:
            acc.append(float((logits.argmax(1) == target_vq.encode(x)[1]).float().mean()))
    for name, pairs in outs.items():
        r = {"psnr": sum(psnr(a, b) for a, b in pairs) / len(pairs)}
        if lpips is not None:
            r["lpips"] = sum(float(lpips(a, b).mean()) for a, b in pairs) / len(pairs)
        res[name] = r
    if acc:
        res["code_acc"] = sum(acc) / len(acc)
    net.train()
    return res


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    device = setup_device(args)
    run = Run(args.out, args.max_minutes)
    torch.manual_seed(args.seed)
    vq = load_stage1(args.codebook, device)
    cfg = vq.cfg
    net = Enhancer(cfg).to(device)
    net.load_prior(vq.state_dict())
    for m in net.prior_modules():
        freeze(m)
    net.fusion.requires_grad_(False)
    params = list(net.lookup.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    ck = run.load(device) if args.resume else None
    if ck:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
    reference = prior_snapshot(net)
    lpips = load_lpips(device, required=False)
    sampler = PairSampler(args.pairs, args.crop, seed=args.seed + run.step)
    val = PairSampler(args.val_pairs, args.val_size).fixed(args.val_limit, args.val_size) if args.val_pairs else None

    def checkpoint():
        check_frozen(net, reference)
        run.save({"model": net.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "stage": "lookup"})

    net.train()
    for m in net.prior_modules():
        m.eval()
    run.pause_clock()
    while run.step < args.steps and not run.out_of_time():
        lr = lr_at(run.schedule_step(args.steps), args.steps, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        hq, lq = (t.to(device) for t in sampler.batch(args.batch))
        with torch.no_grad():
            zq_hq, idx_hq, _, _ = vq.encode(hq)
        _, logits, z_l = net.lookup(lq)
        ce = F.cross_entropy(logits, idx_hq)
        feat = (z_l - zq_hq).pow(2).sum(1).mean()
        loss = ce + args.feat_weight * feat
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        run.advance()
        if run.step % args.log_every == 0:
            acc = float((logits.argmax(1) == idx_hq).float().mean())
            run.log({"loss": float(loss), "ce": float(ce), "feat": float(feat), "acc": acc, "lr": lr})
        if run.step % args.ckpt_every == 0 or run.step == args.steps:
            checkpoint()
        if val is not None and (run.step % args.val_every == 0 or run.step == args.steps):
            run.log({"val": validate(net, *val, device, lpips, target_vq=vq)}, echo=True)
            run.pause_clock()
    checkpoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
