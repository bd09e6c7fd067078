"""Rate-distortion-perception evaluation of our codec against classical codecs.

``python -m core.evaluate DIR [--codecs ours,jpeg,webp,jp2,jxl] [--bpp 0.05 0.1 0.2 0.4]``

For every image, target bitrate and codec, the codec's quality parameter is searched
(safeguarded bisection on log-bpp) until the coded size hits the target bpp; the
decoded image is then scored with PSNR, MS-SSIM, LPIPS (and DISTS on request), and
256 x 256 patches of all decoded images of one (codec, target) pair give FID and KID
against the same patches of the originals. Results: ``results.json``, ``bd_rate.md``
(Bjontegaard delta rate per metric, against JPEG 2000 and against ours), rate-distortion
plots ``rd_<metric>.png`` and encode/decode megapixels per second per codec.

Codecs are entries of ``CODECS``: a name -> factory returning a ``Codec``. A decoder-side
post-processing variant (e.g. "ours+enhance") is a ``Postprocessed`` wrapper around an
existing codec: same bits, different decoded pixels (see ``register``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import struct
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import CodecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
DEFAULT_CODECS = ("ours", "jpeg", "webp", "jp2", "jxl")
DEFAULT_BPP = (0.05, 0.1, 0.2, 0.4)
DEFAULT_METRICS = ("psnr", "ms-ssim", "lpips", "fid")
ALL_METRICS = ("psnr", "ms-ssim", "lpips", "dists", "fid")


@dataclass
class EvalOptions:
    model: str = "elic-lite"
    device: str = "cpu"
    tile: int = 2048  # our codec: largest tile side (images are split into a grid of tiles)


# ------------------------------------------------------------------ codecs

class Codec:
    """A lossy image codec with one scalar quality parameter in [lo, hi].

    ``increasing``: more bits for a larger parameter. ``integer``: only integer values.
    """

    name = "codec"
    lo: float = 0.0
    hi: float = 1.0
    integer = False
    increasing = True

    def encode(self, img: np.ndarray, q: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def guess(self, target_bpp: float) -> float | None:
        """A first parameter to try for a target (None: no idea)."""
        return None

    def describe(self) -> str:
        return self.name


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class PillowCodec(Codec):
    def __init__(self, name, fmt, lo, hi, integer, options, describe):
        self.name, self.fmt, self.lo, self.hi, self.integer = name, fmt, lo, hi, integer
        self.options, self._describe = options, describe

    def encode(self, img, q):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, self.fmt, **self.options(q))
        return buf.getvalue()

    def decode(self, data, shape):
        return _pil_decode(data)

    def describe(self):
        return self._describe


class Jpeg2000(PillowCodec):
    """OpenJPEG through Pillow; the parameter is the requested bpp (rate control)."""

    def __init__(self):
        super().__init__(
            "jp2", "JPEG2000", 0.005, 8.0, False,
            lambda q: {"quality_mode": "rates", "quality_layers": [24.0 / q], "irreversible": True, "mct": 1},
            "JPEG 2000 (OpenJPEG via Pillow, 9/7 wavelet + ICT, rate control)")

    def guess(self, target_bpp):
        return target_bpp


class JpegXL(Codec):
    name = "jxl"
    lo, hi = 0.1, 25.0  # butteraugli distance
    increasing = False

    def encode(self, img, q):
        import imagecodecs

        return imagecodecs.jpegxl_encode(img, distance=float(q), effort=7)

    def decode(self, data, shape):
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]

    def describe(self):
        import imagecodecs

        return f"JPEG XL (libjxl via imagecodecs {imagecodecs.__version__}, effort 7, distance search)"


class OurCodec(Codec):
    """ELIC tiles via ``core.tile_coder``: the image is cut into a grid of tiles of at most
    ``tile`` pixels a side, each padded (edge) to a multiple of 64 and coded whole.

    Stream: f32 rate level, then per tile u32 length + ``encode_tile`` bytes. Every byte
    is counted in the bitrate (the .crsic container's header and index are not).
    """

    name = "ours"
    integer = False

    def __init__(self, opts: EvalOptions):
        from .tile_coder import get_coder

        self.coder = get_coder(opts.model, opts.device)
        spec = self.coder.model.spec
        self.lo, self.hi = 1.0, float(spec.levels)
        self.tile = max(64, opts.tile - opts.tile % 64)
        self.model_desc = f"{spec.name} (weights sha256 {self.coder.model.sha256[:12]})"

    def _grid(self, h, w):
        ny, nx = math.ceil(h / self.tile), math.ceil(w / self.tile)
        ys = np.linspace(0, h, ny + 1).round().astype(int)
        xs = np.linspace(0, w, nx + 1).round().astype(int)
        return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(ny) for j in range(nx)]

    def encode(self, img, q):
        from .tiling import padded

        level = float(q) - 1.0
        unit = img.transpose(2, 0, 1).astype(np.float32) / 255.0
        parts = [struct.pack("<f", level)]
        for y0, y1, x0, x1 in self._grid(*img.shape[:2]):
            t = unit[:, y0:y1, x0:x1]
            t = np.pad(t, ((0, 0), (0, padded(y1 - y0) - (y1 - y0)), (0, padded(x1 - x0) - (x1 - x0))), mode="edge")
            stream, _crc = self.coder.encode_tile(t, level)
            parts += [struct.pack("<I", len(stream)), stream]
        return b"".join(parts)

    def decode(self, data, shape):
        h, w = shape
        (level,) = struct.unpack_from("<f", data, 0)
        pos = 4
        out = np.empty((3, h, w), np.float32)
        for y0, y1, x0, x1 in self._grid(h, w):
            (n,) = struct.unpack_from("<I", data, pos)
            tile = self.coder.decode_tile(data[pos + 4 : pos + 4 + n], level)
            pos += 4 + n
            out[:, y0:y1, x0:x1] = tile[:3, : y1 - y0, : x1 - x0]
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)

    def describe(self):
        return f"Code-RSIC ELIC {self.model_desc}, tiles up to {self.tile} px"


class Postprocessed(Codec):
    """``inner``'s bits, decoded then passed through ``post(img) -> img`` (e.g. an enhancer)."""

    def __init__(self, inner: Codec, post: Callable[[np.ndarray], np.ndarray], name: str, note: str = ""):
        self.inner, self.post, self.name, self.note = inner, post, name, note
        self.lo, self.hi, self.integer, self.increasing = inner.lo, inner.hi, inner.integer, inner.increasing

    def encode(self, img, q):
        return self.inner.encode(img, q)

    def decode(self, data, shape):
        return self.post(self.inner.decode(data, shape))

    def guess(self, target_bpp):
        return self.inner.guess(target_bpp)

    def describe(self):
        return f"{self.inner.describe()} + {self.note or 'post-processing'}"


CODECS: dict[str, Callable[[EvalOptions], Codec]] = {}


def register(name: str):
    """Add a codec variant: ``@register("ours+enhance")`` on ``def f(opts) -> Codec``, e.g.
    ``return Postprocessed(CODECS["ours"](opts), my_enhance_fn, "ours+enhance")``."""

    def deco(factory):
        CODECS[name] = factory
        return factory

    return deco


register("ours")(OurCodec)


@register("ours+enhance")
def _ours_enhanced(opts: EvalOptions) -> Codec:
    """Our bits, decoded, then the Code-RSIC enhancer (shipped weights, default fidelity)."""
    from .enhance_raster import enhance_array

    return Postprocessed(OurCodec(opts), enhance_array, "ours+enhance", "Code-RSIC enhancer")

register("jpeg")(lambda opts: PillowCodec(
    "jpeg", "JPEG", 1, 100, True, lambda q: {"quality": int(q), "optimize": True},
    "JPEG (libjpeg via Pillow, 4:2:0, optimised Huffman)"))
register("webp")(lambda opts: PillowCodec(
    "webp", "WEBP", 0.0, 100.0, False, lambda q: {"quality": float(q), "method": 4},
    "WebP (libwebp via Pillow, method 4)"))
register("jp2")(lambda opts: Jpeg2000())
register("jxl")(lambda opts: JpegXL())


# ------------------------------------------------------------------ matching a target bpp

@dataclass
class Encoded:
    quality: float
    data: bytes
    bpp: float
    seconds: float
    hit: bool
    tries: int


class RateSearch:
    """Encodings of one image by one codec, memoised across targets."""

    def __init__(self, codec: Codec, img: np.ndarray):
        self.codec, self.img = codec, img
        self.pixels = img.shape[0] * img.shape[1]
        self.done: dict[float, tuple[bytes, float]] = {}

    def bpp(self, q: float) -> float:
        if q not in self.done:
            t0 = time.perf_counter()
            data = self.codec.encode(self.img, q)
            self.done[q] = (data, time.perf_counter() - t0)
        return len(self.done[q][0]) * 8 / self.pixels

    def match(self, target: float, tol: float = 0.03, max_tries: int = 14) -> Encoded:
        """Parameter whose bpp is closest (in log ratio) to ``target``; ``hit`` when within ``tol``."""
        c = self.codec
        sign = 1.0 if c.increasing else -1.0
        u = lambda q: sign * q  # noqa: E731  (u grows with the bitrate)
        q_of = lambda v: sign * v  # noqa: E731
        snap = (lambda v: float(round(v))) if c.integer else (lambda v: float(v))
        err = lambda q: abs(math.log(self.bpp(q) / target))  # noqa: E731
        start = len(self.done)
        lo, hi = sorted((u(c.lo), u(c.hi)))
        # tighten the bracket with what earlier targets already measured
        for q in list(self.done):
            b = self.bpp(q)
            if b <= target and u(q) > lo:
                lo = u(q)
            if b >= target and u(q) < hi:
                hi = u(q)
        guess = c.guess(target)
        if guess is not None and lo < u(guess) < hi:
            b = self.bpp(snap(guess))
            lo, hi = (u(guess), hi) if b <= target else (lo, u(guess))
        b_lo, b_hi = self.bpp(q_of(lo)), self.bpp(q_of(hi))
        tries = 0
        while b_lo < target < b_hi and tries < max_tries:
            if min(err(q_of(lo)), err(q_of(hi))) <= math.log1p(tol):
                break
            if c.integer and hi - lo <= 1:
                break
            if hi - lo < 1e-3 * max(1.0, abs(hi)):
                break
            t = (math.log(target) - math.log(b_lo)) / (math.log(b_hi) - math.log(b_lo)) if b_hi > b_lo else 0.5
            v = lo + min(max(t if tries % 3 != 2 else 0.5, 0.1), 0.9) * (hi - lo)
            if c.integer:
                v = min(max(round(v), lo + 1), hi - 1)
            b = self.bpp(q_of(v))
            if b <= target:
                lo, b_lo = v, b
            else:
                hi, b_hi = v, b
            tries += 1
        best = min(self.done, key=err)
        data, seconds = self.done[best]
        bpp = self.bpp(best)
        return Encoded(best, data, bpp, seconds, abs(bpp / target - 1) <= tol, len(self.done) - start)


# ------------------------------------------------------------------ images

def list_images(root: str | Path, limit: int | None = None) -> list[Path]:
    """Images under ``root`` (or ``root`` itself); with ``limit``, taken round-robin over
    their folders (sorted), so a class-per-folder dataset is sampled evenly."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CodecError(f"no such folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CodecError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if limit is None or limit >= len(files):
        return files
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    queues = [by_folder[k] for k in sorted(by_folder)]
    picked: list[Path] = []
    i = 0
    while len(picked) < limit:
        for q in queues:
            if i < len(q) and len(picked) < limit:
                picked.append(q[i])
        i += 1
    return sorted(picked)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from a PNG/JPEG/WebP or the RGB bands of a uint8 GeoTIFF."""
    if path.suffix.lower() in (".tif", ".tiff"):
        from .raster_io import default_bands, open_raster

        with open_raster(path) as ds:
            bands = default_bands(ds)
            if len(bands) != 3 or any(ds.dtypes[b - 1] != "uint8" for b in bands):
                raise CodecError(f"{path.name}: evaluation needs 3 uint8 (RGB) bands")
            return np.ascontiguousarray(ds.read(bands).transpose(1, 2, 0))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return img
    h, w = img.shape[:2]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y0 : y0 + size, x0 : x0 + size]


