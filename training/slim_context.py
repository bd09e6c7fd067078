"""A slimmer entropy model for a trained ELIC, learned on cached latents (issue 24).

The channel-context networks (three 5 x 5 convolutions per channel group, 224 and 128
hidden channels in ELIC) take about two thirds of the integer entropy path's time
(``results/profile_tile.json``). This replaces them with narrower ones and trains only
those, everything else frozen, on latents computed once: the transforms never run
during training, and the entropy model does not depend on the rate level (the gains
are applied before it), so one cache of gain-scaled latents serves every level.

The loss is the rate alone: the transforms are frozen, and the channel context changes
the reconstruction only through the means the latents are rounded around.

    python -m training.slim_context --base elic-lite --context 64 64 --data ../shared/data/train \
        --val ../shared/data/val --out runs/slim --export runs/slim/elic-lite-s.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from core.models import REGISTRY, build_model, load_model, resolve_weights, save_weights

from .data import CropSampler, center_crops, list_images
from .train_elic import adam, likelihood_bits, read_state, validate


CONTEXT = ".channel_context."  # in the state-dict keys of the channel-context networks


def slim_model(base: str, context: tuple[int, int], name: str):
    """The base model's weights in a model whose channel contexts are ``context`` wide (new,
    randomly initialised) -> (net, spec)."""
    spec = replace(REGISTRY[base], name=name, context=tuple(context), weights_file=None, sha256=None,
                   description=f"{REGISTRY[base].description}; channel context {context[0]}/{context[1]}")
    net = build_model(spec)
    state = read_state(str(resolve_weights(base)))
    kept = {k: v for k, v in state.items() if CONTEXT not in k}
    missing = [k for k in net.state_dict() if k not in kept]
    net.load_state_dict(kept, strict=False)
    assert all(CONTEXT in k for k in missing), missing[:5]
    return net, spec


def context_parameters(net) -> list[torch.nn.Parameter]:
    return list(net.latent_codec.latent_codec["y"].channel_context.parameters())


@torch.no_grad()
def cache_latents(net, sampler: CropSampler, count: int, levels: int, batch: int = 16, seed: int = 0) -> torch.Tensor:
    """``count`` gain-scaled latents of random crops at random rate levels (high levels as often)."""
    out = []
    gen = torch.Generator().manual_seed(seed)
    while sum(len(o) for o in out) < count:
        x = sampler.batch(batch)
        level = torch.randint(0, levels, (batch,), generator=gen).float()
        out.append(net.analysis(x, level))
    return torch.cat(out)[:count]


@torch.no_grad()
def cache_rate(net, y_cache: torch.Tensor, pixels: int, chunk: int = 32) -> float:
    """Mean estimated bpp of every cached latent (deterministic: evaluation mode)."""
    was_training = net.training
    net.eval()
    bits = sum(float(likelihood_bits(net.latent_codec(y_cache[i : i + chunk])["likelihoods"]).sum())
               for i in range(0, len(y_cache), chunk))
    net.train(was_training)
    return bits / (len(y_cache) * pixels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="elic-lite")
    p.add_argument("--context", type=int, nargs=2, default=[64, 64])
    p.add_argument("--name", help="registry name of the result (default: BASE-s)")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--val", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--crops", type=int, default=2048, help="latents cached")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--val-limit", type=int, default=16)
    p.add_argument("--init", help="continue from this run's last.pt (e.g. with new crops: --seed)")
    p.add_argument("--seed", type=int, default=0, help="which crops and levels are cached")
    p.add_argument("--export", help="write the slim model (fp16 safetensors, after update()) here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{args.base}-s"
    net, spec = slim_model(args.base, tuple(args.context), name)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True)["model"])
    for prm in net.parameters():
        prm.requires_grad_(False)
    params = context_parameters(net)
    for prm in params:
        prm.requires_grad_(True)
    t0 = time.time()
    y_cache = cache_latents(net.eval(), CropSampler(list_images(args.data), args.crop, seed=args.seed), args.crops,
                            spec.levels, seed=args.seed)
    print(f"{len(y_cache)} latents cached in {time.time() - t0:.0f} s", file=sys.stderr)
    pixels = args.crop ** 2
    rate = {"before": cache_rate(net, y_cache, pixels)}
    opt = adam(params, args.lr)
    log = open(out / "log.jsonl", "a")
    net.train()
    gen = torch.Generator().manual_seed(1000 + args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * (0.1 if step > 0.8 * args.steps else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        y = y_cache[torch.randint(0, len(y_cache), (args.batch,), generator=gen)]
        bpp = (likelihood_bits(net.latent_codec(y)["likelihoods"]) / pixels).mean()
        opt.zero_grad()
        bpp.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            log.write(json.dumps({"step": step, "bpp": bpp.item(), "lr": lr, "elapsed_s": round(time.time() - t0, 1)})
                      + "\n")
            log.flush()
        if step % 500 == 0:
            print(f"step {step} bpp {bpp.item():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    rate["after"] = cache_rate(net, y_cache, pixels)
    (out / "cache_rate.json").write_text(json.dumps(rate) + "\n")
    print(f"bpp of the cached latents: {rate['before']:.4f} -> {rate['after']:.4f}", file=sys.stderr)
    torch.save({"model": net.state_dict(), "spec": json.dumps({"base": args.base, "context": args.context})},
               out / "last.pt")
    if args.val:
        crops = center_crops(list_images(args.val), 256, args.val_limit)
        res = {"slim": validate(net, crops, spec.levels, "cpu")}
        res["base"] = validate(load_model(args.base).net, crops, spec.levels, "cpu")
        from core.evaluation.bd_rate import bd_rate

        pts = {k: ([v["bpp"] for v in r.values()], [v["psnr"] for v in r.values()]) for k, r in res.items()}
        res["bd_rate_percent_vs_base"] = float(bd_rate(*pts["base"], *pts["slim"]))
        (out / "val.json").write_text(json.dumps(res, indent=1) + "\n")
        print(f"BD-rate (PSNR, likelihood bpp) vs {args.base}: {res['bd_rate_percent_vs_base']:+.2f} %", file=sys.stderr)
    if args.export:
        net.eval().update(force=True)
        sha = save_weights(net, spec, args.export)
        print(json.dumps({"export": args.export, "sha256": sha}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
