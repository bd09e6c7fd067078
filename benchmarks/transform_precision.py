"""What bf16 transforms on OpenVINO cost and buy, against f32: speed per stage, rate-distortion.

Speed: the analysis and synthesis of one format-3 tile (832 x 832 px in, 52 x 52 latent),
median of ``--repeat`` calls in turns, at ``--threads`` threads. Rate-distortion: the CLI
compresses a large raster (``--raster``, as in ``large_raster_rd.py``) at every quality of
the default model with ``--precision f32`` and ``auto``, decodes each container under both
precisions (plainly), and reports bpp, PSNR and the BD-rate (PSNR) of bf16 against f32.

    python benchmarks/transform_precision.py --out results/transform_precision.json
    python benchmarks/transform_precision.py --raster val-mosaic --skip-speed
    python benchmarks/transform_precision.py --skip-speed --skip-rd --int8   # NNCF int8 (pip install nncf)
    python benchmarks/transform_precision.py --skip-speed --skip-rd --int8 --convs-only   # int8 convolutions only
    python benchmarks/transform_precision.py --skip-speed --skip-rd --int8 --max-drop 0.04   # int8 synthesis,
        # NNCF's accuracy control: layers go back to float until the PSNR drop on held-out training crops is at most 0.04 dB
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
    native = openvino_precision(ov.Core())  # bf16 where native and not turned off
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


def calibration_crops(count: int, side: int = 256) -> list[np.ndarray]:
    """Random side x side crops of the training images (never val), (1, 3, side, side) in [0, 1]."""
    from PIL import Image

    files = sorted(p for p in (ROOT.parent / "shared/data/train").rglob("*")
                   if p.suffix.lower() in (".jpg", ".png", ".webp", ".tif"))
    rng = np.random.default_rng(0)
    crops = []
    while len(crops) < count:
        img = np.asarray(Image.open(files[rng.integers(len(files))]).convert("RGB"))
        if min(img.shape[:2]) < side:
            continue
        y, x = rng.integers(0, img.shape[0] - side + 1), rng.integers(0, img.shape[1] - side + 1)
        crops.append(np.ascontiguousarray(img[y:y + side, x:x + side].transpose(2, 0, 1)[None], np.float32) / 255)
    return crops


def synthesis_samples(model: str, crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(the synthesis network's input, the crop) as decoding meets them: each crop coded at a
    rate level in turn, its latents entropy-decoded and scaled back by the level's gain."""
    from core.codec.tile_coder import get_coder

    coder = get_coder(model)
    levels = len(coder.model.spec.lambdas)
    samples = []
    for i, crop in enumerate(crops):
        level = float(i % levels)
        _, latents = coder.decode_latents(coder.encode_tile(crop[0], level)[0])
        samples.append(((latents[0][None] * coder.gain(level, inverse=True)).astype(np.float32), crop[0]))
    return samples


def synthesis_psnr(compiled, samples) -> float:
    """Mean PSNR (dB) of a compiled synthesis on ``samples``, its output rounded to 8 bits as decoding writes it."""
    from core.compare.psnr import psnr_from_mse

    scores = []
    for y, crop in samples:
        out = np.round(np.clip(compiled(y)[0][0], 0, 1) * 255) / 255
        scores.append(psnr_from_mse(np.mean((out - crop) ** 2), peak=1.0))
    return float(np.mean(scores))


def _convs_only() -> dict:
    """NNCF settings for int8 convolutions alone, symmetric activations. NNCF's default also
    quantises the residual additions and the attention's products, and those cost most of
    int8's PSNR loss (0.53 of 0.57 dB on training crops, elic-lite-s's synthesis)."""
    import nncf

    return dict(ignored_scope=nncf.IgnoredScope(types=["Add", "Multiply"], validate=False),
                preset=nncf.QuantizationPreset.PERFORMANCE)


