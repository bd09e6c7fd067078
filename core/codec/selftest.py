"""The worker's self-test: code and decode one small tile with the shipped model, end to end.

*Test worker* in the plugin runs it, so a broken install (torch that does not import, a
missing compiled extension, weights that fail their checksum, a GDAL that cannot write)
fails there with its reason, not on the user's first real job. It writes a 128 x 128
three-band GeoTIFF of smooth ramps and edges, compresses it with the default model and
quality, decodes it plainly, and reports the device, the time and the PSNR.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from ..errors import CodecError
from ..compare.quality import raster_psnr
from ..options import DEFAULT_MODEL, CompressParams
from .compress import compress_raster
from .decompress import decompress_raster

SIDE = 128
MIN_PSNR = 18.0  # a working codec is far above this on ramps and edges; garbage is far below


def test_image(side: int = SIDE) -> np.ndarray:
    """(3, side, side) uint8: ramps, a disc and stripes (structure a codec must keep)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08).astype(np.float32)
    stripes = (np.floor(x * 8) % 2).astype(np.float32)
    bands = [0.2 + 0.6 * x, 0.2 + 0.6 * y * (1 - disc) + 0.7 * disc, 0.3 + 0.4 * stripes * (y > 0.5)]
    return (np.clip(np.stack(bands), 0, 1) * 255).round().astype(np.uint8)


def self_test(model: str = DEFAULT_MODEL, device: str = "cpu") -> dict:
    """{'device', 'model', 'seconds', 'bytes', 'psnr'}; a ``CodecError`` with the reason when it fails."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coderic-selftest-") as tmp:
        src, box, out = Path(tmp) / "tile.tif", Path(tmp) / "tile.crsic", Path(tmp) / "decoded.tif"
        with rasterio.open(src, "w", driver="GTiff", width=SIDE, height=SIDE, count=3, dtype="uint8",
                           crs="EPSG:32617", transform=from_origin(500000, 3300000, 1, 1)) as dst:
            dst.write(test_image())
        res = compress_raster(src, box, CompressParams(model=model, device=device, tile=SIDE, overlap=0))
        decompress_raster(box, out, model=model, device=device)
        psnr = raster_psnr(str(src), str(out))
    if not psnr >= MIN_PSNR:
        raise CodecError(f"the self-test tile decoded to garbage (PSNR {psnr:.1f} dB, expected at least "
                         f"{MIN_PSNR:g}): the installation is broken, reinstall the worker environment")
    import torch

    return {"device": device, "model": model, "seconds": round(time.perf_counter() - t0, 2),
            "bytes": res["bytes"], "psnr": round(psnr, 2), "torch": torch.__version__,
            "cuda_available": bool(torch.cuda.is_available())}
