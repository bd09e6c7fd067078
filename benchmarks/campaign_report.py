"""The ELIC v3 campaign's evidence: learning curve and large-raster rate-distortion plots.

Reads a training log (``training.train_elic``'s ``log.jsonl``) and the validation of a
reference model on the same crops (``--reference``, written by ``--write-reference``), and
the large-raster outputs of ``benchmarks/large_raster_rd.py``. Writes, under ``--out``:

- ``learning_curve.json`` / ``.png``: per validation step, training hours and the BD-rate
  (PSNR) of the checkpoint against the reference model on the validation crops;
- ``rd_<raster>_<metric>.png``: PSNR / MS-SSIM / LPIPS against bpp, every model and codec;
- prints the markdown tables the model card and the README take.

    python benchmarks/campaign_report.py --write-reference elic-v2 --out results/campaign
    python benchmarks/campaign_report.py --log runs/elic-v3/log.jsonl --out results/campaign \
        --rd results/campaign/dubai-pair.json results/campaign/val-mosaic.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.evaluation.bd_rate import bd_rate  # noqa: E402

VAL_CROPS = dict(size=256, limit=16)  # what train_elic validates on (--val-size 256 --val-limit 16)


def write_reference(model: str, out: Path) -> Path:
    """Validate a shipped model on the training run's validation crops (same function, same crops)."""
    import torch

    from core.models import REGISTRY, build_model
    from training.data import center_crops, list_images
    from training.train_elic import load_init, validate

    spec = REGISTRY[model]
    net = build_model(spec)
    load_init(net, str(ROOT / "core/weights" / spec.weights_file))
    crops = center_crops(list_images([str(ROOT.parent / "shared/data/val")]), VAL_CROPS["size"], VAL_CROPS["limit"])
    torch.set_num_threads(1)
    path = out / f"val_reference_{model}.json"
    path.write_text(json.dumps({"model": model, "crops": VAL_CROPS, "val": validate(net, crops, spec.levels, "cpu")},
                               indent=1) + "\n")
    return path


def _curve(val: dict) -> tuple[list[float], list[float]]:
    levels = sorted(val, key=lambda k: int(k[1:]))
    return [val[k]["bpp"] for k in levels], [val[k]["psnr"] for k in levels]


def learning_curve(log: Path, reference: dict) -> list[dict]:
    ref_bpp, ref_psnr = _curve(reference["val"])
    rows = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "val" not in rec:
            continue
        bpp, psnr = _curve(rec["val"])
        rows.append({"step": rec["step"], "hours": round(rec["elapsed_s"] / 3600, 3),
                     "bd_rate_vs_reference": bd_rate(ref_bpp, ref_psnr, bpp, psnr),
                     "top_bpp": bpp[-1], "top_psnr": psnr[-1], "low_bpp": bpp[0], "low_psnr": psnr[0]})
        if "val_ema" in rec:  # train_elic --ema: the weights' moving average, validated beside them
            rows[-1]["ema_bd_rate_vs_reference"] = bd_rate(ref_bpp, ref_psnr, *_curve(rec["val_ema"]))
    return rows


def continue_curve(earlier: list[dict], rows: list[dict]) -> list[dict]:
    """The committed curve's rows before this log's first step, then the log's rows.

    A campaign continued on a new machine (``train_elic --init-step``) has a log that starts
    where the committed weights left off; the curve before that lives only in the results.
    """
    first = rows[0]["step"] if rows else float("inf")
    return [r for r in earlier if r["step"] < first] + rows


