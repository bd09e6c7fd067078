"""Evaluation images: finding them, reading them as RGB uint8, crops and FID patches."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import BadInput, UnsupportedRaster

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


def list_images(root: str | Path, limit: int | None = None) -> list[Path]:
    """Images under ``root`` (or ``root`` itself); with ``limit``, taken round-robin over
    their folders (sorted), so a class-per-folder dataset is sampled evenly."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise BadInput(f"no such folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BadInput(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if limit is None or limit >= len(files):
        return files
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    queues = [by_folder[k] for k in sorted(by_folder)]
    picked: list[Path] = []
    i = 0
    while len(picked) < limit:
        for q in queues:
            if i < len(q) and len(picked) < limit:
                picked.append(q[i])
        i += 1
    return sorted(picked)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from a PNG/JPEG/WebP or the RGB bands of a uint8 GeoTIFF."""
    if path.suffix.lower() in (".tif", ".tiff"):
        from ..format.raster_io import default_bands, open_raster

        with open_raster(path) as ds:
            bands = default_bands(ds)
            if len(bands) != 3 or any(ds.dtypes[b - 1] != "uint8" for b in bands):
                raise UnsupportedRaster(f"{path.name}: evaluation needs 3 uint8 (RGB) bands")
            return np.ascontiguousarray(ds.read(bands).transpose(1, 2, 0))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` part (the whole image when smaller, or when ``size`` is None)."""
    if not size:
        return img
    h, w = img.shape[:2]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y0 : y0 + size, x0 : x0 + size]


def spread_patches(img: np.ndarray, size: int, cap: int | None) -> list[np.ndarray]:
    """``size`` px FID patches of ``img``, at most ``cap`` of them, spread evenly over the image."""
    from .metrics import image_patches

    patches = image_patches(img, size)
    if cap and len(patches) > cap:
        idx = np.linspace(0, len(patches) - 1, cap).round().astype(int)
        patches = [patches[i] for i in idx]
    return patches
