"""Shared fixtures: a seeded random tiny ELIC model and the real fixture rasters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from testdata import ROOT, SHARED_FIXTURES, TEST_DATA, shared_fixture  # noqa: F401 (re-exported)


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory) -> Path:
    """Exported transforms go to a folder of the test session, not the user's cache (test
    subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("runtime-cache")
    os.environ["CODERSIC_CACHE_DIR"] = str(folder)
    return folder


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Single-threaded torch for a module of many small runs: on a shared 2-core machine one
    thread is faster, and it leaves the cores free."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _IdentityNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))  # a device for the windows code to read

    def enhance(self, x, fidelity, bf16=False):
        return x


class IdentityEnhancer:
    """A loaded enhancer that returns its input (the real one is large and slow)."""

    def __init__(self):
        self.net, self.sha256, self.default_fidelity = _IdentityNet(), "0" * 64, 0.5


@pytest.fixture
def identity_enhancer(monkeypatch) -> IdentityEnhancer:
    """``core.models.get_enhancer`` gives an identity enhancer for the test."""
    loaded = IdentityEnhancer()
    monkeypatch.setattr("core.models.get_enhancer", lambda *a, **k: loaded)
    return loaded
