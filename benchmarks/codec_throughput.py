"""Encode/decode throughput and peak memory for rasters of growing size.

Builds uint8 RGB GeoTIFFs of each size (``8192``: square, ``65536x1024``: width x
height) from real aerial imagery (mirrored
mosaics of the given source images, georeferenced in EPSG:32617 at 0.3 m), then runs
``compress`` and ``decompress`` of the CLI, each in its own process, and reports
megapixels per second (whole process, start-up included, as a user waits) and the peak
resident memory of that process. In the same run, the reference: Pillow's AVIF encoder
(libavif, speed 6, quality 50) on the same pixels; the ratios put ours beside it and
beside the previous version's numbers (``--baseline``, a JSON this script wrote).

    python benchmarks/codec_throughput.py --sizes 2048 4096 8192 \
        --images ../shared/data/val/dubai/*.jpg
    python benchmarks/codec_throughput.py --sizes 8192 16384 --device cuda --threads 16   # on a GPU
    python benchmarks/codec_throughput.py --sizes 2048 --formats 2 3 --repeat 2 --threads 1   # format 3 vs 2
    python benchmarks/codec_throughput.py --sizes 4096 --enhancers OLD.safetensors enhancer-fast --repeat 3
    ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell \
        python benchmarks/codec_throughput.py --sizes 4096 --enhance   # as on an AVX2-only CPU (AVX2_ENV)
    python benchmarks/codec_throughput.py --sizes 16384x1024 65536x1024 --threads 1 --no-avif   # memory vs width
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.options import DEFAULT_QUALITY  # noqa: E402 (after the path: run as a script)


def rgb_profile(width: int, height: int) -> dict:
    """The benchmark rasters' GeoTIFF profile: uint8 RGB, EPSG:32617 at 0.3 m, tiled, deflate."""
    return dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:32617",
                transform=from_origin(500000, 3300000, 0.3, 0.3), tiled=True, blockxsize=256, blockysize=256,
                compress="deflate", photometric="RGB")


def write_rgb(path: Path, img: np.ndarray) -> None:
    """Write a (3, H, W) uint8 array as a benchmark raster."""
    with rasterio.open(path, "w", **rgb_profile(img.shape[2], img.shape[1])) as dst:
        dst.write(img)


def dubai_pair(path: Path) -> None:
    """The two Dubai val images side by side (one continuous scene, 3633 x 2061)."""
    parts = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((ROOT.parent / "shared/data/val/dubai").glob("*.jpg"))]
    h = min(p.shape[0] for p in parts)
    write_rgb(path, np.concatenate([p[:h] for p in parts], axis=1).transpose(2, 0, 1))


def parse_shape(text: str) -> tuple[int, int]:
    """``8192`` (square) or ``65536x1024`` (width x height)."""
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def shape_label(shape: tuple[int, int]) -> int | str:
    """A row's ``size``: the side of a square raster (as earlier JSONs have it), else ``WxH``."""
    w, h = shape
    return w if w == h else f"{w}x{h}"


def build_raster(path: Path, size: int | tuple[int, int], images: list[Path]) -> None:
    """Write a size x size (or width x height) RGB GeoTIFF, strip by strip, tiled from
    mirrored source images."""
    width, height = (size, size) if isinstance(size, int) else size
    sources = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    with rasterio.open(path, "w", **rgb_profile(width, height)) as dst:
        y, k = 0, 0
        while y < height:
            img = sources[k % len(sources)]
            h = min(img.shape[0], height - y)
            row = []
            x, j = 0, 0
            while x < width:
                piece = sources[(k + j) % len(sources)][:h]
                piece = piece[:, ::-1] if j % 2 else piece
                row.append(piece[:, : width - x])
                x += row[-1].shape[1]
                j += 1
            strip = np.concatenate(row, axis=1)
            dst.write(strip.transpose(2, 0, 1), window=rasterio.windows.Window(0, y, width, h))
            y += h
            k += 1



