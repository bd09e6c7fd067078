"""Bit-exact entropy parameters for ELIC: the same networks, in integer arithmetic.

Which probability table codes a latent symbol is decided by ELIC's hyper-synthesis,
its channel and spatial context models and its parameter aggregation. In float32 those
results differ in the last bits between machines, thread counts, BLAS / oneDNN builds,
devices and torch versions, and a different table desyncs the arithmetic decoder
(CompressAI issue #279). Here every one of those networks runs as an *integer network*
(Balle et al. 2019, "Integer networks for data compression with latent-variable
models"):

- activations are integers ``a`` standing for ``a * 2**-FRAC_BITS``, clipped to
  ``+-2**ACT_BITS``;
- each output channel's weights are integers of at most ``WEIGHT_BITS`` bits with a
  power-of-two scale, the bias an integer at the accumulator's scale;
- convolutions accumulate integer products in float64: every partial sum is an integer
  below ``2**53`` (checked per layer when the weights are loaded), so the result is
  exact and does not depend on the order of summation;
- the rescale to the activation scale is a division by a power of two and a rounding
  (exact), ReLU a comparison.

The results (means and scales) are exact binary fractions, so the symbols
``round(y - mean)``, the table index chosen by comparing the scale with the scale table,
and the decoded latents ``symbol + mean`` fed back into the context models are the same
on every IEEE-754 machine. Only the analysis / synthesis transforms stay float: pixels
may differ by rounding, symbols may not.

The integer weights are derived from the model's float weights when it is loaded, by a
deterministic rule (exact float64 scaling, ``frexp`` for the exponent), so a
weights file serves both the float (format 1) and the exact (format 2) path.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .compressai_backend import SymbolCRC, bottleneck_medians, elic_entropy_parts, rans_decode, rans_encode

FRAC_BITS = 8  # activations and outputs are multiples of 2**-FRAC_BITS
ACT_BITS = 24  # |activation integer| <= 2**ACT_BITS
WEIGHT_BITS = 16  # |weight integer| <= 2**(WEIGHT_BITS - 1)
EXACT_LIMIT = 2.0**53  # float64 represents every integer below this exactly
SCHEME = f"int-f{FRAC_BITS}-a{ACT_BITS}-w{WEIGHT_BITS}"  # recorded in format-2 containers

_ONE = float(2**FRAC_BITS)
_ACT_MAX = float(2**ACT_BITS)
_BAND_BYTES = 32 << 20  # bound on the stacked input of one GEMM band


class ExactnessError(ValueError):
    """A layer's integer accumulator could exceed 2**53 (the weights cannot be run exactly)."""


