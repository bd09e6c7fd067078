"""Shared fixtures: a seeded random tiny ELIC model and the real fixture rasters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from testdata import ROOT, SHARED_FIXTURES, TEST_DATA, shared_fixture  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> str:
    """A seeded, randomly initialised elic-tiny saved as safetensors (every codec property
    must hold for any weights)."""
    from core.models import REGISTRY, build_model, save_weights

    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec).eval()
    net.update(force=True)
    path = tmp_path_factory.mktemp("weights") / "elic-tiny.safetensors"
    save_weights(net, spec, path)
    return str(path)


@pytest.fixture
def neon_rgb() -> Path:
    """Committed test data: NEON RGB 400x400 uint8, EPSG:32617 (from the MIT deepforest wheel)."""
    return TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
