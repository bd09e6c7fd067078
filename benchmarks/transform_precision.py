"""What bf16 transforms on OpenVINO cost and buy, against f32: speed per stage, rate-distortion.

Speed: the analysis and synthesis of one format-3 tile (832 x 832 px in, 52 x 52 latent),
median of ``--repeat`` calls in turns, at ``--threads`` threads. Rate-distortion: the CLI
compresses a large raster (``--raster``, as in ``large_raster_rd.py``) at every quality of
the default model with ``--precision f32`` and ``auto``, decodes each container under both
precisions (plainly), and reports bpp, PSNR and the BD-rate (PSNR) of bf16 against f32.

    python benchmarks/transform_precision.py --out results/transform_precision.json
    python benchmarks/transform_precision.py --raster val-mosaic --skip-speed
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from large_raster_rd import build_named_raster, qualities  # noqa: E402

from core.evaluation.bd_rate import bd_rate  # noqa: E402
from core.options import DEFAULT_MODEL, PRECISION_ENV  # noqa: E402


def stage_seconds(model: str, threads: int, repeat: int) -> dict:
    """Seconds per call of each stage under each precision, measured in turns."""
    import openvino as ov

    from core.models import get_model
    from core.models.runtime import OpenVinoTransforms, cached_export, openvino_precision

    loaded = get_model(model)
    files = cached_export(loaded)
    native = openvino_precision(ov.Core()) if os.environ.get(PRECISION_ENV, "auto") == "auto" else "f32"
    runs = {p: OpenVinoTransforms(loaded, files, threads, precision=p) for p in sorted({"f32", native})}
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 832, 832), dtype=np.float32)
    y = np.round(runs["f32"].analysis(x))
    times = {(p, s): [] for p in runs for s in ("analysis", "synthesis")}
    for _ in range(repeat):
        for p, rt in runs.items():
            for stage, arg in (("analysis", x), ("synthesis", y)):
                t0 = time.perf_counter()
                getattr(rt, stage)(arg)
                times[p, stage].append(time.perf_counter() - t0)
    return {f"{p} {s}": float(np.median(v)) for (p, s), v in times.items()}


def cli(args: list[str], precision: str) -> None:
    env = {**os.environ, PRECISION_ENV: precision, "CODERSIC_RUNTIME": "openvino"}
    subprocess.run([sys.executable, "-m", "core.tile_codec", *args, "--quiet", "--overwrite"], cwd=ROOT, env=env,
                   check=True, capture_output=True)


def rd_points(src: Path, model: str, tmp: Path, precisions: list[str]) -> list[dict]:
    from core.usecases import psnr

    rows = []
    for q in qualities(model):
        for enc in precisions:
            crsic = tmp / f"{enc}_{q}.crsic"
            cli(["compress", str(src), "-o", str(crsic), "--model", model, "--quality", q], enc)
            bpp = crsic.stat().st_size * 8 / _pixels(src)
            for dec in precisions:
                out = tmp / f"{enc}_{dec}_{q}.tif"
                cli(["decompress", str(crsic), "-o", str(out), "--no-enhance"], dec)
                rows.append(dict(quality=float(q), encode=enc, decode=dec, bpp=bpp, psnr=psnr(src, out)["psnr"]))
                print(json.dumps(rows[-1]), flush=True)
                out.unlink()
            crsic.unlink()
    return rows


def _pixels(path: Path) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.width * ds.height


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--raster", default="dubai-pair", choices=("dubai-pair", "val-mosaic", "dubai-tiled"))
    p.add_argument("--size", type=int, default=3072, help="(dubai-tiled) side in pixels")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-rd", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = {"command": " ".join(["benchmarks/transform_precision.py", *(argv or sys.argv[1:])]), "model": args.model}
    if not args.skip_speed:
        result["seconds"] = stage_seconds(args.model, args.threads, args.repeat)
        result["threads"] = args.threads
        print(json.dumps(result["seconds"], indent=1), flush=True)
    if not args.skip_rd:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{args.raster}.tif"
            build_named_raster(src, args.raster, args.size, [])
            rows = rd_points(src, args.model, Path(tmp), ["f32", "auto"])
        result.update(raster=args.raster, rows=rows)
        curve = lambda enc, dec: [(r["bpp"], r["psnr"]) for r in rows if (r["encode"], r["decode"]) == (enc, dec)]  # noqa: E731
        ref = np.array(curve("f32", "f32"))
        result["bd_rate_vs_f32"] = {}
        for enc, dec in (("auto", "auto"), ("auto", "f32"), ("f32", "auto")):
            test = np.array(curve(enc, dec))
            bd = float(bd_rate(ref[:, 0], ref[:, 1], test[:, 0], test[:, 1]))
            result["bd_rate_vs_f32"][f"encode {enc}, decode {dec}"] = bd
            result[f"max_psnr_drop_db encode {enc}, decode {dec}"] = float(np.max(ref[:, 1] - test[:, 1]))
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:  # a run with --skip-speed or --skip-rd updates the other part's file
        out = Path(args.out)
        old = json.loads(out.read_text()) if out.exists() else {}
        if old:
            result["command"] = f"{old.get('command')}; {result['command']}"
        out.write_text(json.dumps({**old, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