def int8_transforms(model: str, folder: Path, count: int, max_drop: float | None = None,
                    convs_only: bool = False) -> dict[str, Path]:
    """Post-training int8 quantisation of both transforms with NNCF (default preset), calibrated
    on training crops (the synthesis on their rounded latents) -> OpenVINO IR files.
    ``convs_only``: the convolutions only (``_convs_only``).
    ``max_drop``: the synthesis only, asymmetric activations (``MIXED``), calibrated on decoded
    latents, under NNCF's accuracy control (at most ``max_drop`` dB of PSNR lost on other
    training crops, layers reverted to float until then)."""
    import nncf
    import openvino as ov

    from core.models import get_model
    from core.models.runtime import cached_export

    files = cached_export(get_model(model))
    core = ov.Core()
    if max_drop is not None:
        crops = calibration_crops(count + count // 2)
        calibration, validation = synthesis_samples(model, crops[:count]), synthesis_samples(model, crops[count:])
        quantised = nncf.quantize_with_accuracy_control(
            core.read_model(str(files["synthesis"])), nncf.Dataset([y for y, _ in calibration]),
            nncf.Dataset(validation), validation_fn=lambda compiled, data: synthesis_psnr(compiled, list(data)),
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
            subset_size=count)
        ov.save_model(quantised, str(folder / "synthesis_int8.xml"))
        return {"synthesis": folder / "synthesis_int8.xml"}
    crops = calibration_crops(count)
    analysis = core.compile_model(core.read_model(str(files["analysis"])), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = {"analysis": crops, "synthesis": [np.round(analysis(c)[0]) for c in crops]}
    out = {}
    for stage in ("analysis", "synthesis"):
        quantised = nncf.quantize(core.read_model(str(files[stage])), nncf.Dataset(data[stage]), subset_size=count,
                                  **(_convs_only() if convs_only else {}))
        out[stage] = folder / f"{stage}_int8.xml"
        ov.save_model(quantised, str(out[stage]))
    return out


def int8_results(model: str, src: Path, tmp: Path, threads: int, repeat: int, count: int,
                 max_drop: float | None = None, convs_only: bool = False) -> dict:
    """Speed per stage and rate-distortion of int8 analysis / synthesis against bf16 (in this
    process: each variant is a coder whose OpenVINO transforms read the int8 IR for one stage)."""
    import openvino as ov

    from core.codec import tile_coder
    from core.models import get_model
    from core.models.runtime import OpenVinoTransforms, cached_export, openvino_precision
    from core.options import CompressParams, DecompressParams
    from core.usecases import compress, decompress, psnr

    loaded = get_model(model)
    onnx = cached_export(loaded)
    int8 = int8_transforms(model, tmp, count, max_drop, convs_only)
    base = openvino_precision(ov.Core())  # what the other layers run in (bf16 where native)
    variants = {base: onnx, **{f"int8 {stage}": {**onnx, stage: path} for stage, path in int8.items()}}
    x = calibration_crops(1, 832)[0]
    seconds = {}
    for name, files in variants.items():
        rt = OpenVinoTransforms(loaded, files, threads, precision=base)
        y = np.round(rt.analysis(x))
        for stage, arg in (("analysis", x), ("synthesis", y)):
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                getattr(rt, stage)(arg)
                times.append(time.perf_counter() - t0)
            seconds[f"{name}: {stage}"] = float(np.median(times))
    rows = []
    for name, files in variants.items():
        coder = tile_coder.get_coder(model)
        coder.__dict__["transforms"] = OpenVinoTransforms(loaded, files, None, precision=base)
        for q in qualities(model):
            crsic, out = tmp / f"{q}.crsic", tmp / f"{q}.tif"
            compress(str(src), str(crsic), CompressParams(model=model, quality=float(q), overwrite=True))
            decompress(str(crsic), str(out), DecompressParams(enhance=False, overwrite=True))
            rows.append(dict(variant=name, quality=float(q), bpp=crsic.stat().st_size * 8 / _pixels(src),
                             psnr=psnr(src, out)["psnr"]))
            print(json.dumps(rows[-1]), flush=True)
        coder.__dict__.pop("transforms")
    curve = lambda v: np.array([(r["bpp"], r["psnr"]) for r in rows if r["variant"] == v])  # noqa: E731
    ref = curve(base)
    summary = {v: {"bd_rate_vs_" + base: float(bd_rate(ref[:, 0], ref[:, 1], curve(v)[:, 0], curve(v)[:, 1])),
                   "max_psnr_drop_db_same_quality": float(np.max(ref[:, 1] - curve(v)[:, 1]))}
               for v in variants if v != base}
    return {"calibration_crops": count, "max_drop_db": max_drop, "convs_only": convs_only, "seconds": seconds, "threads": threads, "rows": rows, "summary": summary}


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
    p.add_argument("--int8", action="store_true",
                   help="also measure NNCF int8 transforms against bf16 (needs pip install nncf)")
    p.add_argument("--calibration", type=int, default=256, help="(--int8) calibration crops")
    p.add_argument("--max-drop", type=float, help="(--int8) the synthesis only, under NNCF's accuracy control: "
                   "at most this PSNR drop (dB) on held-out training crops")
    p.add_argument("--convs-only", action="store_true",
                   help="(--int8) quantise the convolutions only, symmetric activations (NNCF's PERFORMANCE preset)")
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
    if args.int8:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{args.raster}.tif"
            build_named_raster(src, args.raster, args.size, [])
            key = "int8_accuracy_control" if args.max_drop is not None else "int8_convs_only" if args.convs_only \
                else "int8"
            result[key] = int8_results(args.model, src, Path(tmp), args.threads, args.repeat, args.calibration,
                                       args.max_drop, args.convs_only)
        print(json.dumps({k: v for k, v in result[key].items() if k != "rows"}, indent=1))
    if args.out:  # a run with --skip-speed or --skip-rd updates the other part's file
        out = Path(args.out)
        old = json.loads(out.read_text()) if out.exists() else {}
        if old:
            result["command"] = f"{old.get('command')}; {result['command']}"
        out.write_text(json.dumps({**old, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
