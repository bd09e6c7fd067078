"""Rate-distortion-perception evaluation of our codec against classical codecs.

``python -m core.evaluate DIR [--codecs ours,jpeg,webp,jp2,jxl] [--bpp 0.05 0.1 0.2 0.4]``

For every image, target bitrate and codec, the codec's quality parameter is searched
(safeguarded bisection on log-bpp) until the coded size hits the target bpp; the
decoded image is then scored with PSNR, MS-SSIM, LPIPS (and DISTS on request), and
256 x 256 patches of all decoded images of one (codec, target) pair give FID and KID
against the same patches of the originals. Results: ``results.json``, ``bd_rate.md``
(Bjontegaard delta rate per metric, against JPEG 2000 and against ours), rate-distortion
plots ``rd_<metric>.png`` and encode/decode megapixels per second per codec.

This module is the command line only; the work is in ``core.evaluation`` (``codecs``:
the adapters and ``CODECS``, ``runner``: ``evaluate``, ``report``: the output files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CodecError, exit_now, report
from .evaluation.codec_adapters import CODECS, DEFAULT_CODECS, EvalOptions, Postprocessed, register  # noqa: F401
from .evaluation.images import list_images
from .evaluation.report import markdown_tables, write_outputs
from .evaluation.runner import ALL_METRICS, DEFAULT_BPP, DEFAULT_METRICS, evaluate

PROG = "python -m core.evaluate"


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="folder of images (PNG/JPEG/WebP/GeoTIFF, RGB uint8), searched recursively")
    p.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help=f"comma list of {', '.join(CODECS)}")
    p.add_argument("--bpp", type=float, nargs="+", default=list(DEFAULT_BPP), help="target bits per pixel")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help=f"comma list of {', '.join(ALL_METRICS)}")
    p.add_argument("--limit", type=int, help="use N images, spread evenly over sub-folders")
    p.add_argument("--crop", type=int, help="centre-crop images larger than N x N (saves time on big images)")
    p.add_argument("--model", default=EvalOptions.model, help="our codec: registry name or .safetensors file")
    p.add_argument("--tile", type=int, default=EvalOptions.tile, help="our codec: largest tile side")
    p.add_argument("--tol", type=float, default=0.03, help="relative bpp tolerance of the quality search")
    p.add_argument("--fid-patches", type=int, default=16, help="at most N 256-px patches per image for FID/KID")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: every codec then runs single-threaded, and a shared CPU "
                        "is not oversubscribed); 0 = torch's default")
    p.add_argument("--out", default="results/eval", help="output folder")
    return p


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        paths = list_images(args.dir, args.limit)
        codecs, metrics = _names(args.codecs), _names(args.metrics)
        opts = EvalOptions(model=args.model, tile=args.tile)
        print(f"{len(paths)} images, codecs {', '.join(codecs)}, targets {args.bpp} bpp", flush=True)
        result = evaluate(paths, codecs, args.bpp, metrics, opts, tol=args.tol, crop=args.crop,
                          fid_cap=args.fid_patches, log=lambda s: print(s, flush=True))
        result["config"]["command"] = " ".join([PROG] + list(sys.argv[1:] if argv is None else argv))
        for path in write_outputs(result, Path(args.out)):
            print(f"wrote {path}")
        print(markdown_tables(result))
    except CodecError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    exit_now(main())
