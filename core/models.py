"""ELIC models: a registry of named sizes, a variable-rate wrapper, safetensors I/O.

One trained network serves every rate: Cui et al. (CVPR 2021) gain units scale the
latent ``y`` channel-wise before quantisation (and back before synthesis). Rate level
``q`` is continuous: between two trained levels the gains are interpolated
geometrically, so any quality in ``[1, levels]`` is valid. Quality ``[0, 1)`` extrapolates
the gains up to one level below the lowest trained one (measured on val: smooth, about
0.6x the bits of quality 1 at quality 0; see core/weights/elic-lite.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ._compressai import Elic2022Official
from .errors import CodecError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one ELIC variant and the lambdas its rate levels were trained for."""

    name: str
    N: int
    M: int
    groups: tuple[int, ...]
    lambdas: tuple[float, ...]
    weights_file: str | None = None  # file name inside core/weights
    sha256: str | None = None  # of the shipped weights file
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.lambdas)


# Lambdas (MSE on 0..255, compressai convention) of the trained rate levels, low to high.
DEFAULT_LAMBDAS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008)

REGISTRY: dict[str, ModelSpec] = {
    "elic-lite": ModelSpec(
        name="elic-lite",
        N=48,
        M=96,
        groups=(16, 16, 64),
        lambdas=DEFAULT_LAMBDAS,
        weights_file="elic-lite.safetensors",
        sha256="c383c613137d8a88b5c8a8f2b6c36c309c4a592ead7a9fefc8efac50109a6a47",
        description="ELIC N=48 M=96, 6 rate levels, trained on aerial imagery on CPU",
    ),
    # Codec v2: the same architecture with the rate span widened to archive rates
    # (about 0.04 to 1.2+ bpp): lambdas doubling from 0.000125 to 0.128.
    "elic-v2": ModelSpec(
        name="elic-v2",
        N=48,
        M=96,
        groups=(16, 16, 64),
        lambdas=tuple(0.000125 * 2**k for k in range(11)),
        description="ELIC N=48 M=96, 11 rate levels (about 0.04 to 1.2 bpp), trained on aerial imagery on CPU",
    ),
    # Tiny architecture for tests and smoke runs (random weights are fine there).
    "elic-tiny": ModelSpec(
        name="elic-tiny",
        N=16,
        M=48,
        groups=(8, 8, 32),
        lambdas=(0.001, 0.004),
        description="test-sized ELIC, not for real use",
    ),
}
DEFAULT_MODEL = "elic-lite"


# Lowest quality: one level below the lowest trained one, by extrapolating the gains.
MIN_QUALITY = 0.0
MIN_LEVEL = MIN_QUALITY - 1.0


class VariableRateElic(Elic2022Official):
    """``Elic2022Official`` with per-level channel gains on the latent (gain units)."""

    def __init__(self, N: int, M: int, groups, levels: int, init_lambdas=None):
        super().__init__(N=N, M=M, groups=list(groups))
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

    def forward(self, x, level):
        y = self.g_a(x) * self._interp(self.log_gain, level)
        y_out = self.latent_codec(y)
        x_hat = self.g_s(y_out["y_hat"] * self._interp(self.log_inv_gain, level))
        return {"x_hat": x_hat, "likelihoods": y_out["likelihoods"]}

    # Coding runs the analysis / synthesis transforms on channels-last tensors (oneDNN's
    # fast path on CPU: about 2x faster convolutions), but the entropy model always sees
    # contiguous tensors, so the probabilities the encoder and decoder compute, and thus
    # the bitstream, do not depend on this choice.

    def compress(self, x, level):
        y = self.g_a(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.latent_codec.compress(y * self._interp(self.log_gain, level))

    def decompress(self, strings, shape, level):
        y_hat = self.latent_codec.decompress(strings, shape)["y_hat"]
        y_hat = (y_hat * self._interp(self.log_inv_gain, level)).contiguous(memory_format=torch.channels_last)
        x_hat = self.g_s(y_hat).contiguous().clamp_(0, 1)
        return {"x_hat": x_hat}


def build_model(spec: ModelSpec) -> VariableRateElic:
    return VariableRateElic(spec.N, spec.M, spec.groups, spec.levels, spec.lambdas)


def quality_to_level(quality: float, levels: int) -> float:
    """User quality 0..levels (float allowed) -> 0-based level (-1 .. levels - 1)."""
    if not (MIN_QUALITY <= quality <= levels) or math.isnan(quality):
        raise CodecError(f"quality must be between {MIN_QUALITY:g} and {levels}, got {quality}")
    return float(quality) - 1.0


def spec_metadata(spec: ModelSpec) -> dict[str, str]:
    d = asdict(spec)
    for k in ("weights_file", "sha256", "extra"):
        d.pop(k)
    return {"crsic_model_spec": json.dumps(d)}


def save_weights(model: torch.nn.Module, spec: ModelSpec, path: str | Path, fp16: bool = True) -> str:
    """Save a model (after ``update()``) as safetensors; returns the file's sha256.

    Float tensors of the transforms go to fp16; entropy-coder tables stay exact.
    """
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        exact = "gaussian_conditional" in key or "entropy_bottleneck" in key
        if fp16 and tensor.is_floating_point() and not exact:
            tensor = tensor.half()
        state[key] = tensor
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=spec_metadata(spec))
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_spec(path: str | Path) -> ModelSpec:
    """Architecture stored in a weights file's metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not our weights"
        raise CodecError(f"{path}: not a safetensors weights file ({exc})") from None
    if "crsic_model_spec" not in meta:
        raise CodecError(f"{path}: weights file has no Code-RSIC model description")
    d = json.loads(meta["crsic_model_spec"])
    d["groups"] = tuple(d["groups"])
    d["lambdas"] = tuple(d["lambdas"])
    return ModelSpec(**d)


def resolve_weights(model: str) -> Path:
    """A registry name or a path to a ``.safetensors`` file -> the weights path."""
    if model in REGISTRY:
        spec = REGISTRY[model]
        if spec.weights_file is None:
            raise CodecError(f"model '{model}' has no shipped weights; pass a .safetensors file")
        path = WEIGHTS_DIR / spec.weights_file
        if not path.exists():
            raise CodecError(f"weights for model '{model}' are missing: {path}")
        return path
    path = Path(model)
    if path.suffix == ".safetensors" or path.exists():
        if not path.exists():
            raise CodecError(f"weights file not found: {path}")
        return path
    raise CodecError(f"unknown model '{model}' (known: {', '.join(REGISTRY)}) and no such file")


@dataclass
class LoadedModel:
    net: VariableRateElic
    spec: ModelSpec
    sha256: str
    device: torch.device


def load_model(model: str = DEFAULT_MODEL, device: str = "cpu") -> LoadedModel:
    """Load weights (registry name or file) ready for ``compress``/``decompress``."""
    path = resolve_weights(model)
    spec = read_spec(path)
    sha = file_sha256(path)
    registered = REGISTRY.get(model)
    if registered is not None and registered.sha256 and registered.sha256 != sha:
        raise CodecError(
            f"weights file {path} does not match the registry (sha256 {sha[:12]}, "
            f"expected {registered.sha256[:12]}): reinstall the package"
        )
    net = build_model(spec)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CodecError(f"{path}: weights do not fit model {spec.name}: {exc}") from None
    dev = torch.device(device)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(net=net, spec=spec, sha256=sha, device=dev)
