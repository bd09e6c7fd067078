"""The command line's arguments: its argparse tree, and arguments -> job parameters.

The tree of ``python -m core.tile_codec`` and how its arguments become the job parameters
of ``core.options``; the commands themselves are in ``core.tile_codec``."""

from __future__ import annotations

import argparse
import sys

from . import usecases
from .errors import BadInput, report
from .options import (
    CONTAINER_SUFFIX,
    DECODED_SUFFIX,
    DEFAULT_DEVICE,
    DEFAULT_ENHANCE_WINDOW,
    DEFAULT_ENHANCER,
    DEFAULT_FORMAT,
    DEFAULT_MODEL,
    DEFAULT_MODEL_CHOICE,
    DEFAULT_MODEL_LEVELS,
    DEFAULT_OVERLAP,
    LEGACY_OVERLAP,
    DEFAULT_QUALITY,
    DEFAULT_TILE,
    DEVICES,
    ENHANCED_SUFFIX,
    FIDELITY_RANGE,
    FORMAT_VERSIONS,
    MIN_QUALITY,
    PRECISION_CHOICES,
    RUNTIME_CHOICES,
    RUNTIME_PREFERENCE,
    TILE_MULTIPLE,
    CompressParams,
    DecompressParams,
    EnhanceParams,
)

SUBCOMMANDS = ("compress", "decompress", "info", "roundtrip", "enhance", "diff", "batch")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one error rule: usage, one ``error:`` line, exit status 1."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        sys.exit(report(BadInput(message)))


# ---------------------------------------------------------------- arguments

def _bands(text: str) -> list[int]:
    try:
        return [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be comma-separated numbers like 1,2,3, not '{text}'") from None


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help=f"model name from the registry or a .safetensors file (default for compress: "
                        f"{DEFAULT_MODEL_CHOICE}; for decompress: the container's model)")
    p.add_argument("--device", default=DEFAULT_DEVICE,
                   help=f"torch device: {' or '.join(DEVICES)} (default {DEFAULT_DEVICE}); format-2 files decode on "
                        "any device, format-1 files only on the device type that encoded them")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="runtime of the float transforms on the CPU (default: $CODERSIC_RUNTIME, else auto: the "
                        f"fastest installed of {', '.join(RUNTIME_PREFERENCE)}); files decode under any runtime")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="float precision of the transforms on OpenVINO (default: $CODERSIC_PRECISION, else auto: "
                        "bf16 where the CPU computes it natively, else f32)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def _add_compress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quality", type=float, default=DEFAULT_QUALITY,
                   help=f"rate level, {MIN_QUALITY:g} (smallest file) to the model's trained levels "
                        f"({DEFAULT_MODEL_LEVELS} for {DEFAULT_MODEL}); fractions allowed; below 1 is "
                        f"extrapolated (default {DEFAULT_QUALITY:g})")
    p.add_argument("--target-bpp", type=float, default=None,
                   help="aim for this many bits per pixel instead of --quality (searched on sample tiles)")
    p.add_argument("--bands", type=_bands, default=None,
                   help="1-based bands to code, e.g. 1,2,3 or 4 (default: every band, in groups of three)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"tile size in pixels, a multiple of {TILE_MULTIPLE} is best (default {DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=None,
                   help=f"formats 1 and 2: pixels shared by neighbouring tiles, blended on decode to hide seams "
                        f"(default {LEGACY_OVERLAP}); format 3 tiles do not overlap (default {DEFAULT_OVERLAP})")
    p.add_argument("--format", type=int, choices=FORMAT_VERSIONS, default=DEFAULT_FORMAT,
                   help=f"container format: 3 codes tiles without overlap and synthesises them across their "
                        f"borders; 2 codes overlapping tiles, each decoded alone; both decode bit-exactly on "
                        f"any machine; 1 only where the encoder's float kernels are reproduced "
                        f"(default {DEFAULT_FORMAT})")


def _add_enhance_options(p: argparse.ArgumentParser, in_decompress: bool) -> None:
    if in_decompress:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--enhance", action="store_true",
                       help="always run the Code-RSIC enhancer (default: only for the low rates it is trained "
                            f"for, quality <= {usecases.auto_enhance_quality():g} of {DEFAULT_MODEL} with the shipped "
                            "enhancer)")
        g.add_argument("--no-enhance", action="store_true",
                       help="plain ELIC decoding, without the Code-RSIC enhancer (faster, closest PSNR)")
    lo, hi = FIDELITY_RANGE
    p.add_argument("--fidelity", type=float, default=None,
                   help=f"enhancer fidelity w in [{lo:g}, {hi:g}]: {lo:g} = most texture from the codebook prior, "
                        f"{hi:g} = closest to the decoded pixels (default: the enhancer's, see docs/enhancement.md)")
    p.add_argument("--enhancer", default=None,
                   help=f"enhancer weights: registry name or .safetensors file (default {DEFAULT_ENHANCER})")
    p.add_argument("--enhance-window", type=int, default=DEFAULT_ENHANCE_WINDOW,
                   help=f"enhancer window size in pixels (default {DEFAULT_ENHANCE_WINDOW})")


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Dask (see docs/dask.md)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="code tiles on a local Dask cluster of N worker processes; --threads then sets torch "
                        "threads per worker (default: the cores shared out). Default: in this process, no Dask")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="code tiles on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (workers need code-rsic, "
                        "the weights and the same files at the same paths)")


