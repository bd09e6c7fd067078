"""Tensors of a weights file into a torch network: the one loading step of codec and enhancer.

Kept apart from ``weights`` (saving, the codec's loaders) and ``files`` (no torch), so that
``files.LoadedEnhancer`` can build its network on first use without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import ModelMismatch


def load_state(net: torch.nn.Module, path: Path, what: str, device: str, aside: tuple[str, ...] = ()) -> torch.nn.Module:
    """Load a file's tensors (fp16 widened to fp32), but those named in ``aside``, into ``net``,
    frozen, on ``device``."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items() if k not in aside}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelMismatch(f"{path}: weights do not fit {what}: {exc}") from None
    net = net.to(torch.device(device)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def enhancer_network(path: Path, cfg, device: str = "cpu", aside: tuple[str, ...] = ()):
    """The torch network of an enhancer file of architecture ``cfg`` (an ``EnhancerConfig``;
    ``files.LoadedEnhancer.net``), frozen, on ``device``; ``aside``: the file's non-network tensors."""
    from .hpin import Enhancer

    net = load_state(Enhancer(cfg), path, "the enhancer", device, aside)
    # channels-last convolutions: the same results (to float rounding), 3-13 % faster on a 2-core CPU
    return net.to(memory_format=torch.channels_last)
