"""One tile in, bytes out, and back: ``TileCoder.encode_tile`` and ``TileCoder.decode_tile``.

A tile is a float32 array (bands, H, W) in [0, 1]. Bands are coded by ELIC in groups of
three (a last group of one or two bands repeats its last band). Each ELIC stream also
carries a CRC32 of its quantised latent symbols: the decoder recomputes it, so an
entropy-decoding desync between machines (CompressAI issue #279: tiny float
differences select another CDF) is detected instead of silently producing garbage.

Two entropy paths: format 2 (the default) computes every probability-table choice with
``ExactElicEntropy``'s integer networks, so a stream decodes identically on any machine,
thread count, device or torch version; format 1 (the float path of CompressAI) is kept to
read and write version-1 containers.

The model is loaded once per process (``get_coder``), so the tile jobs that call it can be sent
to a process pool or a Dask cluster as they are. Formats 2 and 3 run on NumPy (the integer
tables, cached per weights) and the transforms' runtime: torch is imported only when a
network must be built (the tables' first conversion, the torch runtime, format 1).
"""

from __future__ import annotations

import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import CorruptContainer, DesyncError, OutOfMemory
from ..format.tiling import PAD_MULTIPLE, padded
from ..models.exact_entropy import SCHEME, ExactElicEntropy, IntegerTables
from ..models.files import model_info
from ..models.runtime import cached_tables, load_transforms, requested_precision, requested_runtime
from ..models.runtime import set_threads  # noqa: F401 (for the front ends: the process's thread count)
from ..options import DEFAULT_MODEL, MAX_BANDS, MAX_TILE, MIN_TILE, TILE_MULTIPLE, band_groups


def _pack_strings(strings) -> bytes:
    parts = [struct.pack("<B", len(strings))]
    for lst in strings:
        (s,) = lst  # batch of one
        parts.append(struct.pack("<I", len(s)))
        parts.append(s)
    return b"".join(parts)


