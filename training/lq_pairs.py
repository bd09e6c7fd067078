"""Cache of (high-quality, degraded) crop pairs for the lookup and HPIN stages.

Degraded crops come from the ELIC codec at its low rates: the forward pass in eval mode
rounds the latents exactly like encode + decode (up to float noise of the entropy
model, which does not change the reconstruction), so a batch of crops is degraded in
one call instead of entropy-coding each. Pairs are stored as uint8, like a decoded
GeoTIFF. Optionally a fraction is degraded by JPEG instead, so the enhancer also sees
another codec's artefacts.

    python -m training.lq_pairs --data ../shared/data/train --elic /tmp/elic-lite-now.safetensors \
        --out runs/lq-pairs.npz --count 2000 --threads 1
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch

from .data import CropSampler, center_crops, list_images


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.lq_pairs", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="high-quality images (training folders)")
    p.add_argument("--elic", required=True, help="ELIC weights (.safetensors) or registry name")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.add_argument("--count", type=int, default=2000, help="number of crop pairs")
    p.add_argument("--crop", type=int, default=192, help="crop size (multiple of 64)")
    p.add_argument("--levels", type=float, nargs=2, default=(-1.0, 3.0),
                   help="0-based ELIC rate levels to draw from, uniformly (default -1..3, i.e. quality 0..4, "
                        "the qualities the shipped enhancer serves)")
    p.add_argument("--jpeg-frac", type=float, default=0.15, help="fraction degraded by JPEG instead")
    p.add_argument("--jpeg-quality", type=int, nargs=2, default=(5, 30), help="JPEG quality range")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--center", action="store_true",
                   help="validation cache: one centre crop per image, levels cycling through --val-levels, no JPEG")
    p.add_argument("--val-levels", type=float, nargs="+", default=(0.0, 1.0, 2.0))
    return p


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def jpeg(img_u8: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img_u8.transpose(1, 2, 0)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1)


@torch.no_grad()
def degrade_elic(net, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return net(x, levels)["x_hat"].clamp(0, 1)


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from core.models import load_model

    net = load_model(args.elic, args.device).net
    rng = np.random.default_rng(args.seed)
    if args.center:
        crops = [t for t in center_crops(list_images(args.data), args.crop, args.count)
                 if t.shape[-1] == args.crop and t.shape[-2] == args.crop]
        args.count, args.jpeg_frac = len(crops), 0.0
        sampler = None
    else:
        sampler = CropSampler(list_images(args.data), args.crop, seed=args.seed)
    n, c = args.count, args.crop
    hq = np.empty((n, 3, c, c), np.uint8)
    lq = np.empty((n, 3, c, c), np.uint8)
    level = np.full(n, -1.0, np.float32)  # -1: JPEG
    t0 = time.time()
    for start in range(0, n, args.batch):
        b = min(args.batch, n - start)
        if sampler is None:
            x_u8 = to_u8(torch.stack(crops[start : start + b]))
            lv = torch.tensor([args.val_levels[(start + i) % len(args.val_levels)] for i in range(b)])
        else:
            x_u8 = to_u8(sampler.batch(b))
            lv = torch.from_numpy(rng.uniform(*args.levels, size=b).astype(np.float32))
        x = torch.from_numpy(x_u8).float().div(255)
        y = to_u8(degrade_elic(net, x.to(args.device), lv.to(args.device)))
        for i in range(b):
            if rng.random() < args.jpeg_frac:
                y[i] = jpeg(x_u8[i], rng.integers(args.jpeg_quality[0], args.jpeg_quality[1] + 1))
            else:
                level[start + i] = lv[i]
        hq[start : start + b], lq[start : start + b] = x_u8, y
        if (start // args.batch) % 25 == 0:
            print(f"{start + b}/{n} pairs, {time.time() - t0:.0f} s", file=sys.stderr)
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, hq=hq, lq=lq, level=level)
    import os

    os.replace(tmp, args.out)
    print(f"wrote {n} pairs to {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


class PairSampler:
    """Random aligned sub-crops (with flips / 90-degree turns) of cached pairs -> float [0, 1].

    ``extra``: more arrays aligned with the pairs (N, ..., H / s, W / s), e.g. a teacher's
    outputs (s = 1) or code maps (s = 8): ``batch`` returns them cut from the same place,
    turned the same way (uint8 ones as float [0, 1], others as they are). Crop offsets are
    multiples of the largest ``s``."""

    def __init__(self, path: str, crop: int, seed: int = 0, extra: dict[str, np.ndarray] | None = None):
        d = np.load(path)
        self.hq, self.lq, self.level = d["hq"], d["lq"], d["level"]
        if crop > self.hq.shape[-1]:
            raise ValueError(f"crop {crop} is larger than the cached pairs ({self.hq.shape[-1]})")
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self.extra = dict(extra or {})
        for name, a in self.extra.items():
            if len(a) != len(self.hq) or self.hq.shape[-1] % a.shape[-1]:
                raise ValueError(f"{name}: {a.shape} does not line up with the pairs {self.hq.shape}")
        self.align = max([self.hq.shape[-1] // a.shape[-1] for a in self.extra.values()] + [1])

    def __len__(self) -> int:
        return len(self.hq)

    def batch(self, n: int):
        """(hq, lq) float batches, followed by the ``extra`` arrays' when there are any."""
        c, size = self.crop, self.hq.shape[-1]
        arrays = [self.hq, self.lq, *self.extra.values()]
        outs = [np.empty((n, *a.shape[1:-2], c * a.shape[-1] // size, c * a.shape[-1] // size), a.dtype)
                for a in arrays]
        for i, k in enumerate(self.rng.integers(0, len(self.hq), size=n)):
            y, x = self.rng.integers(0, (size - c) // self.align + 1, size=2) * self.align
            flip, rot = self.rng.random() < 0.5, int(self.rng.integers(4))
            for src, dst in zip(arrays, outs):
                s = size // src.shape[-1]
                a = src[k, ..., y // s : (y + c) // s, x // s : (x + c) // s]
                if flip:
                    a = a[..., ::-1]
                dst[i] = np.rot90(a, k=rot, axes=(-2, -1))
        f = lambda a: torch.from_numpy(a).float().div_(255) if a.dtype == np.uint8 else torch.from_numpy(a)  # noqa: E731
        return tuple(f(a) for a in outs)

    def fixed(self, n: int, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` pairs, centre-cropped (deterministic)."""
        c = crop or self.hq.shape[-1]
        o = (self.hq.shape[-1] - c) // 2
        f = lambda a: torch.from_numpy(np.ascontiguousarray(a[:n, :, o : o + c, o : o + c])).float().div_(255)  # noqa: E731
        return f(self.hq), f(self.lq)


if __name__ == "__main__":
    sys.exit(main())
