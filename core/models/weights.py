"""Weights files: one save, resolve, check and load path for the codec and the enhancer.

A weights file is safetensors. Its metadata says how to rebuild the network: the
``ModelSpec`` of an ELIC model (``crsic_model_spec``) or the ``EnhancerConfig`` of an
enhancer (``crsic_enhancer_config``). A registry name resolves to the shipped file in
``core/weights`` and that file must have the registry's sha256; any other path is taken
as it is. Loaded models are kept per process (``get_model``). Enhancer files are read
without torch (``files.LoadedEnhancer``), their torch network built on first use
(``torch_state.enhancer_network``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..options import DEFAULT_MODEL
from .elic import VariableRateElic, build_model
from .files import ENHANCER_INFO, ENHANCER_META, INT8_IR_KEYS, MODEL_META, file_sha256, model_info
from .hpin import Enhancer
from .registry import ModelSpec
from .torch_state import load_state


# ---------------------------------------------------------------- files

def _write(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> str:
    """Write safetensors atomically (readable by all); returns the file's sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return file_sha256(path)


# ---------------------------------------------------------------- ELIC

def save_weights(model: torch.nn.Module, spec: ModelSpec, path: str | Path, fp16: bool = True) -> str:
    """Save an ELIC model (after ``update()``); returns the file's sha256.

    Float tensors of the transforms go to fp16; entropy-coder tables stay exact.
    """
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        exact = "gaussian_conditional" in key or "entropy_bottleneck" in key
        if fp16 and tensor.is_floating_point() and not exact:
            tensor = tensor.half()
        state[key] = tensor
    d = asdict(spec)
    for k in ("weights_file", "sha256", "extra"):
        d.pop(k)
    if tuple(d["context"]) == ModelSpec.context:  # ELIC's own widths: files stay as before
        d.pop("context")
    return _write(state, path, {MODEL_META: json.dumps(d)})


@dataclass
class LoadedModel:
    net: VariableRateElic
    spec: ModelSpec
    sha256: str
    device: torch.device


def load_model(model: str = DEFAULT_MODEL, device: str = "cpu") -> LoadedModel:
    """Load weights (registry name or file) ready for ``compress``/``decompress``."""
    info = model_info(model)
    net = load_state(build_model(info.spec), info.path, f"model {info.spec.name}", device)
    return LoadedModel(net=net, spec=info.spec, sha256=info.sha256, device=torch.device(device))


# ---------------------------------------------------------------- enhancer

def save_enhancer(net: Enhancer, path: str | Path, extra: dict | None = None,
                  int8_ir: tuple[bytes, bytes] | None = None) -> str:
    """fp16 safetensors with the config in the metadata (and ``int8_ir``: the xml and bin bytes
    of its int8 OpenVINO IR); returns the sha256."""
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in net.state_dict().items()}
    if int8_ir is not None:
        state.update({k: torch.frombuffer(bytearray(b), dtype=torch.uint8) for k, b in zip(INT8_IR_KEYS, int8_ir)})
    meta = {ENHANCER_META: json.dumps(net.cfg.to_dict())}
    if extra:
        meta[ENHANCER_INFO] = json.dumps(extra)
    return _write(state, path, meta)


# ---------------------------------------------------------------- per-process cache

_LOADED: dict[tuple[str, str, str], object] = {}


def get_model(model: str = DEFAULT_MODEL, device: str = "cpu") -> LoadedModel:
    """The process-wide loaded ELIC ``model`` (loaded on first use)."""
    key = ("model", str(model), str(device))
    if key not in _LOADED:
        _LOADED[key] = load_model(model, device)
    return _LOADED[key]