def _unpack_strings(buf: memoryview, pos: int):
    """One band group's streams (u8 count, then u32 length + bytes each) -> (streams, next pos)."""
    if pos >= len(buf):
        raise CorruptContainer("tile stream is truncated")
    n = buf[pos]
    pos += 1
    strings = []
    for _ in range(n):
        if pos + 4 > len(buf):
            raise CorruptContainer("tile stream is truncated")
        (length,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + length > len(buf):
            raise CorruptContainer("tile stream is truncated")
        strings.append([bytes(buf[pos : pos + length])])
        pos += length
    return strings, pos


def group_payload_bytes(data: bytes) -> list[int]:
    """Bytes of each band group's streams in one tile stream (read from its framing, no
    model needed); the 6-byte shape header is left out."""
    buf = memoryview(data)
    if len(buf) < 6:
        raise CorruptContainer("tile stream is truncated")
    bands = struct.unpack_from("<H", buf, 0)[0]
    pos, sizes = 6, []
    for _ in band_groups(bands):
        _, end = _unpack_strings(buf, pos)
        sizes.append(end - pos)
        pos = end
    return sizes


def _shape_problem(bands: int, h: int, w: int, expected: tuple[int, int, int] | None) -> str | None:
    if expected is not None and (bands, h, w) != tuple(expected):
        return f"a {bands}-band {w} x {h} tile where the container has {expected[0]}-band {expected[2]} x {expected[1]}"
    if not 1 <= bands <= MAX_BANDS:
        return f"{bands} bands"
    for side in (h, w):
        if not 0 < side <= padded(MAX_TILE) or side % PAD_MULTIPLE:
            return f"tile size {w} x {h}"
    return None


class LazyModel:
    """A model as coding sees it: its spec and sha256 at once (no torch), the torch network
    (``net``, ``loaded``) on first use only."""

    def __init__(self, name: str, device: str = "cpu"):
        info = model_info(name)  # resolves and checks the weights file
        self.name, self.device = str(name), str(device)
        self.path, self.spec, self.sha256 = info.path, info.spec, info.sha256

    @cached_property
    def loaded(self):
        from ..models.weights import get_model

        return get_model(self.name, self.device)

    @property
    def net(self):
        return self.loaded.net


@dataclass
class TileCoder:
    """A model and the per-tile encode/decode around it."""

    model: LazyModel

    @cached_property
    def tables(self) -> IntegerTables:
        """The integer tables (from the cache; converted from the network on first use)."""
        return cached_tables(self.model)

    @cached_property
    def exact(self) -> ExactElicEntropy:
        """The integer entropy path."""
        return ExactElicEntropy(self.tables)

    @cached_property
    def transforms(self):
        """The float transforms' runtime (``core.models.runtime``; ``.name`` says which)."""
        return load_transforms(self.model, self.model.device)

    def gain(self, level: float, inverse: bool = False) -> np.ndarray:
        """(1, M, 1, 1) gains of the latent at ``level``: the torch runtime takes torch's own
        (its exp may differ from NumPy's in the last bit, and torch is the reference)."""
        if self.transforms.name == "torch":
            import torch

            net = self.model.net
            table = net.log_inv_gain if inverse else net.log_gain
            with torch.inference_mode():
                return net._interp(table, torch.tensor([level], dtype=torch.float32)).cpu().numpy()
        return self.tables.gains(level, inverse)

    def analysis(self, x: np.ndarray, level: float) -> np.ndarray:
        """Image (1, 3, H, W) -> gain-scaled latent (float32), by the process's runtime."""
        return self.transforms.analysis(x) * self.gain(level)

    def synthesis(self, y_hat: np.ndarray, level: float) -> np.ndarray:
        """Latent (1, M, h, w) -> (3, 16 h, 16 w) float pixels in [0, 1], by the process's runtime."""
        x = self.transforms.synthesis(y_hat * self.gain(level, inverse=True))[0]
        return np.clip(x, 0, 1, out=x)

    @property
    def entropy_scheme(self) -> str:
        return SCHEME

    def _latent_shape(self, h: int, w: int) -> dict:
        groups = self.model.spec.groups
        return {"y": [(c, h // 16, w // 16) for c in groups], "hyper": (h // 64, w // 64)}

    def encode_tile(self, tile: np.ndarray, quality_level: float, exact: bool = True,
                    seed: int = 0, crop: tuple[int, int, int, int] | None = None) -> tuple[bytes, int]:
        """(bands, H, W) float in [0,1], H and W multiples of 64 -> (bytes, symbols CRC).

        ``exact``: integer entropy parameters (format 2); else the float path (format 1).
        ``crop`` (format 3): (top, left, height, width) in pixels of the tile within ``tile``,
        which then holds the tile and a margin of its neighbours for the analysis: only the
        tile's own latents are coded."""
        bands, h, w = tile.shape
        if (h % 16 or w % 16) if crop else (h % PAD_MULTIPLE or w % PAD_MULTIPLE):
            raise ValueError(f"tile shape {tile.shape} is not padded to {PAD_MULTIPLE}")
        top, left, ch, cw = crop or (0, 0, h, w)
        if (top % 16 or left % 16 or ch % PAD_MULTIPLE or cw % PAD_MULTIPLE
                or top + ch > h or left + cw > w):
            raise ValueError(f"crop {crop} of a {h} x {w} tile is not on the latent grid")
        if not exact:
            return self._encode_float(tile, quality_level)
        parts = [struct.pack("<HHH", bands, ch, cw)]
        crc = seed  # format 2 seeds the symbols CRC with the tile's index
        with _out_of_memory(h, w, self.model.device):
            for group in band_groups(bands):
                x = np.ascontiguousarray(tile[group], dtype=np.float32)[None]
                y = self.analysis(x, quality_level)[:, :, top // 16 : (top + ch) // 16, left // 16 : (left + cw) // 16]
                out = self.exact.compress(np.ascontiguousarray(y), crc)
                crc = out["crc"]
                parts.append(_pack_strings([[s] for s in out["strings"]]))
        return b"".join(parts), crc

    def _encode_float(self, tile: np.ndarray, quality_level: float) -> tuple[bytes, int]:
        """Format 1: CompressAI's float entropy path (torch)."""
        import torch

        from ..models.compressai_backend import record_symbols

        bands, h, w = tile.shape
        net, device = self.model.net, self.model.device
        level = torch.tensor([quality_level], dtype=torch.float32, device=device)
        parts = [struct.pack("<HHH", bands, h, w)]
        with torch.inference_mode(), record_symbols(net, "encode") as log, _out_of_memory(h, w, device):
            for group in band_groups(bands):
                x = torch.from_numpy(np.ascontiguousarray(tile[group], dtype=np.float32))[None].to(device)
                parts.append(_pack_strings(net.compress(x, level)["strings"]))
        return b"".join(parts), log.value

    def _framing(self, data: bytes, shape: tuple[int, int, int] | None):
        """Check a tile stream's framing before any decoding -> (bands, h, w, streams per band group)."""
        buf = memoryview(data)
        if len(buf) < 6:
            raise CorruptContainer("tile stream is truncated")
        bands, h, w = struct.unpack_from("<HHH", buf, 0)
        problem = _shape_problem(bands, h, w, shape)
        if problem:
            raise CorruptContainer(f"tile stream is corrupt ({problem})")
        expected = 2 * len(self.model.spec.groups) + 1  # per channel group two halves, then z
        pos, groups = 6, []
        for _ in band_groups(bands):
            strings, pos = _unpack_strings(buf, pos)
            if len(strings) != expected:
                raise CorruptContainer(f"tile stream is corrupt ({len(strings)} streams in a band group, "
                                       f"not {expected})")
            groups.append(strings)
        if pos != len(buf):
            raise CorruptContainer(f"tile stream is corrupt ({len(buf) - pos} bytes after its end)")
        return bands, h, w, groups

    def decode_latents(self, data: bytes, expected_crc: int | None = None,
                       shape: tuple[int, int, int] | None = None, seed: int = 0) -> tuple[int, list[np.ndarray]]:
        """Entropy-decode a format-2/3 stream -> (bands, the latent ``y_hat`` (M, H/16, W/16) of
        each band group). Raises DesyncError if the symbols CRC differs."""
        bands, h, w, groups = self._framing(data, shape)
        latent = self._latent_shape(h, w)
        crc, out = seed, []
        try:
            with _out_of_memory(h, w, self.model.device):
                for strings in groups:
                    dec = self.exact.decompress([s for (s,) in strings], latent["hyper"], crc)
                    crc = dec["crc"]
                    out.append(dec["y_hat"][0])
        except (struct.error, ValueError, IndexError, OverflowError) as exc:
            raise CorruptContainer(f"tile stream is corrupt ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
        if expected_crc is not None and crc != expected_crc:
            raise DesyncError("decoded latent symbols differ from the encoder's")
        return bands, out

    def synthesise(self, latents: list[np.ndarray], bands: int, quality_level: float) -> np.ndarray:
        """Latents (one (M, h, w) per band group) -> (bands, 16 h, 16 w) float pixels in [0, 1]."""
        h, w = 16 * latents[0].shape[1], 16 * latents[0].shape[2]
        with _out_of_memory(h, w, self.model.device):
            x_hats = [self.synthesis(np.asarray(y, np.float32)[None], quality_level) for y in latents]
        return _merge_groups(x_hats, bands)

    def decode_tile(self, data: bytes, quality_level: float, expected_crc: int | None = None,
                    exact: bool = True, shape: tuple[int, int, int] | None = None, seed: int = 0) -> np.ndarray:
        """Inverse of ``encode_tile``; raises DesyncError if the symbols CRC differs.

        ``shape``: the (bands, H, W) the stream must code (the container's tile, padded);
        any malformed stream is a ``CorruptContainer``, decoded to wrong symbols a ``DesyncError``."""
        if exact:
            bands, latents = self.decode_latents(data, expected_crc, shape, seed)
            return self.synthesise(latents, bands, quality_level)
        return self._decode_float(data, quality_level, expected_crc, shape)

    def _decode_float(self, data: bytes, quality_level: float, expected_crc: int | None,
                      shape: tuple[int, int, int] | None) -> np.ndarray:
        """Format 1: CompressAI's float entropy path (torch)."""
        import torch

        from ..models.compressai_backend import record_symbols

        bands, h, w, groups = self._framing(data, shape)
        level = torch.tensor([quality_level], dtype=torch.float32, device=self.model.device)
        latent = self._latent_shape(h, w)
        net = self.model.net
        try:
            with (torch.inference_mode(), record_symbols(net, "decode") as log,
                  _out_of_memory(h, w, self.model.device)):
                x_hats = [net.decompress(strings, latent, level)["x_hat"][0].cpu().numpy() for strings in groups]
        except (struct.error, ValueError, IndexError, OverflowError) as exc:
            raise CorruptContainer(f"tile stream is corrupt ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
        if expected_crc is not None and log.value != expected_crc:
            raise DesyncError("decoded latent symbols differ from the encoder's")
        return _merge_groups(x_hats, bands)


def _merge_groups(x_hats: list[np.ndarray], bands: int) -> np.ndarray:
    """Each band group's 3 synthesised bands -> (bands, H, W); a padded group repeats its last
    band: the copies are averaged."""
    out = np.empty((bands, *x_hats[0].shape[1:]), dtype=np.float32)
    for group, x_hat in zip(band_groups(bands), x_hats):
        for i, b in enumerate(sorted(set(group))):
            copies = [j for j, g in enumerate(group) if g == b]
            out[b] = x_hat[copies].mean(axis=0) if len(copies) > 1 else x_hat[i]
    return out


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


@contextmanager
def _out_of_memory(h: int, w: int, device):
    """An allocation that failed while coding an ``h`` x ``w`` tile -> ``OutOfMemory`` naming
    a tile size to try; any other error goes on as it is (a bug is not a corrupt stream)."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not _is_out_of_memory(exc):
            raise
        raise OutOfMemory(out_of_memory_message(h, w, str(device))) from None


def out_of_memory_message(h: int, w: int, device: str) -> str:
    smaller = max(MIN_TILE, (max(h, w) // 2) // TILE_MULTIPLE * TILE_MULTIPLE)
    return (f"out of memory coding a {w} x {h} px tile on {device}: compress with a smaller tile, "
            f"e.g. --tile {smaller}, or run fewer tiles at once (fewer --workers, --threads)")


_CODERS: dict[tuple[str, str, str], TileCoder] = {}
_CODERS_LOCK = threading.Lock()  # job threads (``jobs.ThreadMapper``) share one coder


def get_coder(model: str = DEFAULT_MODEL, device: str = "cpu") -> TileCoder:
    """The process-wide coder for ``model`` (loaded on first use) on the runtime and precision
    requested now."""
    key = (str(model), str(device), requested_runtime(), requested_precision())
    with _CODERS_LOCK:
        if key not in _CODERS:
            _CODERS[key] = TileCoder(LazyModel(model, device))
        return _CODERS[key]
