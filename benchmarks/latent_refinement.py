"""Would encoder-side latent refinement pay? (an ``--effort`` option; decoder and format unchanged)

For each image and rate level: the plain encoding (analysis -> bit-exact entropy coding),
then the latent ``y`` refined by gradient descent on the model's own rate-distortion loss
(``lambda * 255^2 * MSE + bpp``, the training loss) with Adam and a cosine schedule,
then coded by the same bit-exact path. ``--proxy ste``: hard rounding as coded, with a
straight-through gradient, keeping the best iterate; ``--proxy noise``: uniform noise as
in training (measured: it does not transfer to rounding).
Real bytes and decoded PSNR for both; BD-rate (PSNR) of refined against plain, and the
encode time each costs.

    python benchmarks/latent_refinement.py ../shared/data/val --limit 4 --crop 384 --iters 40 --lr 0.003 \
        --proxy ste --out results/latent_refinement_ste.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.codec.tile_coder import get_coder  # noqa: E402
from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.evaluation.images import center_crop, list_images, read_rgb  # noqa: E402
from core.evaluation.metrics import psnr  # noqa: E402
from core.options import DEFAULT_MODEL  # noqa: E402
from training.train_elic import likelihood_bits  # noqa: E402


def code(coder, y: torch.Tensor, level: torch.Tensor, shape) -> tuple[int, np.ndarray]:
    """Bit-exact coding of a latent: (bytes, decoded uint8 image (h, w, 3))."""
    out = coder.exact.compress(y.detach().numpy())
    nbytes = sum(len(s) for s in out["strings"])
    with torch.inference_mode():
        x_hat = coder.model.net.synthesis(torch.from_numpy(out["y_hat"]), level)[0]
    img = (x_hat.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return nbytes, img[: shape[0], : shape[1]]


def _ste_quantize(module):
    """The entropy model's rounding with a straight-through gradient (identity)."""
    original = module.quantize

    def quantize(inputs, mode, means=None):
        if mode != "dequantize":
            return original(inputs, mode, means)
        centred = inputs - means if means is not None else inputs
        rounded = centred + (torch.round(centred) - centred).detach()
        return rounded + means if means is not None else rounded

    return original, quantize


def refine(net, x, y0, level, lam, iters: int, lr: float, proxy: str = "ste") -> torch.Tensor:
    """``proxy``: "noise" (uniform noise, as in training) or "ste" (hard rounding, as coded,
    with a straight-through gradient; the iterate with the lowest loss is kept, so the
    result is never worse than the start by the model's own measure)."""
    from core.models.compressai_backend import EntropyModel

    y = y0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    inv = net._interp(net.log_inv_gain, level)
    codec = net.latent_codec
    was_training = codec.training
    patched = []
    if proxy == "noise":
        codec.train()
    else:
        codec.eval()
        for m in net.modules():
            if isinstance(m, EntropyModel):
                original, ste = _ste_quantize(m)
                patched.append((m, original))
                m.quantize = ste
    best, best_loss = y.detach().clone(), float("inf")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    try:
        for _ in range(iters):
            out = codec(y)
            x_hat = net.g_s(out["y_hat"] * inv)
            bpp = likelihood_bits(out["likelihoods"]).sum() / (x.shape[2] * x.shape[3])
            loss = lam * 255**2 * (x_hat - x).pow(2).mean() + bpp
            if proxy == "ste" and loss.item() < best_loss:  # hard rounding: the loss of what is coded
                best, best_loss = y.detach().clone(), loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        codec.train(was_training)
        for m, original in patched:
            m.quantize = original
    return best if proxy == "ste" else y.detach()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--crop", type=int, default=384, help="central crop (multiple of 64)")
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--proxy", choices=["ste", "noise"], default="ste", help="quantisation during refinement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    coder = get_coder(args.model)
    net = coder.model.net
    for prm in net.parameters():
        prm.requires_grad_(False)
    images = [(path.name, center_crop(read_rgb(path), args.crop)) for path in list_images(args.images, args.limit)]
    rows = []
    for q in args.qualities:
        level = torch.tensor([float(q - 1)])
        lam = coder.model.spec.lambdas[q - 1]
        for name, img in images:
            h, w = img.shape[:2]
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255.0
            pad = (0, (-w) % 64, 0, (-h) % 64)
            x = torch.nn.functional.pad(x, pad, mode="replicate")
            t0 = time.perf_counter()
            with torch.inference_mode():
                y0 = net.analysis(x, level)
            base_bytes, base_img = code(coder, y0, level, (h, w))
            t1 = time.perf_counter()
            y1 = refine(net, x, y0.clone(), level, lam, args.iters, args.lr, args.proxy)
            ref_bytes, ref_img = code(coder, y1, level, (h, w))
            t2 = time.perf_counter()
            row = dict(image=name, quality=q, plain_bpp=base_bytes * 8 / (h * w), plain_psnr=psnr(img, base_img),
                       refined_bpp=ref_bytes * 8 / (h * w), refined_psnr=psnr(img, ref_img),
                       plain_s=t1 - t0, refined_s=t2 - t0)
            rows.append(row)
            print(f"q{q} {name[:30]:<30} plain {row['plain_bpp']:.4f} bpp {row['plain_psnr']:.2f} dB | refined "
                  f"{row['refined_bpp']:.4f} bpp {row['refined_psnr']:.2f} dB | {row['refined_s'] / row['plain_s']:.0f}x "
                  "the encode time", flush=True)
    mean = lambda k, q: float(np.mean([r[k] for r in rows if r["quality"] == q]))  # noqa: E731
    plain = [(mean("plain_bpp", q), mean("plain_psnr", q)) for q in args.qualities]
    refined = [(mean("refined_bpp", q), mean("refined_psnr", q)) for q in args.qualities]
    bd = bd_rate([b for b, _ in plain], [s for _, s in plain], [b for b, _ in refined], [s for _, s in refined])
    print(f"BD-rate (PSNR) of refined against plain: {bd:+.2f} % ({args.iters} iterations, lr {args.lr}, {args.proxy})")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "bd_rate_psnr": bd, "rows": rows},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
