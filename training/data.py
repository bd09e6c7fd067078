"""Training data: folders of images and GeoTIFFs -> random augmented crops in [0, 1].

All images are loaded once into memory (uint8, or float16 for normalised uint16), which
is what makes CPU training fast: a few hundred megapixels fit easily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.format.normalization import fixed_range, measured_range

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RASTER_SUFFIXES = {".tif", ".tiff"}


def list_images(folders) -> list[Path]:
    """All images and GeoTIFFs below the given folders (or files), sorted."""
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            paths.append(folder)
            continue
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder: {folder}")
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES | RASTER_SUFFIXES:
                paths.append(p)
    return paths


def load_image(path: Path, bands=None) -> np.ndarray:
    """Read an image as (3, H, W) float32 in [0, 1]; rasters normalised like the codec."""
    if path.suffix.lower() in RASTER_SUFFIXES:
        import rasterio

        with rasterio.open(path) as ds:
            idx = list(bands) if bands else list(range(1, min(ds.count, 3) + 1))
            data = ds.read(idx)
            dtype = ds.dtypes[0]
        rng = fixed_range(dtype)
        planes = [(rng or measured_range(b)).to_unit(b) for b in data]
        arr = np.stack(planes)
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255.0
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return arr[:3]


class CropSampler:
    """Random crops with flips and 90-degree rotations, images drawn by area.

    ``mosaic`` is the fraction of crops assembled from four images, cut once across and once
    down at random points: a codec tile that spans scene borders (a mosaic of image chips, a
    nodata edge) is then in the training distribution, not only crops of one scene.
    """

    def __init__(self, paths, crop: int, seed: int = 0, mosaic: float = 0.0):
        if not paths:
            raise ValueError("no training images found")
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic must be a fraction between 0 and 1, got {mosaic}")
        self.crop = crop
        self.mosaic = mosaic
        self.images = []
        for p in paths:
            arr = load_image(Path(p))
            pad_h, pad_w = max(0, crop - arr.shape[1]), max(0, crop - arr.shape[2])
            if pad_h or pad_w:
                arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
            self.images.append(arr.astype(np.float16))
        areas = np.array([a.shape[1] * a.shape[2] for a in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    @property
    def megapixels(self) -> float:
        return sum(a.shape[1] * a.shape[2] for a in self.images) / 1e6

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, 3, self.crop, self.crop), dtype=np.float32)
        for i, k in enumerate(self.rng.choice(len(self.images), size=n, p=self.weights)):
            out[i] = self._crop(k)
            if self.mosaic and len(self.images) >= 4 and self.rng.random() < self.mosaic:
                self._paste_mosaic(out[i], k)
        return torch.from_numpy(out)

    def _crop(self, k: int) -> np.ndarray:
        img = self.images[k]
        y = self.rng.integers(0, img.shape[1] - self.crop + 1)
        x = self.rng.integers(0, img.shape[2] - self.crop + 1)
        c = img[:, y : y + self.crop, x : x + self.crop]
        if self.rng.random() < 0.5:
            c = c[:, :, ::-1]
        return np.rot90(c, k=int(self.rng.integers(4)), axes=(1, 2))

    def _paste_mosaic(self, crop: np.ndarray, first: int) -> None:
        """Replace three quadrants of ``crop`` (from image ``first``) by crops of three other images."""
        others = [k for k in self.rng.choice(len(self.images), size=4, replace=False, p=self.weights) if k != first][:3]
        margin = max(1, self.crop // 8)
        cy, cx = (int(v) for v in self.rng.integers(margin, self.crop - margin + 1, size=2))
        for k, (rows, cols) in zip(others, ((slice(0, cy), slice(cx, None)), (slice(cy, None), slice(0, cx)),
                                           (slice(cy, None), slice(cx, None)))):
            crop[:, rows, cols] = self._crop(k)[:, rows, cols]


def center_crops(paths, size: int, limit: int | None = None) -> list[torch.Tensor]:
    """Deterministic validation crops (one per image, at most ``size`` square, multiple of 64)."""
    paths = list(paths)
    if limit and len(paths) > limit:  # evenly spread, so every class is represented
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, limit).round()]
    crops = []
    for p in paths:
        arr = load_image(Path(p))
        h = min(size, arr.shape[1]) // 64 * 64
        w = min(size, arr.shape[2]) // 64 * 64
        if h == 0 or w == 0:
            continue
        y0, x0 = (arr.shape[1] - h) // 2, (arr.shape[2] - w) // 2
        crops.append(torch.from_numpy(np.ascontiguousarray(arr[:, y0 : y0 + h, x0 : x0 + w])))
    return crops