@contextmanager
def _plain_kernels():
    """Integer-valued float64 convolutions through im2col + GEMM only (no Winograd/FFT)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's note on TF32, irrelevant to float64
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield


class IntConv:
    """A Conv2d / ConvTranspose2d (masked convs included) as an integer layer."""

    def __init__(self, module: nn.Module, device: torch.device):
        weight = module.weight.detach().to("cpu", torch.float64)
        if hasattr(module, "mask"):  # MaskedConv2d multiplies its weight by the mask
            weight = weight * module.mask.detach().to("cpu", torch.float64)
        self.transposed = isinstance(module, nn.ConvTranspose2d)
        out_dim = 1 if self.transposed else 0
        w_out = weight.transpose(0, 1) if self.transposed else weight  # (out, in, kh, kw)
        # per output channel, peak < 2**e (frexp; 0 for an all-zero channel): scale so that
        # |w| * 2**shift <= 2**(WEIGHT_BITS - 1)
        e = torch.frexp(w_out.abs().flatten(1).amax(1)).exponent
        shift = (WEIGHT_BITS - 1 - e).to(torch.float64)
        view = [1] * weight.dim()
        view[out_dim] = -1
        scale = torch.pow(2.0, shift).view(view)
        wq = torch.round(weight * scale)
        bias = module.bias.detach().to("cpu", torch.float64) if module.bias is not None else torch.zeros(len(shift), dtype=torch.float64)
        bq = torch.round(bias * torch.pow(2.0, shift + FRAC_BITS))
        wq_out = wq.transpose(0, 1) if self.transposed else wq
        bound = _ACT_MAX * wq_out.abs().flatten(1).sum(1) + bq.abs()
        if float(bound.max()) >= EXACT_LIMIT:
            raise ExactnessError(f"layer {module} may accumulate beyond 2**53")
        self.weight = wq.to(device)
        self.bias = bq.to(device).view(1, -1, 1, 1)
        self.down = torch.pow(2.0, -shift).to(device).view(1, -1, 1, 1)
        self.stride, self.padding = module.stride, module.padding
        self.output_padding = getattr(module, "output_padding", (0, 0))
        # stride-1 convolutions run as one GEMM per kernel row: (out, kw*in) @ (kw*in, rows*W)
        kh, kw = self.weight.shape[2:]
        self.row_taps = [(i, self.weight[:, :, i, :].permute(0, 2, 1).reshape(self.weight.shape[0], -1).contiguous())
                         for i in range(kh) if not self.transposed and bool(self.weight[:, :, i, :].any())]

    def _row_gemm(self, a: torch.Tensor) -> torch.Tensor:
        """Same result as ``F.conv2d`` (every partial sum is an exact integer, so the order of
        summation does not matter), about 1.6x faster than its float64 im2col path: the kw
        column shifts of the input are stacked once, then each kernel row is one GEMM.
        Output rows go in bands so the stacked buffer stays under ``_BAND_BYTES``."""
        n, c, h, w = a.shape
        ph, pw = self.padding
        padded = F.pad(a, (pw, pw, ph, ph))
        kh, kw = self.weight.shape[2:]
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        out = a.new_empty((n, self.weight.shape[0], oh, ow))  # every band of rows is written below
        band = max(1, _BAND_BYTES // (8 * kw * c * ow) - (kh - 1))
        for b in range(n):
            for r0 in range(0, oh, band):
                r1 = min(oh, r0 + band)
                rows = padded[b, :, r0 : r1 + kh - 1]
                shifted = torch.cat([rows[:, :, j : j + ow] for j in range(kw)], 0)  # (kw*c, rows, ow)
                acc = torch.zeros((self.weight.shape[0], (r1 - r0) * ow), dtype=a.dtype, device=a.device)
                for i, tap in self.row_taps:
                    acc.addmm_(tap, shifted[:, i : i + r1 - r0].reshape(kw * c, -1))
                out[b, :, r0:r1] = acc.view(-1, r1 - r0, ow)
        return out

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            acc = F.conv_transpose2d(a, self.weight, None, self.stride, self.padding, self.output_padding)
        elif self.stride == (1, 1):
            acc = self._row_gemm(a)
        else:
            acc = F.conv2d(a, self.weight, None, self.stride, self.padding)
        # in place, the same exact steps: integer + bias, times 2**-shift, rounded half up
        return acc.add_(self.bias).mul_(self.down).add_(0.5).floor_().clamp_(-_ACT_MAX, _ACT_MAX)


class IntSequential:
    """``nn.Sequential`` of convolutions and ReLUs as integer layers."""

    def __init__(self, module: nn.Module, device: torch.device):
        layers = module if isinstance(module, nn.Sequential) else [module]
        self.layers = []
        for layer in layers:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                self.layers.append(IntConv(layer, device))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(torch.relu)
            else:
                raise ExactnessError(f"no integer version of {type(layer).__name__}")

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            a = layer(a)
        return a


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """Exact float (symbols, table medians) -> activation integers (float64)."""
    return torch.round(x.to(torch.float64) * _ONE).clamp_(-_ACT_MAX, _ACT_MAX)


def from_fixed(a: torch.Tensor) -> torch.Tensor:
    return (a * (1.0 / _ONE)).to(torch.float32)


class ExactElicEntropy:
    """ELIC's latent coding (hyperprior, channel groups, checkerboard) with integer parameters.

    ``compress(y)`` takes the (gain-scaled) analysis output and returns the streams, the
    decoded latent and the symbols CRC; ``decompress`` inverts it. Streams: for every
    channel group its anchor then non-anchor half, then the hyper-latent ``z``.
    """

    def __init__(self, net: nn.Module):
        device = next(net.parameters()).device
        self.device = device
        parts = elic_entropy_parts(net)
        self.h_a = parts.h_a
        self.bottleneck = parts.bottleneck
        self.h_s = IntSequential(parts.h_s, device)
        self.groups = list(parts.groups)
        self.channel_context = {k: IntSequential(parts.channel_context[k - 1], device)
                                for k in range(1, len(self.groups))}
        self.spatial = [IntSequential(g.context_prediction, device) for g in parts.group_parts]
        self.aggregation = [IntSequential(g.entropy_parameters, device) for g in parts.group_parts]
        self.conditionals = [g.gaussian_conditional for g in parts.group_parts]
        self.parity = [g.anchor_parity for g in parts.group_parts]
        medians = bottleneck_medians(self.bottleneck)
        self.z_medians = medians.to(torch.float32)
        self.z_medians_fixed = to_fixed(medians).to(device)
        # scale tables (float32 values, compared exactly in float64)
        self.scale_tables = [gc.scale_table.to(device, torch.float64) for gc in self.conditionals]
        self.scale_bounds = [float(gc.lower_bound_scale.bound) for gc in self.conditionals]

    # ------------------------------------------------------------ checkerboard helpers

    @staticmethod
    def _split(t: torch.Tensor, parity: str) -> list[torch.Tensor]:
        """(n, c, h, w) -> [anchors, non-anchors], each (n, c, h, w // 2)."""
        n, c, h, w = t.shape
        halves = t.new_zeros((2, n, c, h, w // 2))
        a, b = (0, 1) if parity == "even" else (1, 0)
        halves[0, ..., 0::2, :] = t[..., 0::2, a::2]
        halves[0, ..., 1::2, :] = t[..., 1::2, b::2]
        halves[1, ..., 0::2, :] = t[..., 0::2, b::2]
        halves[1, ..., 1::2, :] = t[..., 1::2, a::2]
        return [halves[0], halves[1]]

    @staticmethod
    def _join(halves: list[torch.Tensor], parity: str) -> torch.Tensor:
        n, c, h, w2 = halves[0].shape
        t = halves[0].new_zeros((n, c, h, w2 * 2))
        a, b = (0, 1) if parity == "even" else (1, 0)
        t[..., 0::2, a::2] = halves[0][..., 0::2, :]
        t[..., 1::2, b::2] = halves[0][..., 1::2, :]
        t[..., 0::2, b::2] = halves[1][..., 0::2, :]
        t[..., 1::2, a::2] = halves[1][..., 1::2, :]
        return t

    def _indexes(self, k: int, scales_fixed: torch.Tensor) -> torch.Tensor:
        """Scale table index, as GaussianConditional.build_indexes, on exact values."""
        scales = (scales_fixed * (1.0 / _ONE)).clamp_min(self.scale_bounds[k])
        table = self.scale_tables[k]
        return torch.searchsorted(table[:-1].contiguous(), scales.contiguous(), right=False).to(torch.int32)

    def _params(self, k: int, side_half: torch.Tensor, halves: list[torch.Tensor], half: int):
        """Integer (scales, means) of one checkerboard half of group ``k``, from its half of the
        side information and the group's decoded ``halves`` so far (the anchors for ``half`` 1)."""
        parity = self.parity[k]
        if half == 0:
            ctx = side_half.new_zeros((side_half.shape[0], 2 * self.groups[k], *side_half.shape[2:]))
        else:
            ctx = self._split(self.spatial[k](self._join(halves, parity)), parity)[1]
        params = self.aggregation[k](torch.cat([ctx, side_half], dim=1))
        return params.chunk(2, 1)

    def _side(self, k: int, hyper_params: torch.Tensor, y_hat: list[torch.Tensor]) -> torch.Tensor:
        if k == 0:
            return hyper_params
        return torch.cat([self.channel_context[k](torch.cat(y_hat[:k], dim=1)), hyper_params], dim=1)

    # ------------------------------------------------------------ coding

    def _code(self, y: torch.Tensor | None, z_symbols: torch.Tensor, strings, crc: SymbolCRC):
        """Shared encoder/decoder walk. With ``y`` it encodes into ``strings`` (a list to fill);
        without, it decodes from ``strings``. Returns the decoded latent (float32)."""
        n, _, hz, wz = z_symbols.shape
        z_fixed = z_symbols.to(torch.float64) * _ONE + self.z_medians_fixed
        hyper_params = self.h_s(z_fixed)
        h, w = hyper_params.shape[2:]
        y_split = None if y is None else torch.split(y.to(torch.float64), self.groups, dim=1)
        y_hat: list[torch.Tensor] = []
        cursor = 0
        for k, channels in enumerate(self.groups):
            parity = self.parity[k]
            side_halves = self._split(self._side(k, hyper_params, y_hat), parity)
            halves = [torch.zeros((n, channels, h, w // 2), dtype=torch.float64, device=self.device) for _ in range(2)]
            y_halves = None if y_split is None else self._split(y_split[k], parity)
            for half in range(2):
                scales, means = self._params(k, side_halves[half], halves, half)
                indexes = self._indexes(k, scales)
                gc = self.conditionals[k]
                if y_halves is not None:
                    symbols = torch.round(y_halves[half] - means * (1.0 / _ONE))
                    symbols = symbols.to(torch.int32)
                    strings.append(rans_encode(gc, symbols, indexes))
                else:
                    symbols = rans_decode(gc, strings[cursor], indexes)
                    cursor += 1
                crc.add(symbols)
                halves[half] = (symbols.to(torch.float64) * _ONE + means).clamp_(-_ACT_MAX, _ACT_MAX)
            y_hat.append(self._join(halves, parity))
        return from_fixed(torch.cat(y_hat, dim=1))

    @torch.inference_mode()
    def compress(self, y: torch.Tensor, crc_start: int = 0) -> dict:
        """Gain-scaled latent (1, M, H, W) -> {"strings", "y_hat", "crc"} (the CRC continues
        from ``crc_start``)."""
        with _plain_kernels():
            z = self.h_a(y)
            z_symbols = torch.round(z - self.z_medians.to(z.device)).to(torch.int32)
            crc = SymbolCRC(crc_start)
            crc.add(z_symbols)
            z_string = rans_encode(self.bottleneck, z_symbols, _channel_indexes(z_symbols))
            strings: list[bytes] = []
            y_hat = self._code(y, z_symbols, strings, crc)
        return {"strings": strings + [z_string], "y_hat": y_hat, "crc": crc.value}

    @torch.inference_mode()
    def decompress(self, strings: list[bytes], z_shape: tuple[int, int], crc_start: int = 0) -> dict:
        """Streams (as ``compress`` made them) -> {"y_hat", "crc"}."""
        expected = 2 * len(self.groups) + 1
        if len(strings) != expected:
            raise ValueError(f"expected {expected} streams, got {len(strings)}")
        with _plain_kernels():
            *y_strings, z_string = strings
            size = (1, self.z_medians.shape[1], *z_shape)
            z_symbols = rans_decode(self.bottleneck, z_string, _channel_indexes(torch.empty(size)))
            crc = SymbolCRC(crc_start)
            crc.add(z_symbols)
            y_hat = self._code(None, z_symbols.to(self.device), y_strings, crc)
        return {"y_hat": y_hat, "crc": crc.value}


def _channel_indexes(like: torch.Tensor) -> torch.Tensor:
    n, c, h, w = like.shape
    return torch.arange(c, dtype=torch.int32).view(1, c, 1, 1).expand(n, c, h, w)
