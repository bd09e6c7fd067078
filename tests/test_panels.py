"""Wide rasters in vertical panels: memory bounded by a panel, pixels as if decoded whole.

``PANEL_WIDTH`` is lowered so that a 400 px raster runs as three or four panels; the
output must equal the one-piece run exactly (plain decode, decode with enhancement,
enhancement of a GeoTIFF), for the whole raster and for a window.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.enhance import decompress_enhanced, enhance_raster
from core.format.tiling import TileGrid, panels
from core.options import CompressParams, DecompressParams, EnhanceParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TILE = 128
NARROW = 192  # the panel limit in these tests: 400 px rasters need three panels


class _BlurNet(torch.nn.Module):
    """An enhancer whose output depends on each pixel's neighbourhood, so a window cut
    short or blended differently would show."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def enhance(self, x, fidelity, bf16=False):
        blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        return (x + torch.tanh(4 * (blurred - x))) * fidelity + x * (1 - fidelity)


class _Blur:
    def __init__(self):
        self.net, self.sha256, self.default_fidelity = _BlurNet(), "1" * 64, 0.8


@pytest.fixture
def blur_enhancer(monkeypatch):
    loaded = _Blur()
    monkeypatch.setattr("core.models.get_enhancer", lambda *a, **k: loaded)
    return loaded


@pytest.fixture
def narrow_panels(monkeypatch):
    monkeypatch.setattr("core.codec.decompress.PANEL_WIDTH", NARROW)
    monkeypatch.setattr("core.enhance.raster.PANEL_WIDTH", NARROW)


@pytest.fixture(scope="module")
def container(tmp_path_factory, tiny_weights):
    from testdata import TEST_DATA

    src = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
    out = tmp_path_factory.mktemp("panels") / "neon.crsic"
    compress_raster(src, out, CompressParams(model=tiny_weights, quality=1.5, tile=TILE))
    return out


def _read(path) -> tuple[np.ndarray, np.ndarray, tuple]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.read_masks(), tuple(ds.transform)


@pytest.mark.parametrize("width,limit,cuts", [(400, 192, [128, 256, 384]), (1000, 300, []), (700, 256, [96, 500]),
                                              (100, 192, [64])])
@pytest.mark.parametrize("window,overlap", [(0, 0), (64, 16), (96, 8)])
def test_panels_partition_the_columns_within_the_limit(width, limit, cuts, window, overlap):
    parts = panels(width, limit, cuts, window, overlap)
    assert parts[0].x0 == 0 and parts[-1].x1 == width
    assert all(a.x1 == b.x0 for a, b in zip(parts, parts[1:]))
    assert all(0 < p.x1 - p.x0 <= limit for p in parts)
    for p in parts:
        assert 0 <= p.read0 <= p.x0 and p.x1 <= p.read1 <= width
        if not window:
            assert (p.read0, p.read1) == (p.x0, p.x1)
        else:  # the context is at most about one window either side
            assert p.x0 - p.read0 <= window and p.read1 - p.x1 <= window


def test_panels_cut_at_tile_starts_where_one_fits():
    assert [(p.x0, p.x1) for p in panels(400, 192, [128, 256, 384])] == [(0, 128), (128, 256), (256, 400)]
    assert [(p.x0, p.x1) for p in panels(1000, 300, [])] == [(0, 300), (300, 600), (600, 900), (900, 1000)]


@pytest.mark.parametrize("window", [None, (37, 5, 350, 300)])
def test_plain_decode_in_panels_equals_one_piece(container, tiny_weights, tmp_path, monkeypatch, window):
    whole = tmp_path / "whole.tif"
    decompress_raster(container, whole, model=tiny_weights, window=window)
    seen = []
    monkeypatch.setattr("core.codec.decompress.PANEL_WIDTH", NARROW)
    narrow = tmp_path / "narrow.tif"
    decompress_raster(container, narrow, model=tiny_weights, window=window,
                      progress=lambda done, total: seen.append((done, total)))
    a, b = _read(whole), _read(narrow)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len({t for _, t in seen}) == 1  # one total across the panels


@pytest.mark.parametrize("window", [None, (37, 5, 350, 300)])
def test_enhanced_decode_in_panels_equals_one_piece(container, tiny_weights, tmp_path, monkeypatch, blur_enhancer,
                                                    window):
    params = DecompressParams(model=tiny_weights, window=window, enhance=True,
                              enhancement=EnhanceParams(window=64, overlap=16))
    whole = tmp_path / "whole.tif"
    res = decompress_enhanced(container, whole, params)
    assert res["enhanced"]
    monkeypatch.setattr("core.codec.decompress.PANEL_WIDTH", NARROW)
    phases = []
    narrow = tmp_path / "narrow.tif"
    decompress_enhanced(container, narrow, params, progress=lambda *a: phases.append(a))
    plain = tmp_path / "plain.tif"
    decompress_raster(container, plain, model=tiny_weights, window=window)
    a, b, c = _read(whole)[0], _read(narrow)[0], _read(plain)[0]
    assert not np.array_equal(a, c)  # the enhancer changed the pixels...
    assert np.array_equal(a, b)  # ...identically in panels and in one piece
    enhance = [(d, t) for name, d, t in phases if name == "enhance"]
    assert enhance[-1][0] == enhance[-1][1]


def test_enhancing_a_geotiff_in_panels_equals_one_piece(tmp_path, monkeypatch, blur_enhancer, neon_rgb):
    params = EnhanceParams(window=64, overlap=16)
    whole, narrow = tmp_path / "whole.tif", tmp_path / "narrow.tif"
    res = enhance_raster(neon_rgb, whole, params)
    assert res["windows"] == len(TileGrid(400, 400, 64, 16))
    monkeypatch.setattr("core.enhance.raster.PANEL_WIDTH", NARROW)
    enhance_raster(neon_rgb, narrow, params)
    a, b = _read(whole), _read(narrow)
    with rasterio.open(neon_rgb) as ds:
        assert not np.array_equal(a[0], ds.read())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
