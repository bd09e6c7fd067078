"""Our compress/decompress against GDAL's JPEG and WebP GeoTIFF compression, same raster.

Builds one large RGB GeoTIFF (default 4096 x 4096) from real imagery: a mosaic of
256 x 256 tiles cut from the validation images (UC Merced tiles and Dubai crops;
repeats are mirrored), georeferenced in EPSG:32617 at 0.3 m. Then, each in its own
process (so peak resident memory is that job's alone):

* ours:  ``core.codec.compress.compress_raster`` -> .crsic, ``core.codec.decompress.decompress_raster`` -> GeoTIFF
* GDAL:  ``rasterio.shutil.copy`` to a tiled GeoTIFF with COMPRESS=JPEG (YCbCr) or
  COMPRESS=WEBP, and back to a plain GeoTIFF.

Decoded outputs all use the profile ``decompress_raster`` writes (tiled, deflate level 1,
predictor 2), so "decompress" means the same work everywhere. By default the JPEG and
WebP qualities are chosen so their bitrate matches ours (integer search on GDAL's own
output size for the whole raster; WebP's lowest quality may still be above our bitrate,
see the bpp column), since speeds at different bitrates are not comparable.

    python benchmarks/gdal_compare.py --size 4096 --out results/gdal_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "val"
DECODED_PROFILE = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       predictor=2, zlevel=1)


# ------------------------------------------------------------------ the test raster

def source_tiles(folder: Path, size: int = 256) -> list[np.ndarray]:
    from PIL import Image

    tiles = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".webp", ".jpg", ".jpeg", ".png")):
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        for y in range(0, img.shape[0] - size + 1, size):
            for x in range(0, img.shape[1] - size + 1, size):
                tiles.append(img[y : y + size, x : x + size])
    return tiles


def build_mosaic(path: Path, size: int, folder: Path, tile: int = 256) -> dict:
    """Write a size x size RGB GeoTIFF (tiled, deflate) row by row from real image tiles."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    tiles = source_tiles(folder, tile)
    if not tiles:
        sys.exit(f"no images under {folder}: pass --images DIR")
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32617",
                   transform=from_origin(500000, 3300000, 0.3, 0.3), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=2, photometric="RGB")
    n_cols = -(-size // tile)
    k = 0
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, tile):
            h = min(tile, size - y)
            row = []
            for _ in range(n_cols):
                t = tiles[k % len(tiles)]
                t = t[:, ::-1] if (k // len(tiles)) % 2 else t  # a repeat is mirrored
                row.append(t)
                k += 1
            strip = np.concatenate(row, axis=1)[:h, :size]
            dst.write(strip.transpose(2, 0, 1), window=Window(0, y, size, h))
    return {"tiles_used": k, "distinct_tiles": len(tiles)}


# ------------------------------------------------------------------ jobs (run in subprocesses)

def job(kind: str, src: str, dst: str, params: dict) -> dict:
    """One timed operation. Imports happen first, so 'rss_after_imports_mb' is the baseline."""
    if kind.startswith("ours"):
        import torch

        torch.set_num_threads(params["threads"])
        from core.codec.compress import compress_raster
        from core.codec.decompress import decompress_raster
        from core.options import CompressParams
    else:
        import rasterio  # noqa: F401
        import rasterio.shutil
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if kind == "ours_compress":
        compress_raster(src, dst, CompressParams(model=params["model"], quality=params["quality"], overwrite=True))
    elif kind == "ours_decompress":
        decompress_raster(src, dst, model=params["model"], overwrite=True)
    elif kind in ("gdal_jpeg_compress", "gdal_webp_compress"):
        rasterio.shutil.copy(src, dst, **gdal_options(kind, params["quality"], params["threads"]))
    elif kind == "gdal_decompress":
        rasterio.shutil.copy(src, dst, photometric="RGB", num_threads=str(params["threads"]), **DECODED_PROFILE)
    else:
        raise ValueError(kind)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_after_imports_mb": base}


def run_job(kind: str, src: Path, dst: Path, params: dict) -> dict:
    cmd = [sys.executable, __file__, "_job", kind, str(src), str(dst), json.dumps(params)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{kind} failed:\n{err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss_mb=usage.ru_maxrss / 1024, process_seconds=wall)
    return result


# ------------------------------------------------------------------ matching the bitrate

def gdal_options(kind: str, quality: int, threads: int) -> dict:
    opts = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, num_threads=str(threads))
    if kind == "gdal_jpeg_compress":
        opts.update(compress="JPEG", photometric="YCBCR", jpeg_quality=int(quality))
    else:
        opts.update(compress="WEBP", webp_level=int(quality))
    return opts


def matched_quality(kind: str, src: Path, target_bpp: float, tmp: Path) -> int:
    """GDAL quality (1..100) whose output on the whole raster is closest to ``target_bpp``
    (integer bisection on GDAL's own output size, so tile headers are counted)."""
    import rasterio
    import rasterio.shutil

    with rasterio.open(src) as ds:
        pixels = ds.width * ds.height
    sizes: dict[int, float] = {}

    def bpp(q: int) -> float:
        if q not in sizes:
            out = tmp / f"match_{q}.tif"
            rasterio.shutil.copy(src, out, **gdal_options(kind, q, 1))
            sizes[q] = out.stat().st_size * 8 / pixels
            out.unlink()
        return sizes[q]

    lo, hi = 1, 100
    if bpp(lo) < target_bpp:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if bpp(mid) <= target_bpp else (lo, mid)
    return min(sizes, key=lambda q: abs(np.log(sizes[q] / target_bpp)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="side of the square test raster")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of source images")
    p.add_argument("--model", default="elic-lite", help="our model: registry name or .safetensors")
    p.add_argument("--quality", type=float, default=3.0, help="our quality (1..levels)")
    p.add_argument("--jpeg-quality", type=int, help="GDAL JPEG_QUALITY (default: match our bpp)")
    p.add_argument("--webp-quality", type=int, help="GDAL WEBP_LEVEL (default: match our bpp)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for ours, NUM_THREADS for GDAL")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    from core.compare.quality import raster_psnr

    params = {"model": args.model, "quality": args.quality, "threads": args.threads}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "mosaic.tif"
        mosaic = build_mosaic(src, args.size, args.images)
        pixels = args.size * args.size
        print(f"test raster: {args.size} x {args.size} RGB uint8 from {mosaic['distinct_tiles']} distinct "
              f"256 px tiles of {args.images}", flush=True)

        def measure(name, compress_kind, decompress_kind, compressed, job_params):
            enc = run_job(compress_kind, src, compressed, job_params)
            decoded = tmp / f"{name}_decoded.tif"
            dec = run_job(decompress_kind, compressed, decoded, job_params)
            size = compressed.stat().st_size
            rows[name] = {
                "bytes": size, "bpp": size * 8 / pixels, "psnr": raster_psnr(str(src), str(decoded)),
                "encode_mpx_per_s": pixels / 1e6 / enc["seconds"], "decode_mpx_per_s": pixels / 1e6 / dec["seconds"],
                "encode_peak_rss_mb": enc["peak_rss_mb"], "decode_peak_rss_mb": dec["peak_rss_mb"],
                "encode_rss_after_imports_mb": enc["rss_after_imports_mb"],
                "decode_rss_after_imports_mb": dec["rss_after_imports_mb"],
                "quality": job_params["quality"],
            }
            r = rows[name]
            print(f"{name:10s} q={r['quality']:<5g} {r['bpp']:.3f} bpp  PSNR {r['psnr']:.2f} dB  "
                  f"enc {r['encode_mpx_per_s']:.2f} MP/s ({r['encode_peak_rss_mb']:.0f} MB)  "
                  f"dec {r['decode_mpx_per_s']:.2f} MP/s ({r['decode_peak_rss_mb']:.0f} MB)", flush=True)

        measure("ours", "ours_compress", "ours_decompress", tmp / "ours.crsic", params)
        target = rows["ours"]["bpp"]
        jq = args.jpeg_quality or matched_quality("gdal_jpeg_compress", src, target, tmp)
        wq = args.webp_quality or matched_quality("gdal_webp_compress", src, target, tmp)
        measure("gdal_jpeg", "gdal_jpeg_compress", "gdal_decompress", tmp / "jpeg.tif", dict(params, quality=jq))
        measure("gdal_webp", "gdal_webp_compress", "gdal_decompress", tmp / "webp.tif", dict(params, quality=wq))
    import rasterio

    from core.models import file_sha256, resolve_weights

    result = {"raster": {"width": args.size, "height": args.size, "bands": 3, "source": str(args.images), **mosaic},
              "threads": args.threads, "model": args.model,
              "model_sha256": file_sha256(resolve_weights(args.model)), "gdal": rasterio.__gdal_version__,
              "quality_matched_to_our_bpp": not (args.jpeg_quality or args.webp_quality), "results": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_job":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(job(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))))
        sys.exit(0)
    sys.exit(main())