def _add_batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="compress or decode many rasters (folders, globs, list files), one output each")
    modes = b.add_subparsers(dest="batch_command", metavar="{compress,decompress}", required=True)
    inputs_help = ("rasters, folders (their {} files), quoted globs ('scenes/**/*.tif') or list files "
                   "(.txt/.lst or @FILE, one path a line)")
    bc = modes.add_parser("compress", help=f"rasters -> {CONTAINER_SUFFIX} containers")
    bc.add_argument("inputs", nargs="+", help=inputs_help.format(".tif/.tiff/.vrt/.jp2/.img"))
    _add_compress_options(bc)
    bd = modes.add_parser("decompress", help=f"{CONTAINER_SUFFIX} containers -> GeoTIFFs")
    bd.add_argument("inputs", nargs="+", help=inputs_help.format(CONTAINER_SUFFIX))
    bd.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    _add_enhance_options(bd, in_decompress=True)
    for p in (bc, bd):
        p.add_argument("-o", "--output-dir", help="folder for the outputs (default: next to each input)")
        p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists (resume a batch)")
        p.add_argument("--concurrent", type=int, default=None, metavar="K",
                       help="rasters in progress at once on Dask (default: the workers' threads, at most 64 "
                            "for compress, 8 for decompress)")
        _add_runtime(p)
        _add_cluster(p)


