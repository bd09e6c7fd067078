"""Weights files without torch: resolve a name or path, read the stored architecture, hash.

Decoding and encoding read a model's identity here (``model_info``) and its tables from
the cache, so they load torch only when a network must be built (``core.models.weights``).
An enhancer is read here too (``LoadedEnhancer``): its int8 OpenVINO network, when the file
carries one, enhances without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from ..errors import BadInput, ModelMismatch, WeightsUnavailable
from ..options import DEFAULT_ENHANCER, UNREGISTERED_FIDELITY
from .enhancer_config import EnhancerConfig
from .registry import ENHANCERS, REGISTRY, WEIGHTS_DIR, EnhancerSpec, ModelSpec

MODEL_META = "crsic_model_spec"
ENHANCER_META = "crsic_enhancer_config"
ENHANCER_INFO = "crsic_enhancer_info"  # how the weights were made (training, int8 calibration)
# An enhancer file may also carry its network quantised to int8 for OpenVINO
# (``training.quantize_enhancer``), as the bytes of an OpenVINO IR: graph (.xml), weights (.bin).
INT8_IR_KEYS = ("openvino_int8.xml", "openvino_int8.bin")


def file_sha256(path: str | Path) -> str:
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """Hashed once per file version (resolving an enhancer and loading it both need it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not our weights"
        raise BadInput(f"{path}: not a safetensors weights file ({exc})") from None


def _check_registry_sha(path: Path, expected: str | None, subject: str) -> str:
    """The file's sha256; a registry file must have the registry's."""
    sha = file_sha256(path)
    if expected and expected != sha:
        raise ModelMismatch(f"{subject} not match the registry (sha256 {sha[:12]}, expected {expected[:12]}): "
                            "reinstall the package")
    return sha


def read_spec(path: str | Path) -> ModelSpec:
    """Architecture stored in a weights file's metadata."""
    meta = _metadata(Path(path))
    if MODEL_META not in meta:
        raise BadInput(f"{path}: weights file has no Code-RSIC model description")
    d = json.loads(meta[MODEL_META])
    d["groups"] = tuple(d["groups"])
    d["lambdas"] = tuple(d["lambdas"])
    if "context" in d:
        d["context"] = tuple(d["context"])
    return ModelSpec(**d)


def resolve_weights(model: str) -> Path:
    """A registry name or a path to a ``.safetensors`` file -> the weights path."""
    if model in REGISTRY:
        spec = REGISTRY[model]
        if spec.weights_file is None:
            raise WeightsUnavailable(f"model '{model}' has no shipped weights; pass a .safetensors file")
        path = WEIGHTS_DIR / spec.weights_file
        if not path.exists():
            raise WeightsUnavailable(f"weights for model '{model}' are missing: {path}")
        return path
    path = Path(model)
    if path.suffix == ".safetensors" or path.exists():
        if not path.exists():
            raise WeightsUnavailable(f"weights file not found: {path}")
        return path
    raise BadInput(f"unknown model '{model}' (known: {', '.join(REGISTRY)}) and no such file")


@dataclass(frozen=True)
class ModelInfo:
    """Which weights a model name or file stands for: its file, architecture and sha256."""

    path: Path
    spec: ModelSpec
    sha256: str


def model_info(model: str) -> ModelInfo:
    """Resolve and check ``model`` (a registry file must have the registry's sha256)."""
    path = resolve_weights(model)
    spec = read_spec(path)
    registered = REGISTRY.get(model)
    sha = _check_registry_sha(path, registered.sha256 if registered else None, f"weights file {path} does")
    return ModelInfo(path, spec, sha)


def resolve_enhancer(name: str | None = None) -> tuple[Path, EnhancerSpec | None]:
    name = name or DEFAULT_ENHANCER
    if name in ENHANCERS:
        spec = ENHANCERS[name]
        return WEIGHTS_DIR / spec.weights_file, spec
    path = Path(name)
    if not path.exists():
        raise WeightsUnavailable(f"enhancer weights not found: {name} (known: {', '.join(ENHANCERS)})")
    # a registered enhancer given by its path (the same bytes) is that enhancer
    sha = file_sha256(path)
    return path, next((spec for spec in ENHANCERS.values() if spec.sha256 == sha), None)


def enhancer_available(name: str | None = None) -> bool:
    try:
        path, _ = resolve_enhancer(name)
    except WeightsUnavailable:
        return False
    return path.exists()


def _int8_ir(path: Path) -> tuple[bytes, bytes] | None:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        if not set(INT8_IR_KEYS) <= set(f.keys()):
            return None
        return tuple(f.get_tensor(k).tobytes() for k in INT8_IR_KEYS)


class LoadedEnhancer:
    """An enhancer's weights file, resolved and checked: its sha256, architecture
    (``cfg``), default fidelity and int8 OpenVINO network (``int8_ir``: xml and bin bytes,
    or None) at once, without torch; the torch network (``net``) on first use."""

    def __init__(self, name: str | None = None, device: str = "cpu"):
        path, spec = resolve_enhancer(name)
        if not path.exists():
            raise WeightsUnavailable(f"enhancer weights '{path.name}' are not installed: enhancement is unavailable")
        self.path, self.device = path, str(device)
        self.sha256 = _check_registry_sha(path, spec.sha256 if spec else None, f"enhancer weights {path} do")
        meta = _metadata(path)
        try:
            self.cfg = EnhancerConfig.from_dict(json.loads(meta[ENHANCER_META]))
            self.info = json.loads(meta.get(ENHANCER_INFO, "{}"))
        except Exception as exc:  # noqa: BLE001
            raise BadInput(f"{path}: not an enhancer weights file ({exc})") from None
        self.int8_ir = _int8_ir(path)
        # the fidelity the int8 network was calibrated at; others run the float network
        self.int8_fidelity = float(self.info.get("int8", {}).get("fidelity", 1.0))
        # an unregistered file's default is the fidelity its int8 network serves
        self.default_fidelity = (spec.default_fidelity if spec else self.int8_fidelity if self.int8_ir
                                 else UNREGISTERED_FIDELITY)

    @cached_property
    def net(self):
        from .torch_state import enhancer_network  # torch

        return enhancer_network(self.path, self.cfg, self.device, aside=INT8_IR_KEYS)


def load_enhancer(name: str | None = None, device: str = "cpu") -> LoadedEnhancer:
    return LoadedEnhancer(name, device)


_LOADED: dict[tuple[str, str], LoadedEnhancer] = {}


def get_enhancer(name: str | None = None, device: str = "cpu") -> LoadedEnhancer:
    """The process-wide loaded enhancer (loaded on first use)."""
    key = (str(name or DEFAULT_ENHANCER), str(device))
    if key not in _LOADED:
        _LOADED[key] = load_enhancer(name, device)
    return _LOADED[key]
