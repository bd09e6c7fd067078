"""Evaluate plain ELIC vs ELIC + Code-RSIC enhancement (and JPEG / WebP) on validation crops.

Every crop is really entropy-coded at each rate level by the evaluation's codec adapter
(``core.evaluation.codec_adapters``: ELIC tile streams -> bytes -> decoded uint8, like a decoded
GeoTIFF), then enhanced; JPEG and WebP use the same adapters as ``python -m core.evaluate``.
Every codec's bpp counts its whole stream. Reported per variant and rate: bpp, PSNR,
MS-SSIM, LPIPS (AlexNet), DISTS, and FID / KID over the set (``core.evaluation.metrics``,
Inception pool3 of the 256-pixel crops: with a few dozen crops FID is biased upwards and
noisy, KID is the unbiased one), plus decode and enhancement seconds per megapixel.

    python -m training.eval_enhance --val ../shared/data/val --elic elic-lite \
        --enhancer core/weights/enhancer-lite.safetensors --out runs/eval-enhance.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from .data import center_crops, list_images


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.eval_enhance", description=__doc__.split("\n\n")[0])
    p.add_argument("--val", nargs="+", required=True, help="validation folders/files")
    p.add_argument("--elic", default="elic-lite", help="ELIC registry name or .safetensors")
    p.add_argument("--enhancer", default=None, help="enhancer registry name or .safetensors")
    p.add_argument("--size", type=int, default=256, help="centre-crop size")
    p.add_argument("--limit", type=int, default=48, help="number of validation crops (spread over classes)")
    p.add_argument("--levels", type=float, nargs="+", default=[0, 1, 2, 3, 4, 5], help="0-based ELIC levels")
    p.add_argument("--fidelity", type=float, nargs="+", default=[0.5], help="fidelities at every level")
    p.add_argument("--extra-fidelities", type=float, nargs="*", default=[0.0, 1.0],
                   help="more fidelities, only at --extra-levels")
    p.add_argument("--extra-levels", type=float, nargs="*", default=[0, 1])
    p.add_argument("--jpeg", type=int, nargs="*", default=[5, 10, 20, 40], help="JPEG qualities (none: skip)")
    p.add_argument("--webp", type=int, nargs="*", default=[0, 10, 30, 60], help="WebP qualities (none: skip)")
    p.add_argument("--no-dists", action="store_true", help="skip DISTS (slow on CPU)")
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--threads", type=int, default=0)
    return p


def to_u8(x: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


class Scores:
    def __init__(self, dists: bool):
        from core.evaluation import metrics

        self.m = metrics
        self.use_dists = dists
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.feats: dict[str, list[np.ndarray]] = defaultdict(list)

    @torch.inference_mode()
    def add(self, key: str, ref: np.ndarray, img: np.ndarray, **extra) -> None:
        m = self.m
        row = {"psnr": m.psnr(ref, img), "ms_ssim": m.ms_ssim(ref, img), "lpips": m.lpips(ref, img), **extra}
        if self.use_dists:
            row["dists"] = m.dists(ref, img)
        self.rows[key].append(row)
        self.feats[key].append(m.inception_features([img])[0])

    def summary(self) -> dict:
        ref = np.stack(self.feats["original"])
        out = {}
        for key, rows in self.rows.items():
            if key == "original":
                continue
            s = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            f = np.stack(self.feats[key])
            s["fid"] = self.m.fid_from_features(ref, f)
            s["kid"] = self.m.kid_from_features(ref, f)
            s["n"] = len(rows)
            out[key] = s
        return out


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from core.evaluation.codec_adapters import CODECS, EvalOptions
    from core.models import get_enhancer
    from core.enhance.runtime import enhancer_runtime
    from core.enhance.windows import window_runner
    from core.models.runtime import cpu_bf16

    ours = CODECS["ours"](EvalOptions(model=args.elic))
    classical = [(CODECS[name](EvalOptions()), qs) for name, qs in (("jpeg", args.jpeg), ("webp", args.webp))]
    enh = get_enhancer(args.enhancer)
    bf16 = cpu_bf16()  # as the decoder runs it (options.PRECISION_ENV)
    runner = enhancer_runtime(enh)  # and on its runtime
    crops = center_crops(list_images(args.val), args.size, args.limit)
    scores = Scores(dists=not args.no_dists)
    t_dec, t_enh, px_dec, px_enh = 0.0, 0.0, 0, 0
    t0 = time.time()
    for n, crop in enumerate(crops):
        ref = to_u8(crop.numpy())
        h, w = ref.shape[:2]
        scores.feats["original"].append(scores.m.inception_features([ref])[0])
        for lv in args.levels:
            stream = ours.encode(ref, lv + 1)  # the adapter's quality is the 1-based rate level
            bpp = len(stream) * 8 / (h * w)
            t = time.perf_counter()
            dec_u8 = ours.decode(stream, (h, w))
            t_dec += time.perf_counter() - t
            px_dec += h * w
            q = f"q{lv + 1:g}"
            scores.add(f"elic/{q}", ref, dec_u8, bpp=bpp)
            fids = list(args.fidelity) + (list(args.extra_fidelities) if lv in args.extra_levels else [])
            xin = torch.from_numpy(dec_u8.transpose(2, 0, 1).astype(np.float32) / 255)[None]
            for fw in fids:
                t = time.perf_counter()
                out = window_runner(runner, fw)(xin.numpy())
                t_enh += time.perf_counter() - t
                px_enh += h * w
                scores.add(f"elic+enh(w={fw:g})/{q}", ref, to_u8(out), bpp=bpp)
        for codec, qs in classical:
            for qual in qs or []:
                data = codec.encode(ref, qual)
                scores.add(f"{codec.name}/q{qual}", ref, codec.decode(data, (h, w)), bpp=len(data) * 8 / (h * w))
        print(f"{n + 1}/{len(crops)} crops, {time.time() - t0:.0f} s", file=sys.stderr)
    res = {"crops": len(crops), "size": args.size, "elic": args.elic, "enhancer": args.enhancer,
           "enhancer_sha256": enh.sha256, "threads": torch.get_num_threads(),
           "enhancer_precision": getattr(runner, "precision", "bf16" if bf16 else "f32"),
           "enhancer_runtime": getattr(runner, "name", "torch"),
           "decode_s_per_mp": t_dec / px_dec * 1e6, "enhance_s_per_mp": t_enh / px_enh * 1e6,
           "results": scores.summary()}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print_table(res)
    return 0


def print_table(res: dict) -> None:
    cols = ["bpp", "psnr", "ms_ssim", "lpips", "dists", "fid", "kid"]
    print("| variant | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key, s in sorted(res["results"].items(), key=lambda kv: (kv[0].split("/")[0], kv[1]["bpp"])):
        print(f"| {key} | " + " | ".join(f"{s[c]:.4f}" if c in s else "-" for c in cols) + " |")
    print(f"decode {res['decode_s_per_mp']:.2f} s/MP, enhancement {res['enhance_s_per_mp']:.2f} s/MP "
          f"({res['threads']} thread(s))")


if __name__ == "__main__":
    sys.exit(main())
