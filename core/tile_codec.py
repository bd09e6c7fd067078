"""Compress GeoTIFFs with learned ELIC tiles, and decode them back.

    python -m core.tile_codec big.tif            # -> big.crsic (prints size, bpp, ratio, time)
    python -m core.tile_codec big.crsic          # -> big.decoded.tif
    python -m core.tile_codec compress big.tif --quality 2 --tile 512 --overlap 32
    python -m core.tile_codec decompress big.crsic --bbox 500000 4100000 501000 4101000
    python -m core.tile_codec info big.crsic
    python -m core.tile_codec roundtrip big.tif  # compress + decode + PSNR
    python -m core.tile_codec compress big.tif --workers 4          # tiles on 4 Dask worker processes
    python -m core.tile_codec batch compress scenes/ -o out/ --scheduler tcp://head:8786  # see docs/dask.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from .tiling import DEFAULT_TILE

SUBCOMMANDS = ("compress", "decompress", "info", "roundtrip", "enhance", "batch")


def _bands(text: str) -> list[int]:
    try:
        return [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be comma-separated numbers like 1,2,3, not '{text}'") from None


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model name from the registry or a .safetensors file (default: elic-lite for compress, "
                        "the container's model for decompress)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (decode on the device type that encoded)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def _add_compress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quality", type=float, default=3.0,
                   help="rate level, 0 (smallest file) to 6 (best quality); fractions allowed; 1..6 are the trained levels, below 1 is extrapolated (default 3)")
    p.add_argument("--target-bpp", type=float, default=None,
                   help="aim for this many bits per pixel instead of --quality (searched on sample tiles)")
    p.add_argument("--bands", type=_bands, default=None,
                   help="1-based bands to code, e.g. 1,2,3 or 4 (default: the RGB bands, else the first three)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size in pixels, a multiple of 64 is best (default {DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=32,
                   help="pixels shared by neighbouring tiles, blended on decode to hide seams (default 32)")


def setup_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.tile_codec",
        description="Code-RSIC: learned compression for large GeoTIFFs. Give a raster to compress it, "
                    "or a .crsic container to decode it, or use a subcommand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="command", metavar="{compress,decompress,info,roundtrip,enhance,batch}")

    c = sub.add_parser("compress", help="GeoTIFF -> .crsic container")
    c.add_argument("input", help="raster to compress (GeoTIFF or anything GDAL reads)")
    c.add_argument("-o", "--output", help="container path (default: INPUT with .crsic suffix)")
    _add_compress_options(c)
    _add_runtime(c)
    _add_cluster(c)

    d = sub.add_parser("decompress", help=".crsic container -> GeoTIFF (all of it, or a window)")
    d.add_argument("input", help=".crsic container")
    d.add_argument("-o", "--output", help="GeoTIFF path (default: INPUT with .decoded.tif suffix)")
    d.add_argument("--window", type=int, nargs=4, metavar=("COL", "ROW", "WIDTH", "HEIGHT"),
                   help="decode only this pixel window (only the tiles it touches are read)")
    d.add_argument("--bbox", type=float, nargs=4, metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
                   help="decode only this bounding box, in the raster's CRS")
    d.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    _add_enhance_options(d, in_decompress=True)
    _add_runtime(d)
    _add_cluster(d)

    i = sub.add_parser("info", help="describe a .crsic container")
    i.add_argument("input", help=".crsic container")
    i.add_argument("--json", action="store_true", help="print the header as JSON")

    r = sub.add_parser("roundtrip", help="compress, decode and report bpp and PSNR against the input")
    r.add_argument("input", help="raster to test")
    r.add_argument("-o", "--output", help="keep the decoded GeoTIFF here (default: a temporary file)")
    _add_compress_options(r)
    _add_runtime(r)

    e = sub.add_parser("enhance", help="enhance any decoded raster (e.g. a JPEG-compressed GeoTIFF), keeping "
                                       "its georeferencing")
    e.add_argument("input", help="raster to enhance (uint8 or uint16)")
    e.add_argument("-o", "--output", help="GeoTIFF path (default: INPUT with .enhanced.tif suffix)")
    e.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    _add_enhance_options(e, in_decompress=False)
    _add_runtime(e)
    _add_batch_parser(sub)
    return parser


def _add_enhance_options(p: argparse.ArgumentParser, in_decompress: bool) -> None:
    if in_decompress:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--enhance", action="store_true",
                       help="always run the Code-RSIC enhancer (default: only for the low qualities it is "
                            "trained for, quality <= 4 with the shipped enhancer)")
        g.add_argument("--no-enhance", action="store_true",
                       help="plain ELIC decoding, without the Code-RSIC enhancer (faster, closest PSNR)")
    p.add_argument("--fidelity", type=float, default=None,
                   help="enhancer fidelity w in [0, 1]: 0 = most texture from the codebook prior, "
                        "1 = closest to the decoded pixels (default: the enhancer's, see docs/enhancement.md)")
    p.add_argument("--enhancer", default=None, help="enhancer weights: registry name or .safetensors file")
    p.add_argument("--enhance-window", type=int, default=256, help="enhancer window size in pixels (default 256)")


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Dask (see docs/dask.md)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="code tiles on a local Dask cluster of N worker processes; --threads then sets torch "
                        "threads per worker (default: the cores shared out). Default: in this process, no Dask")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="code tiles on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (workers need code-rsic, "
                        "the weights and the same files at the same paths)")


def _mapper(args):
    """The tile mapper the options ask for: in-process, or a Dask cluster (context manager)."""
    from .parallel import mapper_for

    return mapper_for(workers=args.workers, scheduler=args.scheduler, torch_threads=args.threads or None,
                      quiet=args.quiet)


def _add_batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="compress or decode many rasters (folders, globs, list files), one output each")
    modes = b.add_subparsers(dest="batch_command", metavar="{compress,decompress}", required=True)
    inputs_help = ("rasters, folders (their {} files), quoted globs ('scenes/**/*.tif') or list files "
                   "(.txt/.lst or @FILE, one path a line)")
    bc = modes.add_parser("compress", help="rasters -> .crsic containers")
    bc.add_argument("inputs", nargs="+", help=inputs_help.format(".tif/.tiff/.vrt/.jp2/.img"))
    bd = modes.add_parser("decompress", help=".crsic containers -> GeoTIFFs")
    bd.add_argument("inputs", nargs="+", help=inputs_help.format(".crsic"))
    bd.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    _add_enhance_options(bd, in_decompress=True)
    _add_compress_options(bc)
    for p in (bc, bd):
        p.add_argument("-o", "--output-dir", help="folder for the outputs (default: next to each input)")
        p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists (resume a batch)")
        p.add_argument("--concurrent", type=int, default=None, metavar="K",
                       help="rasters in progress at once on Dask (default: the workers' threads, at most 64 "
                            "for compress, 8 for decompress)")
        _add_runtime(p)
        _add_cluster(p)


def cmd_batch(args) -> dict:
    from .batch import progress_bar, run_batch, summary_lines

    decode_options = None
    if args.batch_command == "decompress":
        decode_options = {"model": args.model, "device": args.device, "cog": args.cog, "enhance": _enhance_choice(args),
                          "fidelity": args.fidelity, "enhancer": args.enhancer, "window_size": args.enhance_window}
    with _mapper(args) as mapper:
        progress, close = progress_bar(args.quiet or args.json)  # after the cluster's start-up
        # decoding holds a strip of tiles per raster on the client: fewer at once
        cap = 64 if args.batch_command == "compress" else 8
        concurrent = args.concurrent or min(cap, max(1, getattr(mapper, "worker_threads", 1)))
        try:
            res = run_batch(args.batch_command, args.inputs, args.output_dir,
                            compress_options=_compress_options(args) if args.batch_command == "compress" else None,
                            decode_options=decode_options, overwrite=args.overwrite,
                            skip_existing=args.skip_existing, mapper=mapper, concurrency=concurrent,
                            progress=progress)
        except KeyboardInterrupt:
            close()
            print("interrupted: finished rasters are kept, the others were not written "
                  "(run again with --skip-existing to go on)", file=sys.stderr)
            raise
        finally:
            close()
    if not args.json:
        print("\n".join(summary_lines(res)))
    return res


def _normalise_argv(argv: list[str]) -> list[str]:
    """`tile_codec FILE ...` without a subcommand: pick compress or decompress by suffix."""
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        return (["decompress"] if argv[0].lower().endswith(".crsic") else ["compress"]) + argv
    return argv


_OPEN_BARS: list = []  # progress bars to clear before an error message


def _close_bars() -> None:
    while _OPEN_BARS:
        _OPEN_BARS.pop().close()


def _progress(args, desc: str):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="tile", file=sys.stderr, leave=False)
            _OPEN_BARS.append(bar)
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def _compress_options(args):
    from .codec import CompressOptions
    from .models import DEFAULT_MODEL

    return CompressOptions(model=args.model or DEFAULT_MODEL, quality=args.quality, target_bpp=args.target_bpp,
                           bands=args.bands, tile=args.tile, overlap=args.overlap, device=args.device,
                           overwrite=args.overwrite)


def cmd_compress(args) -> dict:
    from .codec import compress_raster

    out = args.output or str(Path(args.input).with_suffix(".crsic"))
    with _mapper(args) as mapper:
        res = compress_raster(args.input, out, _compress_options(args), progress=_progress(args, "compress"),
                              mapper=mapper)
    if not args.json:
        print(f"{args.input} -> {out}: {_fmt_bytes(res['bytes'])}, {res['bpp']:.4f} bpp, ratio {res['ratio']:.1f}:1, "
              f"quality {res['quality']:.2f}, {res['seconds']:.1f} s ({res['megapixels_per_second']:.2f} MP/s)")
    return res


def _enhance_choice(args) -> bool | None:
    """--enhance: True, --no-enhance: False, neither: None (the enhancer's default for the file's quality).

    Refuses --no-enhance together with --fidelity, which would be silently ignored.
    """
    if args.no_enhance and args.fidelity is not None:
        from .errors import CodecError

        raise CodecError("give --no-enhance or --fidelity, not both")
    return True if args.enhance else (False if args.no_enhance else None)


def cmd_decompress(args) -> dict:
    from .codec import decompress_raster

    if args.window and args.bbox:
        from .errors import CodecError

        raise CodecError("give --window or --bbox, not both")
    out = args.output or str(Path(args.input).with_suffix(".decoded.tif"))
    enhance = _enhance_choice(args)
    from .enhance_raster import decompress_enhanced

    with _mapper(args) as mapper:
        res = decompress_enhanced(args.input, out, enhance=enhance, fidelity=args.fidelity,
                                  enhancer=args.enhancer, window_size=args.enhance_window, window=args.window,
                                  bbox=args.bbox, model=args.model, device=args.device, overwrite=args.overwrite,
                                  cog=args.cog, progress=_progress(args, "decode"), mapper=mapper)
    if not args.json and not res["enhanced"] and not args.no_enhance:
        print(f"note: not enhanced ({res['enhancement']}): plain ELIC decoding", file=sys.stderr)
    if not args.json:
        print(f"{args.input} -> {out}: window {res['window']}, {res['tiles']} tiles, {res['seconds']:.1f} s "
              f"({res['megapixels_per_second']:.2f} MP/s)")
    return res


def cmd_enhance(args) -> dict:
    from .enhance_raster import enhance_raster

    out = args.output or str(Path(args.input).with_suffix(".enhanced.tif"))
    res = enhance_raster(args.input, out, fidelity=args.fidelity, enhancer=args.enhancer, device=args.device,
                         window=args.enhance_window, overwrite=args.overwrite, cog=args.cog,
                         progress=_progress(args, "enhance"))
    if not args.json:
        print(f"{args.input} -> {out}: fidelity {res['fidelity']:.2f}, {res['windows']} windows, "
              f"{res['seconds']:.1f} s ({res['megapixels_per_second']:.2f} MP/s)")
    return res


def cmd_info(args) -> dict:
    from .codec import container_info

    info = container_info(args.input)
    if not args.json:
        print(f"{args.input}: {info['width']} x {info['height']} px, {len(info['bands'])} band(s) {info['bands']} "
              f"of {info['source_band_count']}, {info['dtype']}")
        print(f"  size {_fmt_bytes(info['file_bytes'])}, {info['bpp']:.4f} bpp, ratio {info['ratio']:.1f}:1")
        print(f"  model {info['model']['name']} (weights {info['model']['sha256'][:12]}), quality {info['quality']:.2f}")
        print(f"  tiles {info['tile_rows']} x {info['tile_cols']} of {info['tile']} px, overlap {info['overlap']}")
        crs = (info["crs"] or "none").split("\n")[0][:80]
        print(f"  crs {crs}; transform {info['transform']}; nodata {info['nodata']}")
    return info


def cmd_roundtrip(args) -> dict:
    from .codec import compress_raster, decompress_raster
    from .quality import raster_psnr

    with tempfile.TemporaryDirectory() as tmp:
        container = Path(tmp) / (Path(args.input).stem + ".crsic")
        c = compress_raster(args.input, container, _compress_options(args), progress=_progress(args, "compress"))
        decoded = args.output or str(Path(tmp) / "decoded.tif")
        d = decompress_raster(container, decoded, model=args.model, device=args.device, overwrite=args.overwrite,
                              progress=_progress(args, "decode"))
        psnr = raster_psnr(args.input, decoded, bands=args.bands)
    res = {"bytes": c["bytes"], "bpp": c["bpp"], "ratio": c["ratio"], "quality": c["quality"], "psnr": psnr,
           "encode_seconds": c["seconds"], "decode_seconds": d["seconds"]}
    if not args.json:
        print(f"{args.input}: {c['bpp']:.4f} bpp, ratio {c['ratio']:.1f}:1, PSNR {psnr:.2f} dB, "
              f"encode {c['seconds']:.1f} s, decode {d['seconds']:.1f} s")
    return res


def main(argv: list[str] | None = None) -> int:
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = setup_args()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import CodecError

    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    try:
        res = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info,
               "roundtrip": cmd_roundtrip, "enhance": cmd_enhance, "batch": cmd_batch}[args.command](args)
    except CodecError as exc:
        _close_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command != "batch":  # batch says which outputs are kept
            print("interrupted: no output was written", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(res, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    return 1 if args.command == "batch" and res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
