"""Codec adapters for the evaluation: one scalar quality parameter, bytes in, RGB pixels out.

Every adapter returns the whole file its library writes (JPEG/JFIF, RIFF WebP, JP2,
AVIF/HEIF, JPEG XL codestream, our stream), and the bitrate counts all of it.

``CODECS`` maps a name to a factory ``f(EvalOptions) -> Codec``. A decoder-side
post-processing variant (e.g. "ours+enhance") is a ``Postprocessed`` wrapper around an
existing codec: same bits, different decoded pixels (see ``register``).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..options import DEFAULT_MODEL, MIN_QUALITY

DEFAULT_CODECS = ("ours", "jpeg", "webp", "jp2", "avif", "jxl")


@dataclass
class EvalOptions:
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    tile: int = 2048  # our codec: largest tile side (images are split into a grid of tiles)


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
    """A format Pillow writes: ``options(q)`` gives the ``Image.save`` keywords."""

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
    """libjxl through imagecodecs; the parameter is the butteraugli distance (fewer bits when larger)."""

    name = "jxl"
    lo, hi = 0.1, 25.0
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


AVIF_SPEED = 6  # libavif's default speed (0 slowest / best .. 10 fastest)


def pillow_has_avif() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def pillow_avif() -> PillowCodec:
    """AVIF through Pillow's plugin (libavif): integer quality 0-100, 4:2:0, one thread."""
    from PIL import features

    return PillowCodec(
        "avif", "AVIF", 0, 100, True,
        lambda q: {"quality": int(q), "speed": AVIF_SPEED, "subsampling": "4:2:0", "max_threads": 1},
        f"AVIF (libavif {features.version('avif')} via Pillow, 4:2:0, speed {AVIF_SPEED}, quality search)")


class ImagecodecsAvif(Codec):
    """AVIF through imagecodecs (when Pillow has no AVIF plugin): integer level 0-100, 4:2:0."""

    name = "avif"
    lo, hi = 0, 100
    integer = True

    def encode(self, img, q):
        import imagecodecs

        return imagecodecs.avif_encode(img, level=int(q), speed=AVIF_SPEED, numthreads=1,
                                       pixelformat=imagecodecs.AVIF.PIXEL_FORMAT.YUV420)

    def decode(self, data, shape):
        import imagecodecs

        return np.asarray(imagecodecs.avif_decode(data))[..., :3]

    def describe(self):
        import imagecodecs

        return (f"AVIF (libavif via imagecodecs {imagecodecs.__version__}, 4:2:0, speed {AVIF_SPEED}, "
                f"quality search)")


class OurCodec(Codec):
    """ELIC tiles via ``core.codec.tile_coder``: the image is cut into a grid of tiles of at
    most ``tile`` pixels a side, each padded (edge) to a multiple of 64 and coded whole.

    Stream: f32 rate level, then per tile u32 length + ``encode_tile`` bytes. Every byte
    is counted in the bitrate (the .crsic container's header and index are not).
    """

    name = "ours"
    integer = False

    def __init__(self, opts: EvalOptions):
        from ..codec.tile_coder import get_coder

        self.coder = get_coder(opts.model, opts.device)
        spec = self.coder.model.spec
        self.lo, self.hi = MIN_QUALITY, float(spec.levels)
        self.tile = max(64, opts.tile - opts.tile % 64)
        self.model_desc = f"{spec.name} (weights sha256 {self.coder.model.sha256[:12]})"

    def _grid(self, h, w):
        ny, nx = math.ceil(h / self.tile), math.ceil(w / self.tile)
        ys = np.linspace(0, h, ny + 1).round().astype(int)
        xs = np.linspace(0, w, nx + 1).round().astype(int)
        return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(ny) for j in range(nx)]

    def encode(self, img, q):
        from ..format.tiling import padded

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
    from ..enhance import enhance_array

    return Postprocessed(OurCodec(opts), enhance_array, "ours+enhance", "Code-RSIC enhancer")


register("jpeg")(lambda opts: PillowCodec(
    "jpeg", "JPEG", 1, 100, True, lambda q: {"quality": int(q), "optimize": True},
    "JPEG (libjpeg via Pillow, 4:2:0, optimised Huffman)"))
register("webp")(lambda opts: PillowCodec(
    "webp", "WEBP", 0.0, 100.0, False, lambda q: {"quality": float(q), "method": 4},
    "WebP (libwebp via Pillow, method 4)"))
register("jp2")(lambda opts: Jpeg2000())
register("avif")(lambda opts: pillow_avif() if pillow_has_avif() else ImagecodecsAvif())
register("jxl")(lambda opts: JpegXL())
