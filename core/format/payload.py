"""One tile's payload in a container, and the float tile the codec sees.

Payload = u32 mask length + zlib(packbits(invalid)) (or nothing when every pixel is
valid) + the tile coder's stream. The codec sees (bands, H, W) float32 in [0, 1],
padded (edge) to a multiple of ``PAD_MULTIPLE``, invalid pixels filled with the mean.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import CorruptContainer
from .normalization import BandRange
from .tiling import padded


def pack_payload(invalid: np.ndarray | None, stream: bytes) -> bytes:
    mask = b"" if invalid is None or not invalid.any() else zlib.compress(np.packbits(invalid).tobytes(), 9)
    return struct.pack("<I", len(mask)) + mask + stream


def split_payload(data: bytes) -> tuple[int, bytes]:
    """-> (bytes of the compressed mask, the tile coder's stream), without inflating the mask."""
    if len(data) < 4:
        raise CorruptContainer("tile payload is truncated")
    (n,) = struct.unpack_from("<I", data, 0)
    if 4 + n > len(data):
        raise CorruptContainer("tile payload is truncated")
    return n, data[4 + n :]


def unpack_payload(data: bytes, height: int, width: int) -> tuple[np.ndarray | None, bytes]:
    """-> (invalid mask (height, width) or None, the tile coder's stream).

    The mask must inflate to exactly the tile's bits: a damaged (or crafted) mask is a
    ``CorruptContainer``, and never inflates beyond that size (no zlib bomb)."""
    if len(data) < 4:
        raise CorruptContainer("tile payload is truncated")
    (n,) = struct.unpack_from("<I", data, 0)
    if 4 + n > len(data):
        raise CorruptContainer("tile payload is truncated")
    invalid = None
    if n:
        expected = (height * width + 7) // 8
        inflate = zlib.decompressobj()
        try:
            bits = inflate.decompress(data[4 : 4 + n], expected + 1)
        except zlib.error as exc:
            raise CorruptContainer(f"tile mask is corrupt ({exc})") from None
        if len(bits) != expected or not inflate.eof or inflate.unused_data:
            raise CorruptContainer(f"tile mask is corrupt (not the {height} x {width} pixels of its tile)")
        invalid = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=height * width)
        invalid = invalid.astype(bool).reshape(height, width)
    return invalid, data[4 + n :]


def fill_invalid(unit: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Invalid pixels of a (bands, h, w) unit tile set to the valid pixels' mean (0.5 if none)."""
    if valid is not None and not valid.all():
        fill = unit[:, valid].mean(axis=1) if valid.any() else np.full(unit.shape[0], 0.5, np.float32)
        unit[:, ~valid] = fill[:, None].astype(np.float32)
    return unit


def prepare_tile(data: np.ndarray, valid: np.ndarray | None, ranges,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Raster values -> float tile in [0, 1] padded (edge) to ``size`` (height, width; default
    the next multiples of ``PAD_MULTIPLE``); invalid pixels filled with the mean."""
    unit = fill_invalid(np.stack([BandRange(*r).to_unit(b) for r, b in zip(ranges, data)]), valid)
    h, w = unit.shape[1:]
    ph, pw = size or (padded(h), padded(w))
    return np.pad(unit, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