def spread_patches(img: np.ndarray, size: int, cap: int | None) -> list[np.ndarray]:
    from .metrics import image_patches

    patches = image_patches(img, size)
    if cap and len(patches) > cap:
        idx = np.linspace(0, len(patches) - 1, cap).round().astype(int)
        patches = [patches[i] for i in idx]
    return patches


# ------------------------------------------------------------------ BD-rate

def quality_axis(metric: str, values: np.ndarray) -> np.ndarray:
    """Metric values -> an axis that grows with quality (MS-SSIM in dB, distances negated)."""
    if metric == "ms_ssim":
        return -10 * np.log10(np.clip(1 - values, 1e-10, None))
    if metric in ("lpips", "dists", "fid", "kid"):
        return -values
    return values


def bd_rate(rate_a, q_a, rate_t, q_t, with_overlap: bool = False):
    """Bjontegaard delta rate (%) of test vs anchor: mean log-rate difference at equal quality,
    over the overlapping quality range, each curve interpolated with a monotone cubic (PCHIP).
    Negative: the test codec needs fewer bits. NaN when the curves do not overlap or a curve
    is not monotonic. ``with_overlap``: also return the overlap as a fraction of the shorter
    curve's quality range (a small overlap makes the number unreliable)."""
    from scipy.interpolate import PchipInterpolator

    def curve(r, q):
        r, q = np.asarray(r, float), np.asarray(q, float)
        ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
        r, q = r[ok], q[ok]
        order = np.argsort(q)
        r, q = r[order], q[order]
        if len(q) < 2 or np.any(np.diff(q) <= 0) or np.any(np.diff(r) <= 0):
            return None
        return PchipInterpolator(q, np.log(r)), q[0], q[-1]

    a, t = curve(rate_a, q_a), curve(rate_t, q_t)
    value, overlap = math.nan, 0.0
    if a is not None and t is not None:
        lo, hi = max(a[1], t[1]), min(a[2], t[2])
        if hi > lo:
            diff = (t[0].integrate(lo, hi) - a[0].integrate(lo, hi)) / (hi - lo)
            value = float((math.exp(diff) - 1) * 100)
            overlap = float((hi - lo) / min(a[2] - a[1], t[2] - t[1]))
    return (value, overlap) if with_overlap else value


