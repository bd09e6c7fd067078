"""Would another rounding of the latent pay? Two bit-free changes, measured on real bytes.

The symbols are ``q = round(y - mean)`` and the decoder synthesises ``mean + q``, the
centre of the symbol's bin. Two textbook alternatives, neither needing a new network:

- **encoder deadzone** (decoder unchanged): ``q = sign(r) * floor(|r| + 0.5 - t)``, so
  residuals just past a bin edge fall to the smaller symbol, which costs fewer bits;
- **decoder bin mean** (rate unchanged): reconstruct each non-zero symbol at the mean of
  its bin under the entropy model's own Gaussian ``N(0, scale)`` (``--shrink`` scales
  that step towards the centre; 1: the full bin mean).

Each is coded by the bit-exact entropy path (the deadzone through
``ExactElicEntropy.round_symbols``) and scored as BD-rate (PSNR) against plain rounding
on the same images: UCM val scenes and crops of the Dubai val images.

    python benchmarks/latent_rounding.py --model elic-v3 --deadzone 0.1 0.2 --shrink 0.5 1 \
        --out results/campaign/latent_rounding.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.codec.tile_coder import get_coder  # noqa: E402
from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.evaluation.images import center_crop, list_images, read_rgb  # noqa: E402
from core.models.exact_entropy import ExactElicEntropy  # noqa: E402
from core.models.int_layers import _ONE  # noqa: E402


class TracedEntropy(ExactElicEntropy):
    """The exact entropy path with a settable deadzone, recording each half's (scales, means)."""

    deadzone = 0.0

    def __init__(self, tables):
        super().__init__(tables)
        self.trace: list[tuple[np.ndarray, np.ndarray]] = []

    def round_symbols(self, residual):
        if not self.deadzone:
            return ExactElicEntropy.round_symbols(residual)
        return np.sign(residual) * np.floor(np.abs(residual) + 0.5 - self.deadzone)

    def _params(self, k, side_half, halves, half):
        scales, means = super()._params(k, side_half, halves, half)
        self.trace.append((np.maximum(scales / _ONE, self.scale_bounds[k]), means / _ONE))
        return scales, means


def bin_mean_shrink(symbols: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """|q| minus the mean of |r| over q's bin for r ~ N(0, scale): how far the bin mean lies
    towards zero from the bin centre (0 for q = 0, by symmetry)."""
    a, b = (np.abs(symbols) - 0.5) / scales, (np.abs(symbols) + 0.5) / scales
    mass = norm.cdf(b) - norm.cdf(a)
    mean = scales * (norm.pdf(a) - norm.pdf(b)) / np.maximum(mass, 1e-300)
    shrink = np.where(mass > 1e-12, np.abs(symbols) - mean, 0.0)
    return np.where(symbols == 0, 0.0, np.clip(shrink, 0.0, 0.5))


def reconstruct(entropy: TracedEntropy, y_hat: np.ndarray, factor: float) -> np.ndarray:
    """``y_hat`` with every non-zero symbol moved ``factor`` x its bin-mean shrink towards the mean."""
    bounds = np.cumsum(entropy.groups)[:-1]
    trace = iter(entropy.trace)
    out = []
    for k, group in enumerate(np.split(y_hat.astype(np.float64), bounds, axis=1)):
        halves = []
        for half in entropy._split(group, entropy.parity[k]):
            scales, means = next(trace)
            symbols = np.round(half - means)
            halves.append(half - np.sign(symbols) * factor * bin_mean_shrink(symbols, scales))
        out.append(entropy._join(halves, entropy.parity[k]))
    return np.concatenate(out, axis=1).astype(np.float32)


def images(val: str, scenes: int, dubai_crop: int) -> list[np.ndarray]:
    root = Path(val)
    picked = [center_crop(read_rgb(p), 256) for p in list_images(root / "ucmerced", scenes)]
    picked += [center_crop(read_rgb(p), dubai_crop) for p in list_images(root / "dubai")]
    return [img[: img.shape[0] // 64 * 64, : img.shape[1] // 64 * 64] for img in picked]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="elic-v3")
    p.add_argument("--val", default="../shared/data/val")
    p.add_argument("--scenes", type=int, default=24, help="UCM val scenes (256 px)")
    p.add_argument("--dubai-crop", type=int, default=768)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 3, 5, 7, 9, 11], help="qualities (1-based)")
    p.add_argument("--deadzone", type=float, nargs="*", default=[0.1, 0.2])
    p.add_argument("--shrink", type=float, nargs="*", default=[0.5, 1.0])
    p.add_argument("--out")
    args = p.parse_args(argv)

    coder = get_coder(args.model)
    entropy = TracedEntropy(coder.tables)
    pictures = images(args.val, args.scenes, args.dubai_crop)
    codings = {"plain": 0.0, **{f"deadzone {t}": t for t in args.deadzone}}  # name -> deadzone
    shrinks = {f"bin mean x{f}": f for f in args.shrink}  # decoded from the plain coding's symbols
    curves = {name: {"bpp": [], "psnr": []} for name in [*codings, *shrinks]}
    for quality in args.levels:
        level = float(quality - 1)
        totals = {name: [0, 0.0] for name in curves}  # bits, squared error
        pixels = 0

        def score(name, bits, y_hat, img):
            decoded = np.round(coder.synthesis(y_hat, level) * 255).transpose(1, 2, 0)
            totals[name][0] += bits
            totals[name][1] += float(np.sum((decoded - img) ** 2))

        for img in pictures:
            x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255
            y = coder.analysis(x, level)
            pixels += img.shape[0] * img.shape[1]
            for name, deadzone in codings.items():
                entropy.deadzone, entropy.trace = deadzone, []
                coded = entropy.compress(y)
                bits = 8 * sum(len(s) for s in coded["strings"])
                score(name, bits, coded["y_hat"], img)
                if not deadzone:  # same symbols and rate, other reconstructions
                    for shrink_name, factor in shrinks.items():
                        score(shrink_name, bits, reconstruct(entropy, coded["y_hat"], factor), img)
        for name, (bits, sq) in totals.items():
            curves[name]["bpp"].append(bits / pixels)
            curves[name]["psnr"].append(float(10 * np.log10(255**2 * 3 * pixels / sq)))
        print(f"q{quality}: " + ", ".join(f"{n} {curves[n]['bpp'][-1]:.4f} bpp {curves[n]['psnr'][-1]:.2f} dB"
                                          for n in curves), flush=True)
    plain = curves["plain"]
    result = {"command": "python benchmarks/latent_rounding.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "weights_sha256": coder.model.spec.sha256,
              "images": {"ucm scenes (256 px)": args.scenes, "dubai crops": len(pictures) - args.scenes},
              "curves": curves,
              "bd_rate_psnr_vs_plain_percent": {n: bd_rate(plain["bpp"], plain["psnr"], c["bpp"], c["psnr"])
                                                for n, c in curves.items() if n != "plain"}}
    print(json.dumps(result["bd_rate_psnr_vs_plain_percent"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
