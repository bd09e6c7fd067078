"""Write the model card of exported ELIC weights from its training log and an evaluation.

    python -m training.elic_card --weights core/weights/elic-lite.safetensors \
        --log runs/elic-lite/log.jsonl --eval results/eval/results.json \
        --hardware "2-core AMD EPYC VM, no GPU" --command "python -m training.train_elic ..."

The card lists the training data, steps, wall time and hardware, how validation quality
grew with training time, and the matched-bitrate comparison with classical codecs that
``python -m core.evaluate`` measured on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.models import file_sha256, read_spec

CLASSICAL = ("jpeg", "webp", "jp2", "avif", "jxl")


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.elic_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="exported .safetensors")
    p.add_argument("--log", required=True, help="log.jsonl of the training run")
    p.add_argument("--eval", required=True, help="results.json of python -m core.evaluate")
    p.add_argument("--hardware", default="CPU")
    p.add_argument("--data", default="../shared/data/train (UC Merced 0.3 m + Dubai aerial, about 166 MP)")
    p.add_argument("--command", default="", help="the command that trained the weights")
    p.add_argument("--notes", default="", help="markdown file appended to the card")
    p.add_argument("--out", help="card path (default: weights path with .md)")
    return p


def training_curve(log: Path) -> tuple[list[dict], dict]:
    """Validation records and the last training record of a run."""
    vals, last = [], {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "val" in rec:
            vals.append(rec)
        else:
            last = rec
    return vals, last


def curve_table(vals: list[dict]) -> list[str]:
    levels = sorted(vals[-1]["val"], key=lambda q: int(q[1:]))
    rows = ["| step | training time (h) | " + " | ".join(f"{q} bpp / PSNR" for q in levels) + " |",
            "|---|---|" + "---|" * len(levels)]
    for rec in vals:
        cells = [f"{rec['val'][q]['bpp']:.3f} / {rec['val'][q]['psnr']:.2f}" for q in levels]
        rows.append(f"| {rec['step']} | {rec['elapsed_s'] / 3600:.2f} | " + " | ".join(cells) + " |")
    return rows


def comparison_table(evaluation: dict) -> list[str]:
    """Per target bpp: ours next to each classical codec (mean bpp, PSNR, MS-SSIM, share of images on target)."""
    summary = evaluation["summary"]
    codecs = ["ours"] + [c for c in CLASSICAL if c in summary]
    rows = ["| target bpp | " + " | ".join(f"{c}: bpp / PSNR / MS-SSIM (hit)" for c in codecs) + " |",
            "|---|" + "---|" * len(codecs)]
    targets = sorted({r["target_bpp"] for r in summary["ours"]})
    for t in targets:
        cells = []
        for c in codecs:
            r = next((r for r in summary[c] if r["target_bpp"] == t), None)
            cells.append("n/a" if r is None else
                         f"{r['bpp']:.3f} / {r['psnr']:.2f} / {r['ms_ssim']:.4f} ({r['hit_rate']:.0%})")
        rows.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return rows


def bd_table(evaluation: dict) -> list[str]:
    bd = evaluation.get("bd_rate", {}).get("jp2", {})
    rows = ["| codec | BD-rate PSNR | BD-rate MS-SSIM |", "|---|---|---|"]
    for codec, m in bd.items():
        cell = lambda k: "n/a" if m.get(k, {}).get("bd_rate") is None else f"{m[k]['bd_rate']:+.1f} %"
        rows.append(f"| {codec} | {cell('psnr')} | {cell('ms_ssim')} |")
    return rows


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    weights = Path(args.weights)
    spec = read_spec(weights)
    vals, last = training_curve(Path(args.log))
    evaluation = json.loads(Path(args.eval).read_text())
    n_images = len(evaluation["config"]["images"])
    lines = [
        f"# {spec.name}: ELIC weights",
        "",
        f"- file: `{weights.name}` (fp16 safetensors after `update()`, {weights.stat().st_size / 1e6:.1f} MB)",
        f"- sha256: `{file_sha256(weights)}` (recorded in `core/models/registry.py` REGISTRY)",
        f"- architecture: compressai `Elic2022Official`, N={spec.N}, M={spec.M}, channel groups {list(spec.groups)}, "
        f"one variable-rate network with gain units for {spec.levels} rate levels "
        f"(lambda {', '.join(f'{x:g}' for x in spec.lambdas)}; `--quality 1..{spec.levels}`, fractions interpolate)",
        f"- training data: {args.data}; random crops with flips; validation never trained on",
        f"- steps: {last.get('step', vals[-1]['step'])}, training time {vals[-1]['elapsed_s'] / 3600:.1f} h "
        f"(excluding validation), hardware: {args.hardware}",
        "",
        "## Reproduce",
        "",
        "```",
        args.command or "python -m training.train_elic --help",
        f"python -m training.train_elic --out runs/{spec.name} --export {weights.as_posix()}",
        "```",
        "",
        f"## Matched bitrates on `../shared/data/val` ({n_images} images)",
        "",
        "Each codec's quality is searched per image to hit the target bpp (each codec's whole "
        "bitstream); `hit` is the share of images within tolerance (JPEG cannot go "
        "below about 0.15 bpp on these images). Command: `"
        + evaluation["config"].get("command", "python -m core.evaluate") + "` (see docs/evaluation.md).",
        "",
        *comparison_table(evaluation),
        "",
        "BD-rate against JPEG 2000 (negative: fewer bits for the same quality):",
        "",
        *bd_table(evaluation),
        "",
        "## Quality against training time",
        "",
        "Validation on 256-px centre crops of the val images (likelihood bpp, PSNR in dB):",
        "",
        *curve_table(vals),
        "",
    ]
    if args.notes:
        lines += [Path(args.notes).read_text().rstrip(), ""]
    out = Path(args.out) if args.out else weights.with_suffix(".md")
    out.write_text("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