# ------------------------------------------------------------------ evaluation

def _mean(values):
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def evaluate(paths: list[Path], codec_names: list[str], targets: list[float], metrics: list[str],
             opts: EvalOptions, tol: float = 0.03, crop: int | None = None, fid_patch: int = 256,
             fid_cap: int | None = 16, log=print) -> dict:
    import torch

    from . import metrics as M

    unknown = [c for c in codec_names if c not in CODECS]
    if unknown:
        raise CodecError(f"unknown codec {unknown[0]!r} (known: {', '.join(CODECS)})")
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise CodecError(f"unknown metric {bad[0]!r} (known: {', '.join(ALL_METRICS)})")
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


SUMMARY_METRICS = ("psnr", "ms_ssim", "lpips", "dists")


def summarize(records, codec_names, targets, metrics, ref_feats, dec_feats) -> dict:
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


def bd_table(summary, codec_names, anchor, metrics) -> dict:
    """{codec: {metric: {"bd_rate": %, "overlap": fraction}}} of every codec against ``anchor``."""
    keys = [m for m in ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid") if any(m in r for r in summary[anchor])]
    table = {}
    for name in codec_names:
        if name == anchor:
            continue
        table[name] = {}
        for m in keys:
            a, t = summary[anchor], summary[name]
            value, overlap = bd_rate(
                [r["bpp"] for r in a], quality_axis(m, np.array([r.get(m, math.nan) for r in a], float)),
                [r["bpp"] for r in t], quality_axis(m, np.array([r.get(m, math.nan) for r in t], float)),
                with_overlap=True)
            table[name][m] = {"bd_rate": value, "overlap": overlap}
    return table


SMALL_OVERLAP = 0.25


# ------------------------------------------------------------------ outputs

METRIC_LABELS = {"psnr": "PSNR (dB) higher is better", "ms_ssim": "MS-SSIM higher is better",
                 "lpips": "LPIPS (AlexNet) lower is better", "dists": "DISTS lower is better",
                 "fid": "FID (256 px patches) lower is better", "kid": "KID lower is better"}


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _fmt(v, digits=2):
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def markdown_tables(result: dict) -> str:
    lines = []
    summary = result["summary"]
    keys = [m for m in ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")
            if any(m in r for rows in summary.values() for r in rows)]
    lines.append("## Mean per target bitrate\n")
    lines.append("| codec | target bpp | bpp | hit | " + " | ".join(keys) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(keys))
    digits = {"psnr": 2, "ms_ssim": 4, "lpips": 4, "dists": 4, "fid": 1, "kid": 4}
    for name, rows in summary.items():
        for r in rows:
            vals = " | ".join(_fmt(r.get(m), digits[m]) for m in keys)
            lines.append(f"| {name} | {r['target_bpp']} | {r['bpp']:.3f} | {r['hit_rate']:.0%} | {vals} |")
    for anchor, table in result["bd_rate"].items():
        if not table:
            continue
        cols = list(next(iter(table.values())).keys())
        lines.append(f"\n## BD-rate vs {anchor} (%; negative = fewer bits for the same quality)\n")
        lines.append("| codec | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for name, row in table.items():
            cells = []
            for cell in row.values():
                v = cell["bd_rate"]
                if v is None or not math.isfinite(v):
                    cells.append("n/a")
                else:
                    cells.append(f"{v:+.1f}" + (" †" if cell["overlap"] < SMALL_OVERLAP else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(f"\nn/a: the curves do not overlap in quality, or one is not monotonic. †: they overlap on "
                     f"less than {SMALL_OVERLAP:.0%} of the shorter curve's quality range (unreliable).")
    lines.append("\n## Throughput (megapixels per second, final encode / decode)\n")
    lines.append("| codec | encode | decode |")
    lines.append("|---|---|---|")
    for name, t in result["throughput"].items():
        lines.append(f"| {name} | {t['encode_mpx_per_s']:.2f} | {t['decode_mpx_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    keys = [m for m in ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")
            if any(r.get(m) is not None and math.isfinite(r.get(m)) for rows in summary.values() for r in rows)]
    written = []
    for m in keys:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name, rows in summary.items():
            pts = [(r["bpp"], r[m]) for r in rows if r.get(m) is not None and math.isfinite(r[m])]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", label=name)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(alpha=0.3)
        ax.legend()
        title = f"{len(result['config']['images'])} images, mean per target bpp"
        if m in ("fid", "kid"):
            patches = max((r.get("fid_patches") or 0) for rows in summary.values() for r in rows)
            title = f"{len(result['config']['images'])} images, {patches} patches of 256 px"
        ax.set_title(title)
        fig.tight_layout()
        path = out / f"rd_{m}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(result), indent=1))
    tmp.replace(path)
    md = out / "bd_rate.md"
    md.write_text(markdown_tables(result))
    return [path, md] + plot(result, out)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="folder of images (PNG/JPEG/WebP/GeoTIFF, RGB uint8), searched recursively")
    p.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help=f"comma list of {', '.join(CODECS)}")
    p.add_argument("--bpp", type=float, nargs="+", default=list(DEFAULT_BPP), help="target bits per pixel")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help=f"comma list of {', '.join(ALL_METRICS)}")
    p.add_argument("--limit", type=int, help="use N images, spread evenly over sub-folders")
    p.add_argument("--crop", type=int, help="centre-crop images larger than N x N (saves time on big images)")
    p.add_argument("--model", default="elic-lite", help="our codec: registry name or .safetensors file")
    p.add_argument("--tile", type=int, default=2048, help="our codec: largest tile side")
    p.add_argument("--tol", type=float, default=0.03, help="relative bpp tolerance of the quality search")
    p.add_argument("--fid-patches", type=int, default=16, help="at most N 256-px patches per image for FID/KID")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: every codec then runs single-threaded, and a shared CPU "
                        "is not oversubscribed); 0 = torch's default")
    p.add_argument("--out", default="results/eval", help="output folder")
    return p


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        paths = list_images(args.dir, args.limit)
        codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        opts = EvalOptions(model=args.model, tile=args.tile)
        print(f"{len(paths)} images, codecs {', '.join(codecs)}, targets {args.bpp} bpp", flush=True)
        result = evaluate(paths, codecs, args.bpp, metrics, opts, tol=args.tol, crop=args.crop,
                          fid_cap=args.fid_patches, log=lambda s: print(s, flush=True))
        result["config"]["command"] = " ".join(["python -m core.evaluate"] + list(sys.argv[1:] if argv is None else argv))
        for path in write_outputs(result, Path(args.out)):
            print(f"wrote {path}")
        print(markdown_tables(result))
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
