"""Compress GeoTIFFs with learned ELIC tiles, and decode them back.

    python -m core.tile_codec big.tif            # -> big.crsic (prints size, bpp, ratio, time)
    python -m core.tile_codec big.crsic          # -> big.decoded.tif
    python -m core.tile_codec compress big.tif --quality 2 --tile 512   # add --resume after a killed run
    python -m core.tile_codec decompress big.crsic --bbox 500000 4100000 501000 4101000
    python -m core.tile_codec decompress big.crsic --aoi fields.geojson   # only the tiles under the polygons
    python -m core.tile_codec info big.crsic --tiles tiles.gpkg            # tile footprints with bytes, bpp
    python -m core.tile_codec roundtrip big.tif --quality-map q.gpkg       # compress + decode + PSNR per tile
    python -m core.tile_codec diff big.tif big.decoded.tif -o diff.tif     # per-pixel |difference|
    python -m core.tile_codec compress big.tif --workers 4          # tiles on 4 Dask worker processes
    python -m core.tile_codec batch compress scenes/ -o out/ --scheduler tcp://head:8786  # see docs/dask.md
"""

from __future__ import annotations

import json
import os
import sys

from . import usecases
from .cli_args import compress_params, decompress_params, enhance_params, normalise_argv, setup_args
from .errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, BadInput, CodecError, exit_now, report
from .format.json_values import json_safe
from .options import CONTAINER_SUFFIX, DECODED_SUFFIX, ENHANCED_SUFFIX, PRECISION_ENV, RUNTIME_ENV, sizes_text


def _default_output(src: str, suffix: str) -> str:
    from .format.raster_io import output_beside

    return output_beside(src, suffix)


# ---------------------------------------------------------------- progress and printing

_OPEN_BARS: list = []  # progress bars to clear before an error message


def _close_bars() -> None:
    while _OPEN_BARS:
        _OPEN_BARS.pop().close()


def _progress(args, desc: str, unit: str = "tile"):
    """``progress(done, total)`` drawing one tqdm bar (nothing with --quiet)."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
            _OPEN_BARS.append(bar)
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


_UNITS = {"enhance": "window", "diff": "block", "psnr": "raster"}


def _phase_progress(args):
    """``progress(stage, done, total)``, the use cases' form: one bar per stage."""
    bars = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            bars[phase] = _progress(args, phase, _UNITS.get(phase, "tile"))
        bars[phase](done, total)

    return update


def _mapper(args):
    """The tile mapper the options ask for: in-process, or a Dask cluster (context manager)."""
    from .scale.parallel import mapper_for

    return mapper_for(workers=args.workers, scheduler=args.scheduler, torch_threads=args.threads or None,
                      quiet=args.quiet)


def _set_runtime(args) -> None:
    """``--runtime`` and ``--precision`` for this process and the worker processes it starts (they inherit it)."""
    if getattr(args, "runtime", None):
        os.environ[RUNTIME_ENV] = args.runtime
    if getattr(args, "precision", None):
        os.environ[PRECISION_ENV] = args.precision


def _set_threads(args) -> None:
    threads = getattr(args, "threads", 0)
    if threads < 0:
        raise BadInput(f"--threads must be 0 (all cores) or more, got {threads}")
    if threads:
        from .codec.tile_coder import set_threads

        set_threads(threads)


# ---------------------------------------------------------------- commands: arguments -> use case -> printout

def cmd_compress(args) -> dict:
    out = args.output or _default_output(args.input, CONTAINER_SUFFIX)
    with _mapper(args) as mapper:
        res = usecases.compress(args.input, out, compress_params(args), progress=_phase_progress(args), mapper=mapper)
    if not args.json:
        if res["rate_note"]:
            print(f"note: {res['rate_note']}", file=sys.stderr)
        print(f"{args.input} -> {out}: {res['bpp']:.4f} bpp, quality {res['quality']:.2f}, bands {res['bands']}, "
              f"{res['seconds']:.1f} s ({res['megapixels_per_second']:.2f} MP/s)")
        print("  " + sizes_text(res["raw_bytes"], res["bytes"], res["input_bytes"], res["input_label"]))
    return res


def cmd_decompress(args) -> dict:
    params = decompress_params(args)
    out = args.output or _default_output(args.input, DECODED_SUFFIX)
    with _mapper(args) as mapper:
        res = usecases.decompress(args.input, out, params, progress=_phase_progress(args), mapper=mapper)
    if args.json:
        return res
    if not res["enhanced"] and params.enhance is not False:
        print(f"note: not enhanced ({res['enhancement']}): plain ELIC decoding", file=sys.stderr)
    enhanced = f", enhanced (fidelity {res['fidelity']:.2f})" if res["enhanced"] else ""
    print(f"{args.input} -> {out}: window {res['window']}, {res['tiles']} tiles{enhanced}, {res['seconds']:.1f} s "
          f"({res['megapixels_per_second']:.2f} MP/s)")
    return res


