"""The golden container: a small v1 ``.crsic`` committed under tests/data.

It was made once, with the seeded test model (``tests/conftest.py``'s ``tiny_weights``:
elic-tiny, ``torch.manual_seed(0)``, reproducible to the byte), from a crop of the NEON
test raster with a block of nodata pixels. ``tests/test_golden.py`` decodes it to known
pixels and compresses the same input again to the same bytes, so a format change is
always deliberate and version 1 files stay readable.

Regenerate (only for a deliberate format change, then update the checksums)::

    python tests/golden.py [VERSION ...]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testdata import TEST_DATA

SOURCE = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
CROP = (100, 120, 200, 160)  # col_off, row_off, width, height of the source crop
NODATA_BLOCK = (slice(20, 60), slice(150, 180))  # rows, cols set to the nodata value
TILING = dict(quality=1.5, tile=128, overlap=16)

# sha256 of the seeded elic-tiny weights file (``tiny_weights``)
WEIGHTS_SHA256 = "68beb1922daf12540ad3de86bc1315fbeea14d4a7a195d43ce68a553f55bb771"


class Golden:
    """One committed container: its format, file, and the sha256 of its bytes and of its
    decoded pixels ((bands, height, width) uint8, C order)."""

    def __init__(self, version: int, container_sha256: str, decoded_sha256: str, **tiling):
        self.version = version
        self.path = TEST_DATA / f"golden_v{version}_elic-tiny.crsic"
        self.settings = dict(TILING, format=version, **tiling)
        self.container_sha256, self.decoded_sha256 = container_sha256, decoded_sha256


GOLDENS = {
    # version 1 (float entropy parameters), made before the core was split into layers
    1: Golden(1, "67576e5939e78f8162fad383c3f7bf2d469380bc8b80ee9604e4a7864644825f",
              "7e4246538e6980b84818433cef66538df955d56e6d3bb42c53848c046ceb91bc"),
    # version 2 (integer entropy parameters, symbols CRC seeded with the tile index)
    2: Golden(2, "19282585470cea27e29c31e1fbe03f363d8b5cee883ad00f1ff4449123727d41",
              "960a28ae32f98a5c0a55958f9d4a621f80eb217329143a31be663741f224d60e"),
    # version 3 (latent tiles: no overlap, tile records, synthesis with the neighbours' latents);
    # 64 px tiles, so most tiles have a full ring of neighbours
    3: Golden(3, "7b57adbe40e4b8ee3beb3e64025d8a11ce6375ea02513c2c42c106c29b9da7b7",
              "c77162ae55dcbda3450ae4e14e728cbf56530f71b9cf6d2a017b23bce04f4896", tile=64, overlap=0),
}


def make_source(path: Path) -> Path:
    """Write the golden input: the crop, with a nodata block."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with rasterio.open(SOURCE) as src:
        win = Window(*CROP)
        data = src.read(window=win)
        profile = src.profile.copy()
        profile.update(width=CROP[2], height=CROP[3], transform=window_transform(win, src.transform),
                       tiled=False, compress="deflate")
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
    data[(slice(None), *NODATA_BLOCK)] = int(profile["nodata"])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def pixels_sha256(path: Path) -> str:
    import hashlib

    import rasterio

    with rasterio.open(path) as ds:
        return hashlib.sha256(np.ascontiguousarray(ds.read()).tobytes()).hexdigest()


if __name__ == "__main__":  # regenerate: python tests/golden.py
    import hashlib
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from core.models import REGISTRY, build_model, save_weights

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        spec = REGISTRY["elic-tiny"]
        net = build_model(spec).eval()
        net.update(force=True)
        weights = Path(tmp) / "elic-tiny.safetensors"
        print("weights", save_weights(net, spec, weights))
        src = make_source(Path(tmp) / "golden_source.tif")
        from core.codec.compress import compress_raster
        from core.codec.decompress import decompress_raster
        from core.options import CompressParams

        versions = [int(v) for v in sys.argv[1:]] or list(GOLDENS)
        for v in versions:
            g = GOLDENS[v]
            compress_raster(src, g.path, CompressParams(model=str(weights), overwrite=True, **g.settings))
            decompress_raster(g.path, Path(tmp) / "decoded.tif", model=str(weights), overwrite=True)
            print(f"v{v} container", hashlib.sha256(g.path.read_bytes()).hexdigest())
            print(f"v{v} decoded", pixels_sha256(Path(tmp) / "decoded.tif"))
