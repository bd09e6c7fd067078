"""The training rate of some channel groups on rounded latents instead of CompressAI's noisy proxy.

Used for a channel group that ``training/widen.py`` added (``train_elic --rounded-rate-groups``):
its latents start near zero, where the proxy holds them (see ``rounded_rate``).
"""

from __future__ import annotations

from torch import nn

from core.models.compressai_backend import GaussianConditional

_ROUNDED: dict[type, type] = {}


def _rounded_rate_class(cls: type) -> type:
    """``cls`` (a GaussianConditional) whose training-time rate is that of the rounded latents:
    the true rate, with no gradient to the latents (their rounding has none)."""
    if cls not in _ROUNDED:
        def forward(self, inputs, scales, means=None, training=None):
            return cls.forward(self, inputs, scales, means, training=False)

        _ROUNDED[cls] = type(f"RoundedRate{cls.__name__}", (cls,), {"forward": forward})
    return _ROUNDED[cls]


def rounded_rate(net: nn.Module, groups: list[int], on: bool) -> None:
    """Channel groups ``groups`` of ``net``'s latent: rate of the rounded latents (``on``) or
    CompressAI's noisy proxy (off). A group added by widening starts near zero, where the
    proxy's gradient pulls a latent back to its mean (uniform noise around a narrow density
    costs bits that the rounded zero does not), against the weak gradient of the distortion:
    with the rounded rate, only the distortion moves the new latents until they are used."""
    codecs = net.latent_codec.latent_codec["y"].latent_codec
    for k in groups:
        for module in codecs[f"y{k}"].modules():
            if not isinstance(module, GaussianConditional):
                continue
            rounded = type(module) in _ROUNDED.values()
            if on and not rounded:
                module.__class__ = _rounded_rate_class(type(module))
            elif not on and rounded:
                module.__class__ = type(module).__bases__[0]
