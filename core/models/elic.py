"""ELIC with one network for every rate: ``VariableRateElic`` and ``build_model``.

One trained network serves every rate: Cui et al. (CVPR 2021) gain units scale the
latent ``y`` channel-wise before quantisation (and back before synthesis). Rate level
``q`` is continuous: between two trained levels the gains are interpolated
geometrically, so any quality in ``[1, levels]`` is valid. Quality ``[0, 1)`` extrapolates
the gains up to one level below the lowest trained one (measured on val: smooth, about
0.6x the bits of quality 1 at quality 0; see core/weights/elic-lite.md).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .compressai_backend import Elic2022Official, use_bounded_entropy_models
from .registry import MIN_LEVEL, ModelSpec


class VariableRateElic(Elic2022Official):
    """``Elic2022Official`` with per-level channel gains on the latent (gain units)."""

    def __init__(self, N: int, M: int, groups, levels: int, init_lambdas=None, context=(224, 128)):
        super().__init__(N=N, M=M, groups=list(groups))
        if tuple(context) != (224, 128):  # compressai builds ELIC's own widths
            channel_context = self.latent_codec.latent_codec["y"].channel_context
            for k in range(1, len(self.groups)):
                channel_context[f"y{k}"] = channel_context_net(sum(self.groups[:k]), self.groups[k], context)
        use_bounded_entropy_models(self)  # rANS decoding bounded, symbols logged: see core.models.compressai_backend
        self.levels = levels
        if init_lambdas is None:
            init = torch.zeros(levels)
        else:  # quantiser step ~ 1/sqrt(lambda): start gains there
            lam = torch.tensor(init_lambdas, dtype=torch.float32)
            init = 0.5 * torch.log(lam / lam.max())
        self.log_gain = torch.nn.Parameter(init[:, None].repeat(1, M).clone())
        self.log_inv_gain = torch.nn.Parameter(-init[:, None].repeat(1, M).clone())

    def _interp(self, table: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Interpolate log-gains at fractional 0-based ``level`` (shape B) -> (B, M, 1, 1)."""
        level = level.to(table.device, table.dtype).clamp(MIN_LEVEL, self.levels - 1)
        if self.levels == 1:
            log_g = table[0].expand(level.shape[0], -1)
        else:
            low = level.floor().long().clamp(0, self.levels - 2)  # below 0: extrapolate from 0..1
            t = (level - low.to(level.dtype))[:, None]
            log_g = table[low] * (1 - t) + table[low + 1] * t
        return log_g.exp()[:, :, None, None]

    def forward(self, x, level, transform_dtype: torch.dtype | None = None):
        """Training / validation pass. ``transform_dtype`` (e.g. ``torch.bfloat16``): the
        analysis and synthesis transforms compute under autocast in that type (as OpenVINO
        runs them in bf16 on a CPU that has it); the entropy model always in float32."""
        with _autocast(x, transform_dtype):
            y = self.g_a(x)
        y = y.float() * self._interp(self.log_gain, level)
        y_out = self.latent_codec(y)
        with _autocast(x, transform_dtype):
            x_hat = self.g_s(y_out["y_hat"] * self._interp(self.log_inv_gain, level))
        return {"x_hat": x_hat.float(), "likelihoods": y_out["likelihoods"]}

    # Coding runs the analysis / synthesis transforms on channels-last tensors (oneDNN's
    # fast path on CPU: about 2x faster convolutions), but the entropy model always sees
    # contiguous tensors, so the probabilities the encoder and decoder compute, and thus
    # the bitstream, do not depend on this choice.

    def gain(self, level):
        """(B, M, 1, 1) per-channel gains of the latent at 0-based ``level`` (shape B)."""
        return self._interp(self.log_gain, level)

    def inverse_gain(self, level):
        return self._interp(self.log_inv_gain, level)

    def analysis(self, x, level):
        """Image -> gain-scaled latent ``y`` (contiguous), what the entropy coder codes."""
        y = self.g_a(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return y * self.gain(level)

    def synthesis(self, y_hat, level):
        """Decoded latent -> image in [0, 1]."""
        y_hat = (y_hat * self.inverse_gain(level)).contiguous(memory_format=torch.channels_last)
        return self.g_s(y_hat).contiguous().clamp_(0, 1)

    def compress(self, x, level):
        return self.latent_codec.compress(self.analysis(x, level))

    def decompress(self, strings, shape, level):
        y_hat = self.latent_codec.decompress(strings, shape)["y_hat"]
        return {"x_hat": self.synthesis(y_hat, level)}


def _autocast(x: torch.Tensor, dtype: torch.dtype | None):
    return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()


def channel_context_net(inputs: int, group: int, widths) -> torch.nn.Sequential:
    """ELIC's channel context g_ch for one group (three 5 x 5 convolutions) with ``widths``
    hidden channels: the previous groups' latents -> the group's means and scales."""
    c1, c2 = widths
    conv = lambda i, o: torch.nn.Conv2d(i, o, 5, padding=2)  # noqa: E731
    return torch.nn.Sequential(conv(inputs, c1), torch.nn.ReLU(inplace=True), conv(c1, c2),
                               torch.nn.ReLU(inplace=True), conv(c2, 2 * group))


def build_model(spec: ModelSpec) -> VariableRateElic:
    return VariableRateElic(spec.N, spec.M, spec.groups, spec.levels, spec.lambdas, spec.context)
