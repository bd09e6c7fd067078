"""Integer networks in NumPy: the layers of the bit-exact entropy path (``exact_entropy``).

After Balle et al. 2019, "Integer networks for data compression with latent-variable models":

- activations are integers ``a`` standing for ``a * 2**-FRAC_BITS``, clipped to
  ``+-2**ACT_BITS``;
- each output channel's weights are integers of at most ``WEIGHT_BITS`` bits with a
  power-of-two scale, the bias an integer at the accumulator's scale;
- convolutions accumulate integer products in float64: every partial sum is an integer
  below ``2**53`` (checked per layer when the weights are converted), so the result is
  exact and does not depend on the order of summation (which is what lets a layer skip
  products it knows are zero: ``IntConv.at_non_anchors``);
- the rescale to the activation scale is a division by a power of two and a rounding
  (exact), ReLU a comparison.

Also here: the checkerboard layout the context models read (``split_checkerboard``).
"""

from __future__ import annotations

import numpy as np

FRAC_BITS = 8  # activations and outputs are multiples of 2**-FRAC_BITS
ACT_BITS = 24  # |activation integer| <= 2**ACT_BITS
WEIGHT_BITS = 16  # |weight integer| <= 2**(WEIGHT_BITS - 1)
EXACT_LIMIT = 2.0**53  # float64 represents every integer below this exactly

_ONE = float(2**FRAC_BITS)
_ACT_MAX = float(2**ACT_BITS)
_BAND_BYTES = 32 << 20  # bound on the stacked input of one GEMM band


class ExactnessError(ValueError):
    """A layer's integer accumulator could exceed 2**53 (the weights cannot be run exactly)."""


# ---------------------------------------------------------------- convolutions in NumPy

