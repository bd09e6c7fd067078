"""Bit-exact entropy parameters for ELIC: the same networks, in integer arithmetic, in NumPy.

Which probability table codes a latent symbol is decided by ELIC's hyper-synthesis,
its channel and spatial context models and its parameter aggregation. In float32 those
results differ in the last bits between machines, thread counts, BLAS / oneDNN builds,
devices and library versions, and a different table desyncs the arithmetic decoder
(CompressAI issue #279). Here every one of those networks runs as an *integer network*
(``int_layers``: integer activations and weights, float64 accumulation of integers below
2**53, so the result is exact whatever the order of summation).

The results (means and scales) are exact binary fractions, so the symbols
``round(y - mean)``, the table index chosen by comparing the scale with the scale table,
and the decoded latents ``symbol + mean`` fed back into the context models are the same
on every IEEE-754 machine. Only the analysis / synthesis transforms stay float: pixels
may differ by rounding, symbols may not.

The integer weights are derived from the model's float weights by a deterministic rule
(exact float64 scaling, ``frexp`` for the exponent), so a weights file serves both the
float (format 1) and the exact (format 2/3) path. ``tables_from_torch.integer_tables``
converts a torch network once; the tables (integer layers, the hyper-analysis, CDF and scale
tables, the rate gains) are saved as one ``.npz`` per weights, and coding runs on NumPy
alone: decoding and encoding never need torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .int_layers import (_ACT_MAX, _ONE, ACT_BITS, FRAC_BITS, WEIGHT_BITS, Sequence, from_fixed, join_checkerboard,
                         split_checkerboard, to_fixed)
from .rans import BoundedRansCoder, CdfTables, SymbolCRC, rans_decode, rans_encode

SCHEME = f"int-f{FRAC_BITS}-a{ACT_BITS}-w{WEIGHT_BITS}"  # recorded in format-2 containers
TABLES_VERSION = 1  # the layout of the saved tables (a new layout is a new cache file)

# ---------------------------------------------------------------- the tables of one model

@dataclass
class IntegerTables:
    """Everything coding needs besides the float transforms, as NumPy arrays (one ``.npz``):
    the integer entropy networks, the float hyper-analysis, the CDF and scale tables, the
    hyper-latent medians and the per-level gains of the latent."""

    arrays: dict

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> "IntegerTables":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if int(arrays.get("tables_version", -1)) != TABLES_VERSION or str(arrays.get("scheme")) != SCHEME:
            raise ValueError(f"{path}: integer tables of another layout or scheme")
        return cls(arrays)

    @cached_property
    def meta(self) -> dict:
        return json.loads(str(self.arrays["meta"]))

    def gains(self, level: float, inverse: bool = False) -> np.ndarray:
        """(1, M, 1, 1) float32 gains of the latent at 0-based ``level`` (geometric
        interpolation between trained levels, as ``VariableRateElic``)."""
        table = self.arrays["log_inv_gain" if inverse else "log_gain"]
        levels = table.shape[0]
        level = np.float32(min(max(level, self.meta["min_level"]), levels - 1))
        if levels == 1:
            log_g = table[0]
        else:
            low = int(np.clip(np.floor(level), 0, levels - 2))
            t = np.float32(level - np.float32(low))
            log_g = table[low] * (np.float32(1) - t) + table[low + 1] * t
        return np.exp(log_g.astype(np.float32))[None, :, None, None]


class ExactElicEntropy:
    """ELIC's latent coding (hyperprior, channel groups, checkerboard) with integer parameters.

    ``compress(y)`` takes the (gain-scaled) analysis output and returns the streams, the
    decoded latent and the symbols CRC; ``decompress`` inverts it. Streams: for every
    channel group its anchor then non-anchor half, then the hyper-latent ``z``.
    """

    # the encoder's choice of symbol: nearest integer (what the synthesis was trained on;
    # a deadzone costs rate-distortion, benchmarks/latent_rounding.py)
    round_symbols = staticmethod(np.round)

    def __init__(self, tables: IntegerTables):
        a, meta = tables.arrays, tables.meta
        self.groups = list(meta["groups"])
        self.parity = list(meta["parity"])
        self.h_a = Sequence.from_arrays("h_a", a)
        self.h_s = Sequence.from_arrays("h_s", a)
        self.channel_context = {k: Sequence.from_arrays(f"channel_context.{k}", a) for k in range(1, len(self.groups))}
        self.spatial = [Sequence.from_arrays(f"spatial.{k}", a) for k in range(len(self.groups))]
        self.aggregation = [Sequence.from_arrays(f"aggregation.{k}", a) for k in range(len(self.groups))]
        # the anchors' parameters: their spatial context is zero, so its input channels are dropped
        self.anchor_aggregation = [Sequence([agg.layers[0].without_inputs(2 * g)] + agg.layers[1:])
                                   for agg, g in zip(self.aggregation, self.groups)]
        self.z_medians = a["z_medians"].astype(np.float32)  # (1, C, 1, 1)
        self.z_medians_fixed = to_fixed(self.z_medians)
        self.scale_tables = [a[f"scale_table.{k}"].astype(np.float64) for k in range(len(self.groups))]
        self.scale_bounds = list(meta["scale_bounds"])
        self.z_tables = CdfTables.from_arrays(a, "bottleneck")
        self.y_tables = [CdfTables.from_arrays(a, f"conditional.{k}") for k in range(len(self.groups))]
        self.coder = BoundedRansCoder()

    # ------------------------------------------------------------ checkerboard helpers

    _split = staticmethod(split_checkerboard)
    _join = staticmethod(join_checkerboard)

    def _indexes(self, k: int, scales_fixed: np.ndarray) -> np.ndarray:
        """Scale table index, as GaussianConditional.build_indexes, on exact values."""
        scales = np.maximum(scales_fixed * (1.0 / _ONE), self.scale_bounds[k])
        return np.searchsorted(self.scale_tables[k][:-1], scales, side="left").astype(np.int32)

    def _params(self, k: int, side_half: np.ndarray, halves: list[np.ndarray], half: int):
        """Integer (scales, means) of one checkerboard half of group ``k``, from its half of the
        side information and the group's decoded ``halves`` so far (the anchors for ``half`` 1)."""
        if half == 0:  # anchors: no spatial context yet
            params = self.anchor_aggregation[k](side_half)
        else:
            ctx = self.spatial[k].at_non_anchors(halves[0], self.parity[k])
            params = self.aggregation[k](np.concatenate([ctx, side_half], axis=1))
        return np.split(params, 2, axis=1)

    def _side(self, k: int, hyper_params: np.ndarray, y_hat: list[np.ndarray]) -> np.ndarray:
        if k == 0:
            return hyper_params
        return np.concatenate([self.channel_context[k](np.concatenate(y_hat[:k], axis=1)), hyper_params], axis=1)

    # ------------------------------------------------------------ coding

    def _code(self, y: np.ndarray | None, z_symbols: np.ndarray, strings, crc: SymbolCRC) -> np.ndarray:
        """Shared encoder/decoder walk. With ``y`` it encodes into ``strings`` (a list to fill);
        without, it decodes from ``strings``. Returns the decoded latent (float32)."""
        n = z_symbols.shape[0]
        z_fixed = z_symbols.astype(np.float64) * _ONE + self.z_medians_fixed
        hyper_params = self.h_s(z_fixed)
        h, w = hyper_params.shape[2:]
        bounds = np.cumsum(self.groups)[:-1]
        y_split = None if y is None else np.split(np.asarray(y, np.float64), bounds, axis=1)
        y_hat: list[np.ndarray] = []
        cursor = 0
        for k, channels in enumerate(self.groups):
            parity = self.parity[k]
            side_halves = self._split(self._side(k, hyper_params, y_hat), parity)
            halves = [np.zeros((n, channels, h, w // 2), np.float64) for _ in range(2)]
            y_halves = None if y_split is None else self._split(y_split[k], parity)
            for half in range(2):
                scales, means = self._params(k, side_halves[half], halves, half)
                indexes = self._indexes(k, scales)
                if y_halves is not None:
                    symbols = self.round_symbols(y_halves[half] - means * (1.0 / _ONE)).astype(np.int32)
                    strings.append(rans_encode(self.coder, self.y_tables[k], symbols, indexes))
                else:
                    symbols = rans_decode(self.coder, self.y_tables[k], strings[cursor], indexes)
                    cursor += 1
                crc.add(symbols)
                halves[half] = np.clip(symbols.astype(np.float64) * _ONE + means, -_ACT_MAX, _ACT_MAX)
            y_hat.append(self._join(halves, parity))
        return from_fixed(np.concatenate(y_hat, axis=1))

    def compress(self, y: np.ndarray, crc_start: int = 0) -> dict:
        """Gain-scaled latent (1, M, H, W) float32 -> {"strings", "y_hat", "crc"} (the CRC
        continues from ``crc_start``)."""
        y = np.asarray(y, np.float32)
        z = self.h_a(y)
        z_symbols = np.round(z - self.z_medians).astype(np.int32)
        crc = SymbolCRC(crc_start)
        crc.add(z_symbols)
        z_string = rans_encode(self.coder, self.z_tables, z_symbols, _channel_indexes(z_symbols.shape))
        strings: list[bytes] = []
        y_hat = self._code(y, z_symbols, strings, crc)
        return {"strings": strings + [z_string], "y_hat": y_hat, "crc": crc.value}

    def decompress(self, strings: list[bytes], z_shape: tuple[int, int], crc_start: int = 0) -> dict:
        """Streams (as ``compress`` made them) -> {"y_hat" (1, M, H, W) float32, "crc"}."""
        expected = 2 * len(self.groups) + 1
        if len(strings) != expected:
            raise ValueError(f"expected {expected} streams, got {len(strings)}")
        *y_strings, z_string = strings
        size = (1, self.z_medians.shape[1], *z_shape)
        z_symbols = rans_decode(self.coder, self.z_tables, z_string, _channel_indexes(size))
        crc = SymbolCRC(crc_start)
        crc.add(z_symbols)
        y_hat = self._code(None, z_symbols, y_strings, crc)
        return {"y_hat": y_hat, "crc": crc.value}


def _channel_indexes(shape) -> np.ndarray:
    n, c, h, w = shape
    return np.broadcast_to(np.arange(c, dtype=np.int32).reshape(1, c, 1, 1), (n, c, h, w))
