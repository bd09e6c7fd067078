"""Enhancer weights: registry, fp16 safetensors I/O, and the process-wide loaded model.

A weights file holds the whole decode-time ``Enhancer`` (code lookup, frozen codebook
and D_H, HPIN fusion) and, in its metadata, the ``EnhancerConfig`` that rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CodecError
from .hpin import Enhancer
from .models import WEIGHTS_DIR, file_sha256
from .vqgan import EnhancerConfig


@dataclass(frozen=True)
class EnhancerSpec:
    name: str
    weights_file: str
    sha256: str | None
    default_fidelity: float
    description: str = ""
    # Highest container quality that `decompress` enhances unless told otherwise: the
    # rates the enhancer was trained on and measured to help (None: every quality).
    max_default_quality: float | None = None


ENHANCERS: dict[str, EnhancerSpec] = {
    "enhancer-lite": EnhancerSpec(
        name="enhancer-lite",
        weights_file="enhancer-lite.safetensors",
        sha256="965467240f59d44603bd143ca0b606a9f7adfd75674a076adeca2b69bc43d3bc",
        default_fidelity=1.0,  # best LPIPS and PSNR on the validation pairs (see the model card)
        description="Code-RSIC decoder-side enhancer (VQGAN 1024x32 codebook, 4-layer lookup Transformer, "
                    "HPIN at 1/2, 1/4, 1/8, input gate), trained on one GPU on shipped-ELIC pairs",
        # trained on quality 0..4 pairs; there LPIPS, DISTS, FID and KID all improve (PSNR -0.3 to
        # -1.8 dB); above, FID stops improving and PSNR costs 2.2-2.5 dB (see the model card)
        max_default_quality=4.0,
    ),
}
DEFAULT_ENHANCER = "enhancer-lite"


def save_enhancer(net: Enhancer, path: str | Path, extra: dict | None = None) -> str:
    """fp16 safetensors with the config in the metadata; returns the sha256."""
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in net.state_dict().items()}
    meta = {"crsic_enhancer_config": json.dumps(net.cfg.to_dict())}
    if extra:
        meta["crsic_enhancer_info"] = json.dumps(extra)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return file_sha256(path)


def resolve_enhancer(name: str | None = None) -> tuple[Path, EnhancerSpec | None]:
    name = name or DEFAULT_ENHANCER
    if name in ENHANCERS:
        spec = ENHANCERS[name]
        return WEIGHTS_DIR / spec.weights_file, spec
    path = Path(name)
    if not path.exists():
        raise CodecError(f"enhancer weights not found: {name} (known: {', '.join(ENHANCERS)})")
    return path, None


def enhancer_available(name: str | None = None) -> bool:
    try:
        path, _ = resolve_enhancer(name)
    except CodecError:
        return False
    return path.exists()


@dataclass
class LoadedEnhancer:
    net: Enhancer
    sha256: str
    default_fidelity: float
    device: torch.device


def load_enhancer(name: str | None = None, device: str = "cpu") -> LoadedEnhancer:
    path, spec = resolve_enhancer(name)
    if not path.exists():
        raise CodecError(f"enhancer weights '{path.name}' are not installed: enhancement is unavailable")
    sha = file_sha256(path)
    if spec is not None and spec.sha256 and spec.sha256 != sha:
        raise CodecError(f"enhancer weights {path} do not match the registry (sha256 {sha[:12]}, expected "
                         f"{spec.sha256[:12]}): reinstall the package")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = EnhancerConfig.from_dict(json.loads(meta["crsic_enhancer_config"]))
    except Exception as exc:  # noqa: BLE001
        raise CodecError(f"{path}: not an enhancer weights file ({exc})") from None
    net = Enhancer(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CodecError(f"{path}: weights do not fit the enhancer: {exc}") from None
    dev = torch.device(device)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedEnhancer(net, sha, spec.default_fidelity if spec else 0.5, dev)


_LOADED: dict[tuple[str, str], LoadedEnhancer] = {}


def get_enhancer(name: str | None = None, device: str = "cpu") -> LoadedEnhancer:
    key = (str(name or DEFAULT_ENHANCER), str(device))
    if key not in _LOADED:
        _LOADED[key] = load_enhancer(name, device)
    return _LOADED[key]
