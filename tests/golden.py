"""The golden container: a small v1 ``.crsic`` committed under tests/data.

It was made once, with the seeded test model (``tests/conftest.py``'s ``tiny_weights``:
elic-tiny, ``torch.manual_seed(0)``, reproducible to the byte), from a crop of the NEON
test raster with a block of nodata pixels. ``tests/test_golden.py`` decodes it to known
pixels and compresses the same input again to the same bytes, so a format change is
always deliberate and version 1 files stay readable.

Regenerate (only for a deliberate format change, then update the checksums)::

    python tests/golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testdata import TEST_DATA

GOLDEN = TEST_DATA / "golden_v1_elic-tiny.crsic"
SOURCE = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"
CROP = (100, 120, 200, 160)  # col_off, row_off, width, height of the source crop
NODATA_BLOCK = (slice(20, 60), slice(150, 180))  # rows, cols set to the nodata value
SETTINGS = dict(quality=1.5, tile=128, overlap=16, format=1)  # a version-1 container (float entropy parameters)

# sha256 of the seeded elic-tiny weights file (``tiny_weights``)
WEIGHTS_SHA256 = "68beb1922daf12540ad3de86bc1315fbeea14d4a7a195d43ce68a553f55bb771"
# sha256 of the container's bytes (made before the core was split into layers)
CONTAINER_SHA256 = "67576e5939e78f8162fad383c3f7bf2d469380bc8b80ee9604e4a7864644825f"
# sha256 of the decoded pixels, (bands, height, width) uint8 C order
DECODED_SHA256 = "7e4246538e6980b84818433cef66538df955d56e6d3bb42c53848c046ceb91bc"


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

        compress_raster(src, GOLDEN, CompressParams(model=str(weights), overwrite=True, **SETTINGS))
        decompress_raster(GOLDEN, Path(tmp) / "decoded.tif", model=str(weights))
        print("container", hashlib.sha256(GOLDEN.read_bytes()).hexdigest())
        print("decoded", pixels_sha256(Path(tmp) / "decoded.tif"))
