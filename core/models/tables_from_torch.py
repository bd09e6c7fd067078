"""A loaded torch ``VariableRateElic`` -> its ``IntegerTables`` (the integer path's one use of torch).

Run once per weights; ``core.models.runtime.cached_tables`` keeps the result.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from .compressai_backend import bottleneck_medians, cdf_tables, elic_entropy_parts
from .elic import MIN_LEVEL
from .exact_entropy import SCHEME, TABLES_VERSION, IntegerTables
from .int_layers import ExactnessError, FloatConv, IntConv, Sequence, _relu


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _layers(module: nn.Module) -> list[nn.Module]:
    return list(module) if isinstance(module, nn.Sequential) else [module]


def integer_sequence(module: nn.Module) -> Sequence:
    """``nn.Sequential`` of convolutions and ReLUs (or one convolution) as integer layers."""
    layers = []
    for layer in _layers(module):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = _numpy(layer.weight)
            if hasattr(layer, "mask"):  # MaskedConv2d multiplies its weight by the mask
                weight = weight * _numpy(layer.mask)
            layers.append(IntConv.quantise(weight, None if layer.bias is None else _numpy(layer.bias), layer.stride,
                                           layer.padding, getattr(layer, "output_padding", (0, 0)),
                                           isinstance(layer, nn.ConvTranspose2d), name=f"layer {layer}"))
        elif isinstance(layer, nn.ReLU):
            layers.append(_relu)
        else:
            raise ExactnessError(f"no integer version of {type(layer).__name__}")
    return Sequence(layers)


def float_sequence(module: nn.Module) -> Sequence:
    """The float hyper-analysis: Conv2d and ReLU layers, float32."""
    layers = []
    for layer in _layers(module):
        if isinstance(layer, nn.Conv2d) and not hasattr(layer, "mask"):
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
            layers.append(FloatConv(_numpy(layer.weight), _numpy(bias), layer.stride, layer.padding))
        elif isinstance(layer, nn.ReLU):
            layers.append(_relu)
        else:
            raise TypeError(f"hyper-analysis layer {type(layer).__name__} is not supported")
    return Sequence(layers)


def integer_tables(net) -> IntegerTables:
    """Convert a loaded ``VariableRateElic`` (torch) into its tables."""
    parts = elic_entropy_parts(net)
    arrays: dict[str, np.ndarray] = {}
    float_sequence(parts.h_a).to_arrays("h_a", arrays)
    integer_sequence(parts.h_s).to_arrays("h_s", arrays)
    for k, module in enumerate(parts.channel_context, start=1):
        integer_sequence(module).to_arrays(f"channel_context.{k}", arrays)
    for k, g in enumerate(parts.group_parts):
        integer_sequence(g.context_prediction).to_arrays(f"spatial.{k}", arrays)
        integer_sequence(g.entropy_parameters).to_arrays(f"aggregation.{k}", arrays)
        arrays[f"scale_table.{k}"] = g.gaussian_conditional.scale_table.detach().cpu().numpy().astype(np.float32)
        arrays.update(cdf_tables(g.gaussian_conditional).to_arrays(f"conditional.{k}"))
    arrays.update(cdf_tables(parts.bottleneck).to_arrays("bottleneck"))
    arrays["z_medians"] = bottleneck_medians(parts.bottleneck).cpu().numpy().astype(np.float32)
    arrays["log_gain"] = net.log_gain.detach().cpu().float().numpy()
    arrays["log_inv_gain"] = net.log_inv_gain.detach().cpu().float().numpy()
    meta = {"groups": [int(g) for g in parts.groups], "parity": [g.anchor_parity for g in parts.group_parts],
            "scale_bounds": [float(g.gaussian_conditional.lower_bound_scale.bound) for g in parts.group_parts],
            "min_level": MIN_LEVEL}
    arrays["meta"] = np.asarray(json.dumps(meta))
    arrays["scheme"] = np.asarray(SCHEME)
    arrays["tables_version"] = np.asarray(TABLES_VERSION)
    return IntegerTables(arrays)