def cmd_enhance(args) -> dict:
    out = args.output or _default_output(args.input, ENHANCED_SUFFIX)
    res = usecases.enhance(args.input, out, enhance_params(args), overwrite=args.overwrite, cog=args.cog,
                           progress=_phase_progress(args))
    if not args.json:
        print(f"{args.input} -> {out}: fidelity {res['fidelity']:.2f}, {res['windows']} windows, "
              f"{res['seconds']:.1f} s ({res['megapixels_per_second']:.2f} MP/s)")
    return res


def cmd_info(args) -> dict:
    info = usecases.info(args.input, tiles=args.tiles, overwrite=args.overwrite)
    if not args.json:
        print(f"{args.input}: {info['width']} x {info['height']} px, {len(info['bands'])} band(s) {info['bands']} "
              f"of {info['source_band_count']}, {info['dtype']}")
        print(f"  {info['bpp']:.4f} bpp; {sizes_text(info['raw_bytes'], info['file_bytes'])}")
        print("  band groups: " + ", ".join(f"bands {','.join(map(str, g['bands']))} {g['bpp']:.4f} bpp"
                                            for g in info["band_groups"]))
        print(f"  model {info['model']['name']} (weights {info['model']['sha256'][:12]}), quality {info['quality']:.2f}")
        portability = (f"portable: decodes bit-exactly on any machine (integer entropy {info['entropy']})"
                       if info["portable"] else "not portable: float entropy model, decode with the software, "
                       "device and thread count that encoded it")
        print(f"  format {info['format']}, {portability}")
        print(f"  tiles {info['tile_rows']} x {info['tile_cols']} of {info['tile']} px, " + (
            f"latent margin {info['latent_margin']}" if info.get("latent_margin") is not None else f"overlap {info['overlap']}"))
        crs = (info["crs"] or "none").split("\n")[0][:80]
        print(f"  crs {crs}; transform {info['transform']}; nodata {info['nodata']}")
        if args.tiles:
            print(f"  tile map: {args.tiles} ({info['tile_map']['tiles']} footprints)")
    return info


def cmd_roundtrip(args) -> dict:
    """Plain codec round trip (no enhancement): bpp and PSNR against the input."""
    metrics, missing = {}, {}
    if args.quality_map:
        from .evaluation.tile_metrics import tile_metrics

        metrics, missing = tile_metrics()
    res = usecases.roundtrip(args.input, compress_params(args), decoded=args.output, quality_map=args.quality_map,
                             metrics=metrics, progress=_phase_progress(args))
    if args.quality_map:
        res["quality_map"]["missing"] = missing
    if not args.json:
        print(f"{args.input}: {res['bpp']:.4f} bpp, PSNR {res['psnr']:.2f} dB, {sizes_text(res['raw_bytes'], res['bytes'])}, "
              f"encode {res['encode_seconds']:.1f} s, decode {res['decode_seconds']:.1f} s")
        if args.quality_map:
            q = res["quality_map"]
            print(f"quality map: {args.quality_map} ({', '.join(q['metrics'])} per tile; PSNR {q['psnr_min']:.2f} "
                  f"to {q['psnr_max']:.2f} dB)" + "".join(f"; {why}" for why in missing.values()))
    return res


def cmd_diff(args) -> dict:
    out = args.output or _default_output(args.other, ".diff.tif")
    res = usecases.diff(args.input, args.other, out, bands=args.bands, overwrite=args.overwrite,
                        progress=_phase_progress(args))
    if not args.json:
        mean = "no valid pixels" if res["mean_abs_diff"] is None else f"mean |diff| {res['mean_abs_diff']:.3f}"
        print(f"{args.other} vs {args.input} -> {out}: {mean}, max {res['max_abs_diff']}")
    return res


def cmd_batch(args) -> dict:
    from .scale.batch import progress_bar, run_batch, summary_lines

    mode = args.batch_command
    compress = compress_params(args) if mode == "compress" else None
    decompress = decompress_params(args) if mode == "decompress" else None
    with _mapper(args) as mapper:
        progress, close = progress_bar(args.quiet or args.json)  # after the cluster's start-up
        try:
            res = run_batch(mode, args.inputs, args.output_dir, compress=compress, decompress=decompress,
                            overwrite=args.overwrite, skip_existing=args.skip_existing, mapper=mapper,
                            concurrency=args.concurrent, progress=progress)
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


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "roundtrip": cmd_roundtrip,
            "enhance": cmd_enhance, "diff": cmd_diff, "batch": cmd_batch}


def main(argv: list[str] | None = None) -> int:
    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = setup_args(__doc__)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        _set_threads(args)
        _set_runtime(args)
        res = COMMANDS[args.command](args)
    except CodecError as exc:
        _close_bars()
        return report(exc)
    except OSError as exc:  # the file system said no (permissions, disk full...)
        _close_bars()
        return report(CodecError(str(exc)))
    except KeyboardInterrupt:
        _close_bars()
        if args.command != "batch":  # batch says which outputs are kept
            print("interrupted: no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if getattr(args, "json", False):
        print(json.dumps(json_safe(res), allow_nan=False))
    return EXIT_USER_ERROR if args.command == "batch" and res["failed"] else 0


if __name__ == "__main__":
    exit_now(main())