def setup_args(epilog: str = "") -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m core.tile_codec",
        description="Code-RSIC: learned compression for large GeoTIFFs. Give a raster to compress it, "
                    f"or a {CONTAINER_SUFFIX} container to decode it, or use a subcommand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog,
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")

    c = sub.add_parser("compress", help=f"GeoTIFF -> {CONTAINER_SUFFIX} container")
    c.add_argument("input", help="raster to compress (GeoTIFF or anything GDAL reads)")
    c.add_argument("-o", "--output", help=f"container path (default: INPUT with {CONTAINER_SUFFIX} suffix)")
    _add_compress_options(c)
    c.add_argument("--resume", action="store_true", help="continue the partial file a killed run of this same "
                   "command left (format 3): the result is the same bytes as an uninterrupted run")
    _add_runtime(c)
    _add_cluster(c)

    d = sub.add_parser("decompress", help=f"{CONTAINER_SUFFIX} container -> GeoTIFF (all of it, or a window)")
    d.add_argument("input", help=f"{CONTAINER_SUFFIX} container")
    d.add_argument("-o", "--output", help=f"GeoTIFF path (default: INPUT with {DECODED_SUFFIX} suffix)")
    d.add_argument("--window", type=int, nargs=4, metavar=("COL", "ROW", "WIDTH", "HEIGHT"),
                   help="decode only this pixel window (only the tiles it touches are read)")
    d.add_argument("--bbox", type=float, nargs=4, metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
                   help="decode only this bounding box, in the raster's CRS")
    d.add_argument("--aoi", metavar="AREA", help="decode only the tiles under these polygons (GeoJSON or WKT "
                   "file, any CRS); pixels outside them are nodata, or masked")
    d.add_argument("--aoi-crs", metavar="CRS", help="CRS of --aoi when its file names none (default: EPSG:4326 "
                   "for GeoJSON, the raster's for WKT)")
    d.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    _add_enhance_options(d, in_decompress=True)
    _add_runtime(d)
    _add_cluster(d)

    i = sub.add_parser("info", help=f"describe a {CONTAINER_SUFFIX} container")
    i.add_argument("input", help=f"{CONTAINER_SUFFIX} container")
    i.add_argument("--json", action="store_true", help="print the header as JSON")
    i.add_argument("--tiles", metavar="MAP", help="write the tiles' footprints with bytes and bpp (.geojson/.gpkg)")
    i.add_argument("--overwrite", action="store_true", help="replace the --tiles file if it exists")

    r = sub.add_parser("roundtrip", help="compress, decode and report bpp and PSNR against the input")
    r.add_argument("input", help="raster to test")
    r.add_argument("-o", "--output", help="keep the decoded GeoTIFF here (default: a temporary file)")
    r.add_argument("--quality-map", metavar="MAP", help="write each tile's footprint with bytes, bpp, PSNR (and "
                   "LPIPS once the metric weights are set up) as .gpkg or .geojson")
    _add_compress_options(r)
    _add_runtime(r)

    f = sub.add_parser("diff", help="per-pixel absolute difference of two rasters (mean over the bands), as a "
                                    "georeferenced float32 GeoTIFF")
    f.add_argument("input", help="the first raster, e.g. the original")
    f.add_argument("other", help="the second raster on the same pixel grid (may be a window of the first)")
    f.add_argument("-o", "--output", help="GeoTIFF path (default: OTHER with .diff.tif suffix)")
    f.add_argument("--bands", type=_bands, default=None,
                   help="bands of INPUT compared with OTHER's (default: all, or the RGB / first three)")
    f.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--json", action="store_true", help="print the result as one JSON line")

    e = sub.add_parser("enhance", help="enhance any decoded raster (e.g. a JPEG-compressed GeoTIFF), keeping "
                                       "its georeferencing")
    e.add_argument("input", help="raster to enhance (uint8 or uint16)")
    e.add_argument("-o", "--output", help=f"GeoTIFF path (default: INPUT with {ENHANCED_SUFFIX} suffix)")
    e.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    _add_enhance_options(e, in_decompress=False)
    _add_runtime(e)
    _add_batch_parser(sub)
    return parser


def normalise_argv(argv: list[str]) -> list[str]:
    """`tile_codec FILE ...` without a subcommand: pick compress or decompress by suffix."""
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        return (["decompress"] if argv[0].lower().endswith(CONTAINER_SUFFIX) else ["compress"]) + argv
    return argv


# ---------------------------------------------------------------- arguments -> job parameters

def compress_params(args) -> CompressParams:
    overlap = args.overlap if args.overlap is not None else (DEFAULT_OVERLAP if args.format == 3 else LEGACY_OVERLAP)
    return CompressParams(model=args.model, quality=args.quality, target_bpp=args.target_bpp,
                          bands=args.bands, tile=args.tile, overlap=overlap, device=args.device,
                          overwrite=args.overwrite, format=args.format,
                          resume=getattr(args, "resume", False)).validate()


def enhance_params(args) -> EnhanceParams:
    return EnhanceParams(fidelity=args.fidelity, enhancer=args.enhancer, window=args.enhance_window,
                         device=args.device).validate()


def decompress_params(args) -> DecompressParams:
    """--enhance: True, --no-enhance: False, neither: "auto" (the enhancer's rule for the file's quality)."""
    window, bbox = getattr(args, "window", None), getattr(args, "bbox", None)
    enhance = True if args.enhance else (False if args.no_enhance else "auto")
    return DecompressParams(model=args.model, device=args.device, window=tuple(window) if window else None,
                            bbox=tuple(bbox) if bbox else None, aoi=getattr(args, "aoi", None),
                            aoi_crs=getattr(args, "aoi_crs", None), overwrite=args.overwrite, cog=args.cog,
                            enhance=enhance,
                            enhancement=EnhanceParams(fidelity=args.fidelity, enhancer=args.enhancer,
                                                      window=args.enhance_window)).validate()
