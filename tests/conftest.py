"""Shared fixtures: a seeded random tiny ELIC model and the real fixture rasters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
SHARED_FIXTURES = ROOT.parent / "shared" / "data" / "fixtures"


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


def shared_fixture(name: str) -> Path:
    """A raster from ../shared/data/fixtures, or skip when that folder is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixture {name} not available (../shared/data/fixtures is absent in this clone)")
    return path


@pytest.fixture
def neon_rgb() -> Path:
    """Committed test data: NEON RGB 400x400 uint8, EPSG:32617 (from the MIT deepforest wheel)."""
    return TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