def plot_curve(rows: list[dict], reference: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    h = [r["hours"] for r in rows]
    a.plot(h, [r["bd_rate_vs_reference"] for r in rows], "o-", label="weights")
    ema = [(r["hours"], r["ema_bd_rate_vs_reference"]) for r in rows if "ema_bd_rate_vs_reference" in r]
    if ema:
        a.plot(*zip(*ema), "s-", label="their moving average (--ema)")
        a.legend()
    a.axhline(0, color="grey", lw=0.8)
    a.set(xlabel="training hours (2 CPU cores)", ylabel=f"BD-rate vs {reference} (%)",
          title="validation crops, PSNR")
    b.plot(h, [r["top_psnr"] for r in rows], "o-", label="top level")
    b.set(xlabel="training hours", ylabel="PSNR at the top level (dB)", title="high-rate ceiling")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rd(result: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for codec in dict.fromkeys(pt["codec"] for pt in result["points"]):
        pts = sorted((pt for pt in result["points"] if pt["codec"] == codec and metric in pt), key=lambda p: p["bpp"])
        if pts:
            ours = codec.startswith("elic")
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], "o-" if ours else "s--", label=codec,
                    lw=2 if ours else 1, ms=4)
    ax.set(xlabel="bits per pixel (whole file)", ylabel=metric.upper().replace("_", "-"),
           title=f"{result.get('raster', 'raster')}: {metric}", xlim=(0, 1.5))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _column(key: str) -> str:
    """"psnr, 0.05-1 bpp" -> "PSNR (0.05-1 bpp)"."""
    metric, _, window = key.partition(", ")
    return metric.upper().replace("_", "-") + (f" ({window})" if window else "")


def rd_tables(result: dict) -> list[str]:
    """BD-rates against AVIF: PSNR over the whole overlap and within the output's bpp window
    (``large_raster_rd.bd_summary``), MS-SSIM and LPIPS."""
    bd = result["bd_rate"]
    window = next((k.split(", ", 1)[1].rstrip(")") for k in bd if " vs avif (psnr, " in k), None)
    columns = ["psnr"] + ([f"psnr, {window}"] if window else []) + ["ms_ssim", "lpips"]
    lines = [f"### {result.get('raster')} (`{result['command']}`)", "",
             "| codec | BD-rate vs AVIF: " + " | ".join(_column(c) for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    models = dict.fromkeys(k.split(" vs ")[0] for k in bd)
    for m in models:
        cells = [bd.get(f"{m} vs avif ({x})", {}).get("bd_rate_percent", float("nan")) for x in columns]
        lines.append(f"| {m} | " + " | ".join(f"{c:+.1f} %" for c in cells) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--write-reference", metavar="MODEL", help="validate this shipped model on the crops and exit")
    p.add_argument("--log", help="log.jsonl of the campaign's training run")
    p.add_argument("--reference", default="elic-v2")
    p.add_argument("--rd", nargs="*", default=[], help="outputs of benchmarks/large_raster_rd.py")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.write_reference:
        print(write_reference(args.write_reference, out))
        return 0
    if args.log:
        reference = json.loads((out / f"val_reference_{args.reference}.json").read_text())
        rows = learning_curve(Path(args.log), reference)
        curve_file = out / "learning_curve.json"
        if curve_file.exists():
            rows = continue_curve(json.loads(curve_file.read_text())["rows"], rows)
        curve_file.write_text(json.dumps({"log": args.log, "reference": args.reference, "rows": rows},
                                         indent=1) + "\n")
        plot_curve(rows, args.reference, out / "learning_curve.png")
        print("| step | hours | BD-rate vs " + args.reference + " (val crops) | moving average | top level bpp / PSNR |")
        print("|---|---|---|---|---|")
        for r in rows:
            ema = f"{r['ema_bd_rate_vs_reference']:+.1f} %" if "ema_bd_rate_vs_reference" in r else ""
            print(f"| {r['step']} | {r['hours']:.2f} | {r['bd_rate_vs_reference']:+.1f} % | {ema} | "
                  f"{r['top_bpp']:.3f} / {r['top_psnr']:.2f} |")
    for path in args.rd:
        result = json.loads(Path(path).read_text())
        for metric in ("psnr", "ms_ssim", "lpips"):
            if any(metric in pt for pt in result["points"]):
                plot_rd(result, metric, out / f"rd_{result.get('raster', Path(path).stem)}_{metric}.png")
        print("\n".join(rd_tables(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
