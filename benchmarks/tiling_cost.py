"""What tiling costs: bits spent on tile overlap, and seams, for several tile / overlap choices.

Tiles overlap so the decoder can blend them without seams, but the overlap is coded
twice (768 px tiles with 32 px overlap code about 9 % more pixels than the raster has).
This compresses one mosaic of real aerial images with each (tile, overlap) at a few
qualities, decodes it plainly, and reports bpp, PSNR over the raster, PSNR in the seam
bands (pixels within 4 px of where this configuration's tiles meet) and how much worse
that is than the anchor's decode on the same pixels, beyond their overall difference (the
seam penalty: the content near the seams is the same for both, so only the seams differ), and per configuration the BD-rate
(PSNR) against the anchor (the first configuration, the default tiling).

    python benchmarks/tiling_cost.py --size 2048 --configs 768/32 768/16 768/0 1024/32 \
        --qualities 1 3 5 --out results/tiling_cost.json

``--formats`` compares container formats instead (``FORMAT:TILE/OVERLAP`` each, the first the
anchor, e.g. format 2's default tiling against format 3's), on two large rasters: a mosaic of
the UC Merced val scenes (>= 8 MP) and the continuous raster of the two Dubai val images.
Per raster and configuration: bpp and PSNR at each quality, the BD-rate (PSNR) against the
anchor, and the seam figure: the squared error within 4 px of every border where two of the
configuration's tiles meet (format 2: the middle of the overlap), divided by the raster's
mean squared error (1.0: the borders are like any other pixels). It also writes the crop
across a tile corner (original, anchor, the second configuration) as a PNG.

    python benchmarks/tiling_cost.py --formats 2:768/32 3:768 3:512 --qualities 1 2 4 6 \
        --out results/tiling_cost_format3.json --crop docs/img/format3_tile_corner.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import build_raster, cli_roundtrip, dubai_pair, write_rgb  # noqa: E402

from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.evaluation.metrics import psnr  # noqa: E402
from core.format.tiling import TileGrid  # noqa: E402
from core.options import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: E402

SEAM = 4  # half-width of a seam band in pixels


def seam_mask(size: int, tile: int, overlap: int) -> np.ndarray:
    """True within SEAM px of the middle of every overlap between neighbouring tiles."""
    grid = TileGrid(size, size, tile, overlap)
    lines = [start + overlap // 2 for start in grid.col_starts[1:]]
    band = np.zeros(size, bool)
    for x in lines:
        band[max(0, x - SEAM): x + SEAM] = True
    return band[None, :] | band[:, None]


def border_lines(size: int, tile: int, overlap: int) -> list[int]:
    """Where neighbouring tiles meet along one axis (format 2: the middle of each overlap)."""
    grid = TileGrid(size, size, tile, overlap)
    return [start + overlap // 2 for start in grid.col_starts[1:]]


def seam_figure(ref: np.ndarray, out: np.ndarray, tile: int, overlap: int) -> float:
    """Mean squared error within SEAM px of every tile border / the raster's mean squared error."""
    _, h, w = ref.shape
    band = np.zeros((h, w), bool)
    for x in border_lines(w, tile, overlap):
        band[:, max(0, x - SEAM): x + SEAM] = True
    for y in border_lines(h, tile, overlap):
        band[max(0, y - SEAM): y + SEAM, :] = True
    err = (ref.astype(np.float64) - out.astype(np.float64)) ** 2
    return float(err[:, band].mean() / err.mean())


