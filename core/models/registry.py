"""The model registry: every named codec and enhancer, with its shipped weights file.

Standard library only. A ``ModelSpec`` describes one ELIC variant (architecture and the
lambdas of its rate levels), an ``EnhancerSpec`` one decoder-side enhancer. Shipped
weights live in ``core/weights`` and are checked against the sha256 recorded here.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from ..options import AUTO_ENHANCE_MAX_LAMBDA, DEFAULT_ENHANCER, DEFAULT_MODEL, MIN_QUALITY, quality_problem

# Lowest 0-based rate level: one below the lowest trained one, by extrapolating the gains.
MIN_LEVEL = MIN_QUALITY - 1.0

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one ELIC variant and the lambdas its rate levels were trained for."""

    name: str
    N: int
    M: int
    groups: tuple[int, ...]
    lambdas: tuple[float, ...]
    # widths of the two hidden layers of each channel-context network (5 x 5 convolutions);
    # ELIC's are (224, 128), about two thirds of the integer entropy path's time
    context: tuple[int, int] = (224, 128)
    weights_file: str | None = None  # file name inside core/weights
    sha256: str | None = None  # of the shipped weights file
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.lambdas)


@dataclass(frozen=True)
class EnhancerSpec:
    name: str
    weights_file: str
    sha256: str | None
    default_fidelity: float
    description: str = ""
    # Highest lambda (rate level trade-off) of the containers `decompress` enhances unless
    # told otherwise: the rates the enhancer was trained on and measured to help (None: all).
    max_default_lambda: float | None = None

    def max_default_quality(self, lambdas: tuple[float, ...]) -> float | None:
        """The highest quality of a model with these ``lambdas`` enhanced by default."""
        return None if self.max_default_lambda is None else quality_at_lambda(lambdas, self.max_default_lambda)


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
    # elic-lite with an entropy model 4x lighter (issue 24): channel contexts of 64/64 hidden
    # channels instead of ELIC's 224/128, trained on cached latents with everything else
    # frozen (training/slim_context.py): +0.46 % rate at equal PSNR on the validation crops,
    # the integer entropy path 2.2x faster (see its card).
    "elic-lite-s": ModelSpec(
        name="elic-lite-s",
        N=48,
        M=96,
        groups=(16, 16, 64),
        lambdas=DEFAULT_LAMBDAS,
        context=(64, 64),
        weights_file="elic-lite-s.safetensors",
        sha256="fb22f9406f6e6a740d1ebcc5431d67c660bf72bb155fd039f1b17093060b9ad3",
        description="elic-lite's transforms with a slim channel context (64/64), 6 rate levels",
    ),
    # Codec v2: the same architecture with the rate span widened to archive rates
    # (about 0.04 to 1.2+ bpp): lambdas doubling from 0.000125 to 0.128.
    "elic-v2": ModelSpec(
        name="elic-v2",
        N=48,
        M=96,
        groups=(16, 16, 64),
        lambdas=tuple(0.000125 * 2**k for k in range(11)),
        weights_file="elic-v2.safetensors",
        sha256="58b76e3c3e237e8bbb56a196738636e397443aa452a74ddca5f0d1b903993bea",
        description="ELIC N=48 M=96, 11 rate levels (about 0.045 to 0.9 bpp), elic-lite continued 2300 CPU steps "
                    "with the integer entropy path's quantisation-aware training",
    ),
    # Codec v3 (the training campaign, issue 20): wider transforms (N=64) and a latent twice
    # as wide (M=192: elic-v2's groups plus a fourth of 96 channels) for high rates; grown
    # from elic-v2 by training/widen.py, so it starts where elic-v2 stands. Same 11 levels.
    "elic-v3": ModelSpec(
        name="elic-v3",
        N=64,
        M=192,
        groups=(16, 16, 64, 96),
        lambdas=tuple(0.000125 * 2**k for k in range(11)),
        weights_file="elic-v3.safetensors",
        sha256="f37f24fc4bf02e28d8cdb60d47d9037e925c96aee7e58656c2bdc10a50256def",
        description="ELIC N=64 M=192, 11 rate levels, grown from elic-v2; the training campaign's current "
                    "candidate (better than elic-v2; ahead of AVIF on continuous rasters, not yet on mosaics of "
                    "separate scenes; see its card)",
    ),
    # Codec v4 (the campaign from step 91400 on): elic-v3 with a latent of 256 channels (a fifth
    # group of 64), grown by training/widen.py, so it starts where elic-v3 stands. On 16 x 16
    # patches of the UC Merced val scenes, 192 principal components leave 34.1 dB, about what
    # elic-v3's transforms reach unquantised (34.6 dB); 256 leave 38.3 dB
    # (benchmarks/latent_dimension.py). Not shipped yet.
    "elic-v4": ModelSpec(
        name="elic-v4",
        N=64,
        M=256,
        groups=(16, 16, 64, 96, 64),
        lambdas=tuple(0.000125 * 2**k for k in range(11)),
        description="ELIC N=64 M=256, 11 rate levels, grown from elic-v3 for the high rates (in training)",
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
        max_default_lambda=AUTO_ENHANCE_MAX_LAMBDA,
    ),
    "enhancer-fast": EnhancerSpec(
        name="enhancer-fast",
        weights_file="enhancer-fast.safetensors",
        sha256="4a533392512c41dc2bc1812f3ba5b4132603ae319bd9b43f26269759817f961a",
        default_fidelity=1.0,
        description="enhancer-lite distilled into a slimmer Code-RSIC student (same codebook, 2-layer lookup "
                    "Transformer, HPIN at 1/4 and 1/8, input gate; 8/16/64 channels at full/half/quarter "
                    "resolution), with its int8 OpenVINO network; about 3x faster, LPIPS slightly worse "
                    "(see its model card)",
        max_default_lambda=AUTO_ENHANCE_MAX_LAMBDA,
    ),
}

__all__ = ["DEFAULT_ENHANCER", "DEFAULT_LAMBDAS", "DEFAULT_MODEL", "ENHANCERS", "EnhancerSpec", "ModelSpec",
           "REGISTRY", "WEIGHTS_DIR"]


def quality_at_lambda(lambdas: tuple[float, ...], lmbda: float) -> float:
    """The user quality (level + 1) at which a model trained for ``lambdas`` (one per level,
    increasing) targets ``lmbda``: log-linear between its levels, extrapolated past the ends."""
    logs = [math.log(v) for v in lambdas]
    x = math.log(lmbda)
    if len(logs) == 1:
        return 1.0
    k = min(max(bisect.bisect_right(logs, x) - 1, 0), len(logs) - 2)
    return 1.0 + k + (x - logs[k]) / (logs[k + 1] - logs[k])


def quality_to_level(quality: float, levels: int) -> float:
    """User quality 0..levels (float allowed) -> 0-based level (-1 .. levels - 1)."""
    problem = quality_problem(quality, levels)
    if problem:
        raise BadInput(problem)
    return float(quality) - 1.0