def _conv_columns(a: np.ndarray, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int]):
    """im2col of one image (c, h, w) -> ((c * kh * kw, oh * ow), oh, ow), weight order."""
    (sh, sw), (ph, pw) = stride, padding
    c, h, w = a.shape
    padded = np.pad(a, ((0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((c, kh, kw, oh, ow), a.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = padded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
    return cols.reshape(c * kh * kw, oh * ow), oh, ow


def conv2d(a: np.ndarray, weight: np.ndarray, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    """``F.conv2d`` without bias: (n, c, h, w) x (out, c, kh, kw) -> (n, out, oh, ow)."""
    out_ch, _, kh, kw = weight.shape
    flat = weight.reshape(out_ch, -1)
    outs = []
    for image in a:
        cols, oh, ow = _conv_columns(image, kh, kw, tuple(stride), tuple(padding))
        outs.append((flat @ cols).reshape(out_ch, oh, ow))
    return np.stack(outs)


def conv_transpose2d(a: np.ndarray, weight: np.ndarray, stride, padding, output_padding) -> np.ndarray:
    """``F.conv_transpose2d`` without bias: (n, c, h, w) x (c, out, kh, kw) -> (n, out, oh, ow):
    one GEMM for every tap, scattered onto the strided output grid."""
    n, c, h, w = a.shape
    _, out_ch, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    full_h, full_w = max((h - 1) * sh + kh, ph + oh), max((w - 1) * sw + kw, pw + ow)
    taps = weight.transpose(2, 3, 1, 0).reshape(kh * kw * out_ch, c)  # (tap, out) rows, c columns
    result = np.empty((n, out_ch, oh, ow), a.dtype)
    for b in range(n):
        contrib = (taps @ a[b].reshape(c, h * w)).reshape(kh, kw, out_ch, h, w)
        full = np.zeros((out_ch, full_h, full_w), a.dtype)
        for i in range(kh):
            for j in range(kw):
                full[:, i : i + sh * (h - 1) + 1 : sh, j : j + sw * (w - 1) + 1 : sw] += contrib[i, j]
        result[b] = full[:, ph : ph + oh, pw : pw + ow]
    return result


def _layer_arrays(prefix: str, arrays: dict, **values) -> None:
    for key, value in values.items():
        arrays[f"{prefix}.{key}"] = np.asarray(value)


class IntConv:
    """A Conv2d / ConvTranspose2d (masked convs included) as an integer layer."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, down: np.ndarray, stride, padding,
                 output_padding=(0, 0), transposed: bool = False):
        self.weight = np.ascontiguousarray(weight, np.float64)  # integers; torch's layout
        self.bias = np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
        self.down = np.asarray(down, np.float64).reshape(1, -1, 1, 1)
        self.stride, self.padding = tuple(int(s) for s in stride), tuple(int(p) for p in padding)
        self.output_padding, self.transposed = tuple(int(p) for p in output_padding), bool(transposed)
        # stride-1 convolutions run as one GEMM per kernel row: (out, kw*in) @ (kw*in, rows*W)
        kh = self.weight.shape[2]
        self.row_taps = [] if self.transposed else [
            (i, np.ascontiguousarray(self.weight[:, :, i, :].transpose(0, 2, 1).reshape(self.weight.shape[0], -1)))
            for i in range(kh) if self.weight[:, :, i, :].any()]
        self._taps: dict[str, list] = {}  # at_non_anchors' taps per checkerboard parity

    @classmethod
    def quantise(cls, weight: np.ndarray, bias: np.ndarray | None, stride, padding, output_padding=(0, 0),
                 transposed: bool = False, name: str = "layer") -> "IntConv":
        """Float weights (float64, torch's layout; a mask already applied) -> the integer layer."""
        w_out = weight.transpose(1, 0, 2, 3) if transposed else weight  # (out, in, kh, kw)
        # per output channel, peak < 2**e (frexp; 0 for an all-zero channel): scale so that
        # |w| * 2**shift <= 2**(WEIGHT_BITS - 1)
        e = np.frexp(np.abs(w_out).reshape(w_out.shape[0], -1).max(1))[1]
        shift = (WEIGHT_BITS - 1 - e).astype(np.float64)
        view = [1] * weight.ndim
        view[1 if transposed else 0] = -1
        wq = np.round(weight * np.power(2.0, shift).reshape(view))
        bias = np.zeros(len(shift)) if bias is None else bias
        bq = np.round(bias * np.power(2.0, shift + FRAC_BITS))
        wq_out = wq.transpose(1, 0, 2, 3) if transposed else wq
        bound = _ACT_MAX * np.abs(wq_out).reshape(wq_out.shape[0], -1).sum(1) + np.abs(bq)
        if float(bound.max()) >= EXACT_LIMIT:
            raise ExactnessError(f"{name} may accumulate beyond 2**53")
        return cls(wq, bq, np.power(2.0, -shift), stride, padding, output_padding, transposed)

    def _row_gemm(self, a: np.ndarray) -> np.ndarray:
        """Same result as ``conv2d`` (every partial sum is an exact integer, so the order of
        summation does not matter), faster: the kw column shifts of the input are stacked
        once, then each kernel row is one GEMM. Output rows go in bands so the stacked
        buffer stays under ``_BAND_BYTES``."""
        n, c, h, w = a.shape
        ph, pw = self.padding
        out_ch, _, kh, kw = self.weight.shape
        if kh == kw == 1 and ph == pw == 0:  # a 1 x 1 convolution is one GEMM on the input as it is
            tap = self.row_taps[0][1] if self.row_taps else np.zeros((out_ch, c))
            return np.stack([(tap @ image.reshape(c, -1)).reshape(out_ch, h, w) for image in a])
        padded = np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        out = np.empty((n, out_ch, oh, ow), a.dtype)  # every band of rows is written below
        band = max(1, _BAND_BYTES // (8 * kw * c * ow) - (kh - 1))
        for b in range(n):
            for r0 in range(0, oh, band):
                r1 = min(oh, r0 + band)
                rows = padded[b, :, r0 : r1 + kh - 1]
                shifted = np.concatenate([rows[:, :, j : j + ow] for j in range(kw)], 0)  # (kw*c, rows, ow)
                acc = np.zeros((out_ch, (r1 - r0) * ow), a.dtype)
                for i, tap in self.row_taps:
                    acc += tap @ shifted[:, i : i + r1 - r0].reshape(kw * c, -1)
                out[b, :, r0:r1] = acc.reshape(out_ch, r1 - r0, ow)
        return out

    def __call__(self, a: np.ndarray) -> np.ndarray:
        if self.transposed:
            acc = conv_transpose2d(a, self.weight, self.stride, self.padding, self.output_padding)
        elif self.stride == (1, 1):
            acc = self._row_gemm(a)
        else:
            acc = conv2d(a, self.weight, self.stride, self.padding)
        return self._finish(acc)

    def at_non_anchors(self, anchors: np.ndarray, parity: str) -> np.ndarray:
        """This stride-1 convolution of a checkerboard whose non-anchors are still zero, at the
        non-anchor positions only: ``split(self(join([anchors, 0])))[1]`` (see
        ``split_checkerboard``), the same integers. Only the taps that land on anchors are
        summed (a masked 5 x 5 context: 12 of 25, over half the positions: about a quarter of
        the full convolution's work). ``anchors``: (n, c, h, w // 2) -> (n, out, h, w // 2)."""
        n, c, h, w2 = anchors.shape
        out_ch = self.weight.shape[0]
        ph, pw = self.padding
        padded = np.pad(anchors, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        acc = np.empty((n, out_ch, h, w2), anchors.dtype)
        for rho, (taps, flat) in enumerate(self._anchor_taps(parity)):  # output rows of parity rho
            rows = len(range(rho, h, 2))
            if not rows or not taps:
                acc[:, :, rho::2] = 0.0
                continue
            band = max(1, _BAND_BYTES // (8 * len(taps) * c * w2))
            for b in range(n):
                for r0 in range(0, rows, band):
                    r1 = min(rows, r0 + band)
                    # output row rho + 2 r reads padded row rho + 2 r + i (kernel row i)
                    cols = np.concatenate([padded[b, :, rho + i + 2 * r0 : rho + i + 2 * r1 : 2, pw + s : pw + s + w2]
                                           for i, s in taps], axis=0)
                    acc[b, :, rho + 2 * r0 : rho + 2 * r1 : 2] = (flat @ cols.reshape(len(taps) * c, -1)).reshape(
                        out_ch, r1 - r0, w2)
        return self._finish(acc)

    def _anchor_taps(self, parity: str) -> list[tuple[list[tuple[int, int]], np.ndarray | None]]:
        """For output rows of each parity: the kernel taps that land on anchors, as (kernel row,
        packed column shift), and their weights side by side (out, taps * in); kept per parity."""
        cached = self._taps.get(parity)
        if cached is None:
            _, _, kh, kw = self.weight.shape
            ph, pw = self.padding
            first = {"even": (0, 1), "odd": (1, 0)}[parity]  # anchors' first full column in even / odd rows
            cached = []
            for rho in (0, 1):  # a non-anchor's full column in a row of parity rho: 2 j + 1 - first[rho]
                taps, weights = [], []
                for i in range(kh):
                    src = (rho + i - ph) % 2  # parity of the rows kernel row i reads
                    for j in range(kw):
                        shift2 = (1 - first[rho]) + (j - pw) - first[src]  # twice the packed column shift
                        if shift2 % 2 == 0 and self.weight[:, :, i, j].any():  # on an anchor, not all zero
                            taps.append((i, shift2 // 2))
                            weights.append(self.weight[:, :, i, j])
                cached.append((taps, np.concatenate(weights, axis=1) if weights else None))
            self._taps[parity] = cached
        return cached

    def without_inputs(self, count: int) -> "IntConv":
        """The same layer for an input whose first ``count`` channels would be zero: they are
        dropped (their products are exact zeros, so the sums do not change)."""
        return IntConv(self.weight[:, count:], self.bias.reshape(-1), self.down.reshape(-1), self.stride,
                       self.padding, self.output_padding, self.transposed)

    def _finish(self, acc: np.ndarray) -> np.ndarray:
        # in place, the same exact steps: integer + bias, times 2**-shift, rounded half up
        acc += self.bias
        acc *= self.down
        acc += 0.5
        np.floor(acc, out=acc)
        return np.clip(acc, -_ACT_MAX, _ACT_MAX, out=acc)

    def to_arrays(self, prefix: str, arrays: dict) -> None:
        _layer_arrays(prefix, arrays, weight=self.weight, bias=self.bias.reshape(-1), down=self.down.reshape(-1),
                      stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                      transposed=self.transposed)

    @classmethod
    def from_arrays(cls, prefix: str, arrays) -> "IntConv":
        return cls(*(arrays[f"{prefix}.{k}"] for k in ("weight", "bias", "down", "stride", "padding",
                                                        "output_padding")), bool(arrays[f"{prefix}.transposed"]))


class FloatConv:
    """A float32 Conv2d (the hyper-analysis: encoder side only, its output is rounded to
    symbols that are sent, so it need not be exact)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride, padding):
        self.weight = np.ascontiguousarray(weight, np.float32)
        self.bias = np.asarray(bias, np.float32).reshape(1, -1, 1, 1)
        self.stride, self.padding = tuple(int(s) for s in stride), tuple(int(p) for p in padding)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return conv2d(np.asarray(a, np.float32), self.weight, self.stride, self.padding) + self.bias

    def to_arrays(self, prefix: str, arrays: dict) -> None:
        _layer_arrays(prefix, arrays, weight=self.weight, bias=self.bias.reshape(-1), stride=self.stride,
                      padding=self.padding)

    @classmethod
    def from_arrays(cls, prefix: str, arrays) -> "FloatConv":
        return cls(*(arrays[f"{prefix}.{k}"] for k in ("weight", "bias", "stride", "padding")))


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0, out=a)


class Sequence:
    """Convolutions and ReLUs in a row (``nn.Sequential``), integer or float."""

    def __init__(self, layers: list):
        self.layers = layers

    def __call__(self, a: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            a = layer(a)
        return a

    def at_non_anchors(self, anchors: np.ndarray, parity: str) -> np.ndarray:
        """These layers on a checkerboard whose non-anchors are zero, at the non-anchors:
        ``split(self(join([anchors, 0])))[1]`` (``split_checkerboard``); one stride-1
        convolution (a spatial context) reads the anchors alone (``IntConv.at_non_anchors``)."""
        only = self.layers[0] if len(self.layers) == 1 else None
        if isinstance(only, IntConv) and not only.transposed and only.stride == (1, 1):
            return only.at_non_anchors(anchors, parity)
        return self.joined_at_non_anchors(anchors, parity)

    def joined_at_non_anchors(self, anchors: np.ndarray, parity: str) -> np.ndarray:
        """The same by the whole computation: join the checkerboard, run the layers, split."""
        joined = join_checkerboard([anchors, np.zeros_like(anchors)], parity)
        return split_checkerboard(self(joined), parity)[1]

    def to_arrays(self, prefix: str, arrays: dict) -> None:
        kinds = []
        for i, layer in enumerate(self.layers):
            if layer is _relu:
                kinds.append("relu")
            else:
                kinds.append(type(layer).__name__)
                layer.to_arrays(f"{prefix}.{i}", arrays)
        arrays[f"{prefix}.kinds"] = np.asarray(kinds)

    @classmethod
    def from_arrays(cls, prefix: str, arrays) -> "Sequence":
        layers = []
        for i, kind in enumerate(arrays[f"{prefix}.kinds"].tolist()):
            layers.append(_relu if kind == "relu" else _LAYERS[kind].from_arrays(f"{prefix}.{i}", arrays))
        return cls(layers)


_LAYERS = {"IntConv": IntConv, "FloatConv": FloatConv}


def to_fixed(x) -> np.ndarray:
    """Exact float (symbols, table medians) -> activation integers (float64)."""
    return np.clip(np.round(np.asarray(x, np.float64) * _ONE), -_ACT_MAX, _ACT_MAX)


def from_fixed(a: np.ndarray) -> np.ndarray:
    return (a * (1.0 / _ONE)).astype(np.float32)


# ---------------------------------------------------------------- the checkerboard

def split_checkerboard(t: np.ndarray, parity: str) -> list[np.ndarray]:
    """(n, c, h, w) -> [anchors, non-anchors], each (n, c, h, w // 2). With parity "even" the
    anchors are the positions whose row + column is even (each row packs its half of them)."""
    n, c, h, w = t.shape
    halves = np.zeros((2, n, c, h, w // 2), t.dtype)
    a, b = (0, 1) if parity == "even" else (1, 0)
    halves[0, ..., 0::2, :] = t[..., 0::2, a::2]
    halves[0, ..., 1::2, :] = t[..., 1::2, b::2]
    halves[1, ..., 0::2, :] = t[..., 0::2, b::2]
    halves[1, ..., 1::2, :] = t[..., 1::2, a::2]
    return [halves[0], halves[1]]


def join_checkerboard(halves: list[np.ndarray], parity: str) -> np.ndarray:
    """Inverse of ``split_checkerboard``."""
    n, c, h, w2 = halves[0].shape
    t = np.zeros((n, c, h, w2 * 2), halves[0].dtype)
    a, b = (0, 1) if parity == "even" else (1, 0)
    t[..., 0::2, a::2] = halves[0][..., 0::2, :]
    t[..., 1::2, b::2] = halves[0][..., 1::2, :]
    t[..., 0::2, b::2] = halves[1][..., 0::2, :]
    t[..., 1::2, a::2] = halves[1][..., 1::2, :]
    return t