def ucmerced_mosaic(path: Path, side: int) -> None:
    """A side x side mosaic of distinct UC Merced val scenes (256 px), class after class, rolled
    by half a scene."""
    from PIL import Image

    scenes = sorted((ROOT.parent / "shared/data/val/ucmerced").glob("*/*"))
    n = side // 256
    if len(scenes) < n * n:
        sys.exit(f"{len(scenes)} scenes make no {side} px mosaic")
    pick = [scenes[i] for i in np.linspace(0, len(scenes) - 1, n * n).round().astype(int)]
    img = np.zeros((3, n * 256, n * 256), np.uint8)
    for k, scene in enumerate(pick):
        r, c = divmod(k, n)
        img[:, r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = np.asarray(
            Image.open(scene).convert("RGB").resize((256, 256))).transpose(2, 0, 1)
    # scene edges 128 px off the tile grid: no tile border may fall on a scene edge (an edge
    # between two unrelated images is worse to code for any tiling, and would count as a seam)
    write_rgb(path, np.roll(img, (128, 128), axis=(1, 2)))


def corner_crop(path: Path, ref: np.ndarray, decodes: list[tuple[str, np.ndarray]], at: int, half: int = 48,
                zoom: int = 3) -> None:
    """Side by side: the original and each decode, ``2 half`` px around (at, at), enlarged."""
    from PIL import Image, ImageDraw

    panels = [("original", ref)] + decodes
    crops = [np.asarray(Image.fromarray(a[:, at - half: at + half, at - half: at + half].transpose(1, 2, 0))
                        .resize((2 * half * zoom,) * 2, Image.NEAREST)) for _, a in panels]
    gap, label = 8, 18
    canvas = Image.new("RGB", (len(crops) * (2 * half * zoom + gap) - gap, 2 * half * zoom + label), "white")
    draw = ImageDraw.Draw(canvas)
    for k, ((name, _), crop) in enumerate(zip(panels, crops)):
        x = k * (2 * half * zoom + gap)
        canvas.paste(Image.fromarray(crop), (x, label))
        draw.text((x + 4, 3), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _summary(rows: list[dict], configs, name: str, quiet: bool = False) -> dict:
    """Per configuration: BD-rate (PSNR) against the first, and its seam figures."""
    summary = {}
    anchor = [r for r in rows if r["config"] == configs[0][3]]
    for _, _, _, text in configs:
        test = [r for r in rows if r["config"] == text]
        if len(test) < 2 or len(anchor) < 2:
            continue
        summary[text] = dict(
            bd_rate_psnr_vs_anchor=bd_rate([r["bpp"] for r in anchor], [r["psnr"] for r in anchor],
                                           [r["bpp"] for r in test], [r["psnr"] for r in test]),
            points=len(test),
            seam_figure_mean=float(np.mean([r["seam_figure"] for r in test])),
            seam_figure_max=float(np.max([r["seam_figure"] for r in test])))
        if not quiet:
            print(f"{name:>16} {text:>9} vs {configs[0][3]}: BD-rate {summary[text]['bd_rate_psnr_vs_anchor']:+.2f} %, "
                  f"seam figure mean {summary[text]['seam_figure_mean']:.3f} max {summary[text]['seam_figure_max']:.3f}")
    return summary


def library_roundtrip(src: Path, folder: Path, version: int, tile: int, overlap: int, quality: float,
                      model: str | None) -> tuple[float, np.ndarray]:
    """What ``cli_roundtrip`` does (compress, plain decode), in this process."""
    from core.codec.compress import compress_raster
    from core.codec.decompress import decompress_raster
    from core.options import DEFAULT_MODEL, CompressParams

    crsic, dec = folder / "roundtrip.crsic", folder / "roundtrip.tif"
    compress_raster(src, crsic, CompressParams(model=model or DEFAULT_MODEL, quality=quality, tile=tile,
                                               overlap=overlap, format=version, overwrite=True))
    decompress_raster(crsic, dec, model=model, overwrite=True)
    with rasterio.open(dec) as ds:
        return crsic.stat().st_size * 8 / (ds.width * ds.height), ds.read()


def compare_formats(args, model: list[str]) -> int:
    configs = []
    for text in args.formats:
        version, tiling = text.split(":")
        tile, _, overlap = tiling.partition("/")
        configs.append((int(version), int(tile), int(overlap or 0), text))
    result = {"command": " ".join(["python"] + sys.argv), "qualities": args.qualities, "rasters": {}}
    done = {}
    if args.reuse and args.out and Path(args.out).exists():  # rows an earlier run of the same command measured
        for name, r in json.loads(Path(args.out).read_text())["rasters"].items():
            for row in r["rows"]:
                done[(name, row["config"], row["quality"])] = row
    with tempfile.TemporaryDirectory() as tmp:
        rasters = {"dubai": dubai_pair, "ucmerced_mosaic": lambda p: ucmerced_mosaic(p, args.mosaic)}
        for name in args.rasters:
            build = rasters[name]
            src = Path(tmp) / f"{name}.tif"
            build(src)
            if args.side:  # only the top-left corner (the crop across a tile corner needs no more)
                with rasterio.open(src) as ds:  # the window at (0, 0) keeps the raster's transform
                    corner = ds.read(window=rasterio.windows.Window(0, 0, args.side, args.side))
                write_rgb(src, corner)
            with rasterio.open(src) as ds:
                ref = ds.read()
            rows, crops = [], []
            for q in args.qualities:  # quality by quality, so a run cut short still has matched pairs
                for version, tile, overlap, text in configs:
                    if (name, text, float(q)) in done:
                        rows.append(done[(name, text, float(q))])
                        continue
                    bpp, out = library_roundtrip(src, Path(tmp), version, tile, overlap, float(q), args.model)
                    row = dict(config=text, format=version, tile=tile, overlap=overlap, quality=float(q), bpp=bpp,
                               psnr=psnr(ref, out), seam_figure=seam_figure(ref, out, tile, overlap))
                    rows.append(row)
                    result["rasters"][name] = {"rows": rows, "partial": True,  # kept if the run is cut short
                                               "summary": _summary(rows, configs, name, quiet=True)}
                    if args.out:
                        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
                    print(f"{name:>16} {text:>9} q={q:>3} {bpp:.4f} bpp {row['psnr']:.2f} dB "
                          f"seam {row['seam_figure']:.3f}", flush=True)
                    if q == args.qualities[0] and len(crops) < 2:
                        crops.append((f"format {version}, {tile} px" + (f"/{overlap}" if overlap else "")
                                      + f", {bpp:.3f} bpp", out))
            result["rasters"][name] = {"width": int(ref.shape[2]), "height": int(ref.shape[1]),
                                       "megapixels": ref.shape[1] * ref.shape[2] / 1e6, "rows": rows,
                                       "summary": _summary(rows, configs, name)}
            if args.crop and name == "dubai" and len(crops) == 2:
                corner_crop(Path(args.crop), ref, crops, configs[1][1] if len(configs) > 1 else configs[0][1])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048, help="mosaic side in pixels")
    p.add_argument("--images", nargs="+", default=sorted(str(x) for x in (ROOT.parent / "shared/data/val/dubai").glob("*.jpg")))
    p.add_argument("--configs", nargs="+", default=[f"{DEFAULT_TILE}/{DEFAULT_OVERLAP}", f"{DEFAULT_TILE}/16",
                                                    f"{DEFAULT_TILE}/0", "1024/32", "512/32"],
                   help="TILE/OVERLAP pairs; the first is the anchor of the BD-rates")
    p.add_argument("--qualities", nargs="+", default=["1", "3", "5"])
    p.add_argument("--model", default=None)
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("--formats", nargs="+", help="compare FORMAT:TILE[/OVERLAP] configurations on two large rasters")
    p.add_argument("--mosaic", type=int, default=3072, help="side of the UC Merced mosaic (--formats)")
    p.add_argument("--crop", help="(--formats) write the crop across a tile corner here (PNG)")
    p.add_argument("--reuse", action="store_true", help="(--formats) keep the rows --out has, measure the rest")
    p.add_argument("--side", type=int, help="(--formats) code only the top-left SIDE x SIDE px of each raster")
    p.add_argument("--rasters", nargs="+", default=["dubai", "ucmerced_mosaic"], choices=["dubai", "ucmerced_mosaic"],
                   help="(--formats) which of the two large rasters")
    args = p.parse_args(argv)
    model = ["--model", args.model] if args.model else []
    if args.formats:
        return compare_formats(args, model)
    rows = []
    print(f"{'tile/overlap':>12} {'q':>4} {'bpp':>7} {'PSNR':>7} {'seam PSNR':>10} {'vs anchor':>10} {'coded px':>9}")
    anchor_decodes = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mosaic.tif"
        build_raster(src, args.size, [Path(i) for i in args.images])
        with rasterio.open(src) as ds:
            ref = ds.read()
        for config in args.configs:
            tile, overlap = (int(v) for v in config.split("/"))
            seams = seam_mask(args.size, tile, overlap)
            grid = TileGrid(args.size, args.size, tile, overlap)
            coded = sum(t.width * t.height for t in grid) / args.size**2
            for q in args.qualities:
                bpp, out = cli_roundtrip(src, Path(tmp), ["--quality", q, "--tile", str(tile),
                                                          "--overlap", str(overlap), *model])
                anchor = anchor_decodes.setdefault(q, out)  # the first configuration's decode
                row = dict(tile=tile, overlap=overlap, quality=float(q), coded_pixels=coded,
                           bpp=bpp, psnr=psnr(ref, out),
                           seam_psnr=psnr(ref[:, seams], out[:, seams]),
                           # worse at its seams than the anchor on the same pixels, beyond the overall difference
                           seam_penalty_db=(psnr(ref[:, seams], anchor[:, seams]) - psnr(ref[:, seams], out[:, seams]))
                           - (psnr(ref, anchor) - psnr(ref, out)))
                rows.append(row)
                print(f"{config:>12} {q:>4} {row['bpp']:>7.4f} {row['psnr']:>7.2f} {row['seam_psnr']:>10.2f} "
                      f"{-row['seam_penalty_db']:>+10.2f} {coded:>9.3f}", flush=True)
    anchor = [r for r in rows if (r["tile"], r["overlap"]) == tuple(int(v) for v in args.configs[0].split("/"))]
    summary = {}
    for config in args.configs[1:]:
        tile, overlap = (int(v) for v in config.split("/"))
        test = [r for r in rows if (r["tile"], r["overlap"]) == (tile, overlap)]
        summary[config] = dict(
            bd_rate_psnr=bd_rate([r["bpp"] for r in anchor], [r["psnr"] for r in anchor],
                                 [r["bpp"] for r in test], [r["psnr"] for r in test]),
            mean_seam_penalty_db=float(np.mean([r["seam_penalty_db"] for r in test])))
        print(f"{config:>12} vs {args.configs[0]}: BD-rate (PSNR) {summary[config]['bd_rate_psnr']:+.2f} %, "
              f"seams {summary[config]['mean_seam_penalty_db']:.2f} dB worse than the anchor's on the same pixels")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "size": args.size, "rows": rows,
                                              "vs_anchor": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
