"""Enhance a decoded raster with the Code-RSIC enhancer, window by window.

The enhancer runs over overlapping square windows of the raster (a ``TileGrid``: no
bits are involved, so overlap is free) and the windows are blended with the grid's
linear ramps in a ``Mosaic``, so no seam can show. Memory is bounded by one row of
windows whatever the raster size. Any raster works: one decoded by this codec, or a
JPEG/WebP-compressed GeoTIFF (the "retraining-free" use). The output keeps the
source's size, CRS, transform, dtype, nodata, band descriptions and colour
interpretation; pixels that are nodata / masked in the source are copied unchanged.

Bands are enhanced in groups of three (a last group of one or two repeats its last band,
as the codec does); uint16 bands are scaled by their value range.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from .container import atomic_output
from .errors import CodecError
from .normalization import BandRange, check_dtype
from .raster_io import band_ranges, has_mask, open_raster, read_valid
from .stitching import Mosaic
from .tile_coder import band_groups
from .tiling import TileGrid

Progress = Callable[[int, int], None]
DEFAULT_WINDOW = 256
DEFAULT_OVERLAP = 32


def enhance_tile(net, unit: np.ndarray, fidelity: float) -> np.ndarray:
    """(bands, h, w) float in [0, 1] -> enhanced, same shape (bands in groups of three)."""
    out = np.empty_like(unit)
    dev = next(net.parameters()).device
    for group in band_groups(unit.shape[0]):
        x = torch.from_numpy(np.ascontiguousarray(unit[group]))[None].to(dev)
        y = net.enhance(x, fidelity)[0].cpu().numpy()
        for b in sorted(set(group)):
            copies = [j for j, g in enumerate(group) if g == b]
            out[b] = y[copies].mean(axis=0)
    return out


def enhance_array(img: np.ndarray, fidelity: float | None = None, enhancer: str | None = None,
                  window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
    """Enhance an in-memory uint8 (h, w, bands) image with the same windows and blending as rasters."""
    from .enhancer import get_enhancer

    loaded = get_enhancer(enhancer)
    w = loaded.default_fidelity if fidelity is None else fidelity
    unit = img.transpose(2, 0, 1).astype(np.float32) / 255.0
    grid = TileGrid(img.shape[1], img.shape[0], window, overlap)
    mosaic = Mosaic(0, 0, img.shape[0], img.shape[1], unit.shape[0])
    for t in grid:
        tile = np.ascontiguousarray(unit[:, t.y0 : t.y1, t.x0 : t.x1])
        mosaic.add(grid, t, enhance_tile(loaded.net, tile, w), None)
    return np.clip(np.rint(mosaic.values * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _output_profile(ds) -> dict:
    profile = ds.profile.copy()
    for key in ("photometric", "jpeg_quality", "jpegtablesmode", "blockxsize", "blockysize", "interleave",
                "compress", "predictor", "zlevel", "tiled"):
        profile.pop(key, None)
    profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=2,
                   zlevel=1, BIGTIFF="IF_SAFER")
    if ds.count == 3 and profile["dtype"] == "uint8":
        profile["photometric"] = "RGB"
    return profile


def enhance_raster(src: str | Path, dst: str | Path, *, fidelity: float | None = None, enhancer: str | None = None,
                   device: str = "cpu", window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP,
                   ranges: list[BandRange] | None = None, overwrite: bool = False, cog: bool = False,
                   progress: Progress | None = None) -> dict:
    """Enhance every band of ``src`` into a new GeoTIFF ``dst``; returns timing and settings."""
    from .enhancer import get_enhancer

    t0 = time.perf_counter()
    loaded = get_enhancer(enhancer, device)
    w = loaded.default_fidelity if fidelity is None else float(fidelity)
    if not 0.0 <= w <= 1.0:
        raise CodecError(f"fidelity must be between 0 and 1, got {w}")
    with open_raster(src) as ds:
        for dt in set(ds.dtypes):
            check_dtype(dt)
        bands = list(range(1, ds.count + 1))
        masked = has_mask(ds, bands)
        ranges = ranges or band_ranges(ds, bands, masked)
        if len(ranges) != ds.count:
            raise CodecError(f"{len(ranges)} band ranges given for {ds.count} bands")
        grid = TileGrid(ds.width, ds.height, window, overlap)
        profile = _output_profile(ds)
        internal_mask = masked and ds.nodata is None
        with atomic_output(dst, overwrite) as tmp:
            gtiff = tmp.with_name(tmp.name + ".tif") if cog else tmp
            try:
                with rasterio.open(gtiff, "w", **profile) as out:
                    out.colorinterp = ds.colorinterp
                    for i, desc in enumerate(ds.descriptions, start=1):
                        if desc:
                            out.set_band_description(i, desc)
                    _enhance_rows(ds, out, grid, loaded.net, w, ranges, masked, internal_mask, progress)
                if cog:
                    rasterio.shutil.copy(gtiff, tmp, driver="COG", compress="deflate", predictor=2)
            finally:
                if cog:
                    Path(gtiff).unlink(missing_ok=True)
        pixels = ds.width * ds.height
    seconds = time.perf_counter() - t0
    return {"output": str(dst), "fidelity": w, "windows": len(grid), "window": window, "overlap": overlap,
            "seconds": seconds, "megapixels_per_second": pixels / 1e6 / seconds,
            "enhancer_sha256": loaded.sha256}


def _enhance_rows(ds, out, grid: TileGrid, net, w: float, ranges, masked: bool, internal_mask: bool,
                  progress) -> None:
    bands = list(range(1, ds.count + 1))
    dtype = ds.dtypes[0]
    mosaic = Mosaic(0, 0, 0, ds.width, ds.count)
    done = 0
    for r in range(grid.n_rows):
        row = grid.row(r)
        y0, y1 = row[0].y0, row[0].y1
        strip_win = Window(0, y0, ds.width, y1 - y0)
        data = ds.read(bands, window=strip_win)
        valid = read_valid(ds, bands, strip_win) if masked else None
        unit = np.stack([rg.to_unit(b) for rg, b in zip(ranges, data)])
        if r > 0:  # rows above this window row are final
            final = y0 - mosaic.y0
            if final > 0:
                _write(out, mosaic.take_rows(final), ds, ranges, dtype, internal_mask)
        mosaic.extend_to(y1 - mosaic.y0)
        for t in row:
            tile = unit[:, :, t.x0 : t.x1]
            tile_valid = None if valid is None else valid[:, t.x0 : t.x1]
            if tile_valid is not None and not tile_valid.all():
                tile = tile.copy()
                fill = tile[:, tile_valid].mean(axis=1) if tile_valid.any() else np.full(tile.shape[0], 0.5)
                tile[:, ~tile_valid] = fill[:, None].astype(np.float32)
            enhanced = enhance_tile(net, np.ascontiguousarray(tile, dtype=np.float32), w)
            mosaic.add(grid, t, enhanced, None if tile_valid is None else ~tile_valid)
            done += 1
            if progress:
                progress(done, len(grid))
    if mosaic.height > 0:
        _write(out, mosaic, ds, ranges, dtype, internal_mask)


def _write(out, mosaic: Mosaic, ds, ranges, dtype: str, internal_mask: bool) -> None:
    win = Window(0, mosaic.y0, mosaic.width, mosaic.height)
    values = np.stack([rg.from_unit(v, dtype) for rg, v in zip(ranges, mosaic.values)])
    if mosaic.invalid.any():  # masked / nodata pixels: copy the source unchanged
        src = ds.read(window=win)
        values[:, mosaic.invalid] = src[:, mosaic.invalid]
    out.write(values, window=win)
    if internal_mask:
        out.write_mask((ds.read_masks(window=win) > 0).any(axis=0).astype(np.uint8) * 255, window=win)


# ---------------------------------------------------------------- decompress hook

def enhancement_status(enhancer: str | None = None) -> str | None:
    """None when the enhancer can run, else a one-line reason."""
    from .enhancer import enhancer_available, resolve_enhancer

    if enhancer_available(enhancer):
        return None
    try:
        path, _ = resolve_enhancer(enhancer)
        return f"enhancer weights {path.name} are not installed"
    except CodecError as exc:
        return str(exc)


def default_enhancement(quality: float, enhancer: str | None = None) -> str | None:
    """None when ``decompress`` should enhance a container of this quality by default, else why not."""
    from .enhancer import resolve_enhancer

    try:
        _, spec = resolve_enhancer(enhancer)
    except CodecError:
        return None  # let enhancement_status report the problem
    if spec is not None and spec.max_default_quality is not None and quality > spec.max_default_quality:
        return (f"{spec.name} enhances quality <= {spec.max_default_quality:g} by default, this file has "
                f"quality {quality:g}; --enhance forces it")
    return None


def auto_enhancement(quality: float, enhancer: str | None = None) -> str | None:
    """None when ``decompress``, left to its default, enhances a container of this quality; else why not."""
    return default_enhancement(quality, enhancer) or enhancement_status(enhancer)


def decompress_enhanced(src, dst, *, enhance: bool | None = None, fidelity: float | None = None,
                        enhancer: str | None = None, window_size: int = DEFAULT_WINDOW, overwrite: bool = False,
                        cog: bool = False, progress: Progress | None = None, **decode_kwargs) -> dict:
    """``codec.decompress_raster`` followed by enhancement (when on and available).

    ``enhance``: True / False force it on / off; None (default) enhances when the
    enhancer is meant for the container's quality (``auto_enhancement``).
    The plain decode goes to a hidden temporary GeoTIFF next to ``dst``, the enhanced
    raster to ``dst`` (atomically). Without enhancer weights the decode is returned as
    is, with ``"enhanced": False`` and the reason.
    """
    from .codec import decompress_raster
    from .container import ContainerReader

    header = None
    if enhance is False:
        reason = "turned off (--no-enhance)"
    else:
        with ContainerReader(src) as reader:
            header = reader.header
        reason = (auto_enhancement(float(header["quality"]), enhancer) if enhance is None
                  else enhancement_status(enhancer))
    if reason is not None:
        res = decompress_raster(src, dst, overwrite=overwrite, cog=cog, progress=progress, **decode_kwargs)
        res.update(enhanced=False, enhancement=reason)
        return res
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise CodecError(f"output exists: {dst} (use --overwrite to replace it)")
    ranges = [BandRange(*r) for r in header["ranges"]]
    if not dst.parent.is_dir():
        raise CodecError(f"output folder does not exist: {dst.parent}")
    fd, plain = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".plain.tif", dir=dst.parent)
    os.close(fd)
    try:
        dec = decompress_raster(src, plain, overwrite=True, progress=progress, **decode_kwargs)
        enh = enhance_raster(plain, dst, fidelity=fidelity, enhancer=enhancer,
                             device=decode_kwargs.get("device", "cpu"), window=window_size, ranges=ranges,
                             overwrite=overwrite, cog=cog)
    finally:
        Path(plain).unlink(missing_ok=True)
    res = dict(dec)
    res.update(output=str(dst), enhanced=True, fidelity=enh["fidelity"], decode_seconds=dec["seconds"],
               enhance_seconds=enh["seconds"], seconds=dec["seconds"] + enh["seconds"])
    pixels = res["window"][2] * res["window"][3]
    res["megapixels_per_second"] = pixels / 1e6 / res["seconds"]
    return res