def cli_roundtrip(src: Path, folder: Path, compress_args: list[str], common: list[str] = (),
                  decodes: dict[str, list[str]] | None = None) -> tuple[float, np.ndarray] | tuple[float, dict]:
    """``compress`` then plain ``decompress`` through the CLI, each its own process, ``common``
    arguments (e.g. ``--threads 1``) given to both -> (bits per pixel of the whole container,
    decoded pixels (bands, h, w)). ``decodes``: decode the container once per entry, with its
    arguments (e.g. ``{"plain": ["--no-enhance"], "enhanced": ["--enhance"]}``) -> (bpp, {name: pixels})."""
    crsic, dec = folder / "roundtrip.crsic", folder / "roundtrip.tif"
    py = [sys.executable, "-m", "core.tile_codec"]
    subprocess.run(py + ["compress", str(src), "-o", str(crsic), "--quiet", "--overwrite", *compress_args, *common],
                   check=True, cwd=ROOT)
    pixels = {}
    for name, decode_args in (decodes or {"plain": ["--no-enhance"]}).items():
        subprocess.run(py + ["decompress", str(crsic), "-o", str(dec), *decode_args, "--quiet", "--overwrite",
                             *common], check=True, cwd=ROOT)
        with rasterio.open(dec) as ds:
            bpp, pixels[name] = crsic.stat().st_size * 8 / (ds.width * ds.height), ds.read()
    return (bpp, pixels) if decodes else (bpp, pixels["plain"])


def run(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (seconds, peak resident memory in MB of its process tree)."""
    seconds, peak, _ = run_usage(cmd)
    return seconds, peak


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (worker processes), MB. Pages shared
    between them (libraries) are counted once per process, so this errs on the high side."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_usage(cmd: list[str]) -> tuple[float, float, float]:
    """Run a command -> (wall seconds, peak resident MB of its process tree, CPU seconds (user +
    system) of the process and the workers it waited for). The tree is sampled every 50 ms; the
    process's own peak (exact) is the floor."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read()}")
    return seconds, max(peak, usage.ru_maxrss / 1024), usage.ru_utime + usage.ru_stime


def compare_variants(args, runtime: list[str], encode: list[str], variants: dict[str, tuple[list[str], list[str]]]) -> int:
    """Variants of the codec on the same rasters, in turns: ``{label: (compress arguments, decompress
    arguments)}`` (container formats; enhancers). Wall and CPU seconds (CPU time is what a busy
    machine distorts least), peak RSS, bpp; variants with the same compress arguments share one
    container, compressed once per round."""
    rows = []
    py = [sys.executable, "-m", "core.tile_codec"]
    with tempfile.TemporaryDirectory() as tmp:
        for shape in sorted(args.sizes, key=lambda s: s[0] * s[1]):
            (width, height), size = shape, shape_label(shape)
            src = Path(tmp) / f"mosaic_{size}.tif"
            build_raster(src, shape, [Path(i) for i in args.images])
            mp = width * height / 1e6
            for rep in range(args.repeat):
                encoded = {}  # compress arguments -> (container, seconds, peak MB, CPU seconds)
                for label, (compress_args, decode_args) in variants.items():
                    key = tuple(compress_args)
                    if key not in encoded:
                        crsic = Path(tmp) / f"v{len(encoded)}.crsic"
                        encoded[key] = (crsic, *run_usage(py + ["compress", str(src), "-o", str(crsic), "--quiet",
                                                                "--overwrite", *compress_args, *runtime, *encode]))
                    crsic, te, me, ce = encoded[key]
                    td, md, cd = run_usage(py + ["decompress", str(crsic), "-o", str(Path(tmp) / "dec.tif"), "--quiet",
                                                 "--overwrite", *decode_args, *runtime])
                    row = dict(size=size, variant=label, repeat=rep, megapixels=mp, encode_s=te, decode_s=td,
                               encode_cpu_s=ce, decode_cpu_s=cd, encode_peak_mb=me, decode_peak_mb=md,
                               bpp=crsic.stat().st_size * 8 / (width * height))
                    rows.append(row)
                    print(f"{size!s:>6} {label} encode {te:6.1f} s ({ce:6.1f} CPU s, {me:5.0f} MB)  decode {td:6.1f} s "
                          f"({cd:6.1f} CPU s, {md:5.0f} MB)  {row['bpp']:.4f} bpp", flush=True)
    summary = {}
    for label in variants:
        mine = [r for r in rows if r["variant"] == label]
        summary[label] = {k: float(np.median([r[k] for r in mine])) for k in
                          ("encode_s", "decode_s", "encode_cpu_s", "decode_cpu_s", "encode_peak_mb", "decode_peak_mb")}
        print(f"{label} medians: " + ", ".join(f"{k} {v:.1f}" for k, v in summary[label].items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "rows": rows,
                                              "medians": summary}, indent=1) + "\n")
    return 0


