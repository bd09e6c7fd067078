"""Quantisation-aware training of ELIC's entropy path for the bit-exact integer coder.

``core.models.exact_entropy`` runs the hyper-synthesis, context models and parameter
aggregation as integer networks derived from the float weights. ``enable(net)`` makes
training see the same quantisation: each of those convolutions uses its weights rounded
to the integer grid (per output channel, power-of-two scale) and rounds its output to the
activation grid, with straight-through gradients. The state dict is unchanged, so
checkpoints stay compatible with and without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.int_layers import ACT_BITS, FRAC_BITS, WEIGHT_BITS

_ONE = float(2**FRAC_BITS)
_ACT_MAX = float(2**ACT_BITS) / _ONE


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def _fake_weight(weight: torch.Tensor, out_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights on the integer grid of ``IntConv``; returns (weight, per-channel shift)."""
    w = weight.transpose(0, 1) if out_dim == 1 else weight
    peaks = w.detach().abs().flatten(1).amax(1)
    # frexp's exponent, as IntConv.quantise (0 for an all-zero channel), in tensors so that
    # torch.compile traces the layer without leaving its graph
    shift = (WEIGHT_BITS - 1 - torch.frexp(peaks).exponent).to(weight.dtype)
    view = [1] * weight.dim()
    view[out_dim] = -1
    scale = torch.pow(2.0, shift).view(view)
    return _ste(weight, torch.round(weight * scale) / scale), shift


def _patch(module: nn.Module) -> None:
    transposed = isinstance(module, nn.ConvTranspose2d)

    def forward(x):
        weight = module.weight * module.mask if hasattr(module, "mask") else module.weight
        weight, shift = _fake_weight(weight, 1 if transposed else 0)
        bias = module.bias
        if bias is not None:
            bscale = torch.pow(2.0, shift + FRAC_BITS)
            bias = _ste(bias, torch.round(bias * bscale) / bscale)
        if transposed:
            out = F.conv_transpose2d(x, weight, bias, module.stride, module.padding, module.output_padding,
                                     module.groups, module.dilation)
        else:
            out = F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
        return _ste(out, torch.round(out * _ONE).clamp(-2**ACT_BITS, 2**ACT_BITS) / _ONE)

    module.forward = forward


def entropy_path_convs(net: nn.Module) -> list[nn.Module]:
    """The convolutions ``ExactElicEntropy`` runs in integers."""
    lc = net.latent_codec
    groups = lc.latent_codec["y"]
    roots = [lc.latent_codec["hyper"].h_s, *groups.channel_context.values()]
    for k in range(len(groups.groups)):
        cb = groups.latent_codec[f"y{k}"]
        roots += [cb.context_prediction, cb.entropy_parameters]
    return [m for r in roots for m in r.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def enable(net: nn.Module) -> int:
    """Fake-quantise the entropy path in place; returns the number of layers patched."""
    convs = entropy_path_convs(net)
    for m in convs:
        _patch(m)
    return len(convs)
