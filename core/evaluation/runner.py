"""One evaluation run: every image x codec x target bitrate, scored, summarised and compared.

For every image, target bitrate and codec, the codec's quality parameter is searched
(``rate_search``) until the coded size hits the target bpp; the decoded image is then
scored with PSNR, MS-SSIM, LPIPS (and DISTS on request), and 256 x 256 patches of all
decoded images of one (codec, target) pair give FID and KID against the same patches
of the originals. ``evaluate`` returns the dict that ``report`` writes as results.json.
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import BadInput, CodecError
from .bd_rate import bd_table
from .codec_adapters import CODECS, EvalOptions
from .images import center_crop, read_rgb, spread_patches
from .rate_search import RateSearch

DEFAULT_BPP = (0.05, 0.1, 0.2, 0.4)
DEFAULT_METRICS = ("psnr", "ms-ssim", "lpips", "fid")
ALL_METRICS = ("psnr", "ms-ssim", "lpips", "dists", "fid")
SUMMARY_METRICS = ("psnr", "ms_ssim", "lpips", "dists")


def _mean(values):
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def evaluate(paths: list[Path], codec_names: list[str], targets: list[float], metrics: list[str],
             opts: EvalOptions, tol: float = 0.03, crop: int | None = None, fid_patch: int = 256,
             fid_cap: int | None = 16, log=print) -> dict:
    """Run ``codec_names`` on ``paths`` at every target bpp; the results.json dict (config,
    records, summary, throughput, bd_rate). ``metrics`` are CLI names (``ms-ssim``...)."""
    import torch

    from . import metrics as M

    unknown = [c for c in codec_names if c not in CODECS]
    if unknown:
        raise BadInput(f"unknown codec {unknown[0]!r} (known: {', '.join(CODECS)})")
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise BadInput(f"unknown metric {bad[0]!r} (known: {', '.join(ALL_METRICS)})")
    # load the learned metrics and codecs first: a missing weights file fails before any work
    lpips_net = M.get_metric("lpips") if "lpips" in metrics else None
    dists_net = M.get_metric("dists") if "dists" in metrics else None
    if "fid" in metrics:
        M.get_metric("inception")
    codecs = {name: CODECS[name](opts) for name in codec_names}
    targets = sorted(targets)

    records = []
    ref_feats, dec_feats = [], defaultdict(list)
    timing = defaultdict(lambda: {"pixels": 0, "encode_s": 0.0, "decode_s": 0.0})
    t_start = time.perf_counter()
    for n, path in enumerate(paths, 1):
        img = center_crop(read_rgb(path), crop)
        h, w = img.shape[:2]
        patches = spread_patches(img, fid_patch, fid_cap) if "fid" in metrics else []
        if patches:
            ref_feats.append(M.inception_features(patches))
        ref_t = M.to_tensor(img)
        ref_lpips = lpips_net.features_of(ref_t) if lpips_net is not None else None
        for name, codec in codecs.items():
            search = RateSearch(codec, img)
            for target in targets:
                enc = search.match(target, tol)
                t0 = time.perf_counter()
                dec = codec.decode(enc.data, (h, w))
                dec_s = time.perf_counter() - t0
                if dec.shape != img.shape:
                    raise CodecError(f"{name} decoded {dec.shape}, expected {img.shape}")
                rec = {"image": str(path), "width": w, "height": h, "codec": name, "target_bpp": target,
                       "quality": enc.quality, "bpp": enc.bpp, "bytes": len(enc.data), "hit": enc.hit,
                       "encodes": enc.tries, "encode_s": enc.seconds, "decode_s": dec_s}
                if "psnr" in metrics:
                    rec["psnr"] = M.psnr(img, dec)
                if "ms-ssim" in metrics:
                    rec["ms_ssim"] = M.ms_ssim(img, dec) if min(h, w) > 160 else math.nan
                with torch.inference_mode():
                    dec_t = M.to_tensor(dec)
                    if lpips_net is not None:
                        rec["lpips"] = float(lpips_net.from_features(ref_lpips, lpips_net.features_of(dec_t))[0])
                    if dists_net is not None:
                        rec["dists"] = float(dists_net(ref_t, dec_t)[0])
                if patches:
                    dec_feats[(name, target)].append(M.inception_features(spread_patches(dec, fid_patch, fid_cap)))
                tm = timing[name]
                tm["pixels"] += h * w
                tm["encode_s"] += enc.seconds
                tm["decode_s"] += dec_s
                records.append(rec)
        log(f"[{n}/{len(paths)}] {path.name} {w}x{h}  ({time.perf_counter() - t_start:.0f} s)")

    summary = summarize(records, codec_names, targets, metrics, ref_feats, dec_feats)
    throughput = {name: {"encode_mpx_per_s": t["pixels"] / 1e6 / t["encode_s"] if t["encode_s"] else math.nan,
                         "decode_mpx_per_s": t["pixels"] / 1e6 / t["decode_s"] if t["decode_s"] else math.nan,
                         "megapixels": t["pixels"] / 1e6}
                  for name, t in timing.items()}
    anchors = [a for a in ("jp2", "ours") if a in codec_names]
    bd = {a: bd_table(summary, codec_names, a, metrics) for a in anchors}
    return {
        "config": {"images": [str(p) for p in paths], "codecs": {n: c.describe() for n, c in codecs.items()},
                   "target_bpp": targets, "tolerance": tol, "metrics": metrics, "crop": crop,
                   "fid_patch": fid_patch, "fid_patches_per_image_max": fid_cap,
                   "torch_threads": torch.get_num_threads(), "machine": platform.platform(),
                   "seconds": time.perf_counter() - t_start},
        "records": records, "summary": summary, "throughput": throughput, "bd_rate": bd,
    }


def summarize(records, codec_names, targets, metrics, ref_feats, dec_feats) -> dict:
    """Per codec, one row per target: mean bpp, hit rate and metrics; FID / KID over the patches."""
    from . import metrics as M

    ref = np.concatenate(ref_feats) if ref_feats else None
    out = {}
    for name in codec_names:
        rows = []
        for target in targets:
            rs = [r for r in records if r["codec"] == name and r["target_bpp"] == target]
            row = {"target_bpp": target, "bpp": _mean(r["bpp"] for r in rs), "images": len(rs),
                   "hit_rate": _mean(float(r["hit"]) for r in rs)}
            for m in SUMMARY_METRICS:
                if rs and m in rs[0]:
                    row[m] = _mean(r[m] for r in rs)
            if ref is not None and dec_feats.get((name, target)):
                dec = np.concatenate(dec_feats[(name, target)])
                row["fid"] = M.fid_from_features(ref, dec)
                row["kid"] = M.kid_from_features(ref, dec)
                row["fid_patches"] = len(dec)
            rows.append(row)
        out[name] = rows
    return out