def startup_seconds(folder: Path, images: list[Path], runtime: list[str], runs: int = 3) -> float:
    """Start-up to the first tile: the whole ``compress`` process on a 256 px raster (one small
    tile: imports, model and runtime loading, then almost nothing to code), median of ``runs``."""
    src, out = folder / "startup.tif", folder / "startup.crsic"
    build_raster(src, 256, images)
    cmd = [sys.executable, "-m", "core.tile_codec", "compress", str(src), "-o", str(out), "--quiet", "--overwrite",
           *runtime]
    return float(np.median([run(cmd)[0] for _ in range(runs)]))


def avif_encode_seconds(path: Path) -> float:
    """Pillow's AVIF encoder (speed 6, quality 50) on the raster's pixels, in this process."""
    import io

    with rasterio.open(path) as ds:
        img = Image.fromarray(np.ascontiguousarray(ds.read().transpose(1, 2, 0)))
    t0 = time.perf_counter()
    img.save(io.BytesIO(), format="AVIF", quality=50, speed=6)
    return time.perf_counter() - t0


# an AVX2-only host, emulated on a newer one: OpenVINO's kernels and oneDNN's stop at AVX2,
# OpenBLAS takes its Haswell kernels; the ISA cap alone turns bf16 off (runtime.bf16_allowed),
# so the enhancer runs its int8 network with f32 around it, as on a real AVX2 host
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
ISA_ENV = (*AVX2_ENV, "CODERSIC_PRECISION")  # the variables that narrow what the CPU kernels may use


