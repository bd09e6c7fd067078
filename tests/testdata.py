"""Where test rasters live (importable from test modules: `from testdata import ...`)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
SHARED_FIXTURES = ROOT.parent / "shared" / "data" / "fixtures"


def shared_fixture(name: str) -> Path:
    """A raster from ../shared/data/fixtures, or skip when that folder is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixture {name} not available (../shared/data/fixtures is absent in this clone)")
    return path