def instruction_sets() -> dict:
    """The CPU's vector extensions that matter to the codec's kernels, and any ``ISA_ENV`` set."""
    flags = set()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu_flags": [f for f in wanted if f in flags], **{k: os.environ[k] for k in ISA_ENV if k in os.environ}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=parse_shape, nargs="+", default=[(2048, 2048), (4096, 4096), (8192, 8192)],
                   help="raster sizes: 8192 (square) or WIDTHxHEIGHT, e.g. 65536x1024")
    p.add_argument("--images", nargs="+", default=sorted(str(x) for x in (ROOT.parent / "shared/data/val/dubai").glob("*.jpg")))
    p.add_argument("--model", default=None, help="model name or .safetensors (default: the shipped one)")
    p.add_argument("--quality", default=None,
                   help="compress quality (default: the CLI's, as a user gets it; rows record it)")
    p.add_argument("--threads", default=None, help="torch threads per process (default: the CLI's)")
    p.add_argument("--processes", default=None, help="worker processes (default: the CLI's, one per core)")
    p.add_argument("--device", default=None, help="torch device for our codec, e.g. cuda (default: the CLI's)")
    p.add_argument("--tile", default=None, help="tile size (default: the codec's)")
    p.add_argument("--enhance", action="store_true",
                   help="also time decoding with the Code-RSIC enhancement (about 10x slower)")
    p.add_argument("--enhancer", default=None, help="(--enhance) enhancer name or file (default: the CLI's)")
    p.add_argument("--no-avif", action="store_true", help="skip the AVIF reference")
    p.add_argument("--runtime", default=None, help="runtime of the float transforms (default: the CLI's)")
    p.add_argument("--baseline", nargs="*", default=[str(ROOT / "results/codec_throughput_v1.json"),
                                                     str(ROOT / "results/enhance_throughput_v1.json")],
                   help="previous version's results (JSONs of this script, merged per size; a later file wins) for the ratios")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("--formats", nargs="+", help="compare container formats (e.g. 2 3) instead, in turns")
    p.add_argument("--enhancers", nargs="+", help="compare the enhanced decoding with these enhancers (names or "
                                                  "files) instead, in turns, on one container")
    p.add_argument("--repeat", type=int, default=1, help="(--formats, --enhancers) rounds of the comparison")
    args = p.parse_args(argv)
    if not args.images:
        sys.exit("no source images: pass --images")
    runtime = (["--model", args.model] if args.model else []) + (["--device", args.device] if args.device else []) \
        + (["--runtime", args.runtime] if args.runtime else []) + (["--threads", args.threads] if args.threads else []) \
        + (["--processes", args.processes] if args.processes else [])
    # compress only; no --quality unless given, so the CLI's default is measured
    encode = (["--quality", args.quality] if args.quality else []) + (["--tile", args.tile] if args.tile else [])
    if args.formats:
        return compare_variants(args, runtime, encode,
                                {f"format {f}": (["--format", f], ["--no-enhance"]) for f in args.formats})
    if args.enhancers:
        return compare_variants(args, runtime, encode,
                                {Path(e).name: ([], ["--enhance", "--enhancer", e]) for e in args.enhancers})
    head = f"{'size':>6} {'MP':>6} {'enc MP/s':>9} {'dec MP/s':>9} {'enc peak MB':>12} {'dec peak MB':>12} {'bpp':>7}"
    print(head + (f" {'enh MP/s':>9} {'enh peak MB':>12}" if args.enhance else ""))
    rows = []
    baseline = {}
    for name in args.baseline:
        if Path(name).exists():
            for r in json.loads(Path(name).read_text())["rows"]:
                baseline.setdefault(r["size"], {}).update(r)
    with tempfile.TemporaryDirectory() as tmp:
        startup = startup_seconds(Path(tmp), [Path(i) for i in args.images], runtime)
        print(f"start-up to the first tile (compress of a 256 px raster, whole process, median of 3): {startup:.2f} s")
        for shape in sorted(args.sizes, key=lambda s: s[0] * s[1]):
            (width, height), size = shape, shape_label(shape)
            src = Path(tmp) / f"mosaic_{size}.tif"
            build_raster(src, shape, [Path(i) for i in args.images])
            crsic, dec = src.with_suffix(".crsic"), Path(tmp) / f"dec_{size}.tif"
            py = [sys.executable, "-m", "core.tile_codec"]
            te, me = run(py + ["compress", str(src), "-o", str(crsic), "--quiet", *runtime, *encode])
            decode = py + ["decompress", str(crsic), "-o", str(dec), "--quiet", *runtime]
            td, md = run(decode + ["--no-enhance"])
            mp = width * height / 1e6
            bpp = crsic.stat().st_size * 8 / (width * height)
            row = dict(size=size, megapixels=mp, quality=float(args.quality or DEFAULT_QUALITY),
                       encode_mp_s=mp / te, decode_mp_s=mp / td,
                       encode_peak_mb=me, decode_peak_mb=md, bpp=bpp)
            line = f"{size!s:>6} {mp:>6.1f} {mp / te:>9.2f} {mp / td:>9.2f} {me:>12.0f} {md:>12.0f} {bpp:>7.3f}"
            if args.enhance:
                dec.unlink()
                # --enhance: left to itself the CLI enhances low rates only (AUTO_ENHANCE_MAX_LAMBDA)
                tx, mx = run(decode + ["--enhance"] + (["--enhancer", args.enhancer] if args.enhancer else []))
                row.update(enhanced_decode_mp_s=mp / tx, enhanced_decode_peak_mb=mx)
                line += f" {mp / tx:>9.2f} {mx:>12.0f}"
            if not args.no_avif:
                row["avif_encode_mp_s"] = mp / avif_encode_seconds(src)
                line += f"  avif {row['avif_encode_mp_s']:.2f} MP/s: enc x{row['encode_mp_s'] / row['avif_encode_mp_s']:.2f}"
                line += f" dec x{row['decode_mp_s'] / row['avif_encode_mp_s']:.2f}"
            prev = baseline.get(size)
            if prev:
                row["vs_previous"] = {k: row[k] / prev[k] for k in ("encode_mp_s", "decode_mp_s", "enhanced_decode_mp_s")
                                      if k in row and k in prev}
                line += "  vs previous " + " ".join(f"{k.split('_')[0]} x{v:.2f}" for k, v in row["vs_previous"].items())
            rows.append(row)
            print(line, flush=True)
            for f in (src, crsic, dec):
                f.unlink()
    print(json.dumps(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "environment": instruction_sets(),
                                              "startup_s": startup, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
