"""Where the elic-v3 campaign is heading: its large-raster BD-rates at each export, from git history.

Every export commits ``results/campaign/val-mosaic.json`` and ``dubai-pair.json`` (BD-rate
(PSNR) against AVIF, whole range and 0.05-1.0 bpp) and ``val_elic-v3_exported.json`` (the
16 val crops). This reads them at each commit that changed the mosaic file, the step from
the commit message and the training hours from the model card's curve row for that step
(at the same commit), then:

- how the mosaic's BD-rate follows the val crops' BD-rate against elic-v2 (a line), and so
  which val figure the mosaic's target (<= 0 over 0.05-1.0 bpp) needs;
- the pace per training hour over the last exports, and the hours left at that pace;
- a saturating fit ``a + b exp(-hours / tau)`` to the last exports (its ``a``: where the
  recipe levels off, if it keeps its recent shape).

    python benchmarks/campaign_trend.py --out results/campaign/trend.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.campaign_report import _curve  # noqa: E402
from core.evaluation.bd_rate import bd_rate  # noqa: E402

MOSAIC, DUBAI = "results/campaign/val-mosaic.json", "results/campaign/dubai-pair.json"
VAL, REFERENCE = "results/campaign/val_elic-v3_exported.json", "results/campaign/val_reference_elic-v2.json"
CARD = "core/weights/elic-v3.md"
WINDOW = "elic-v3 vs avif (psnr, 0.05-1 bpp)"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def _at(commit: str, path: str) -> str | None:
    try:
        return _git("show", f"{commit}:{path}")
    except subprocess.CalledProcessError:
        return None


def _hours(card: str, step: int) -> float | None:
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.match(rf"{step}\b", cells[0]):
            try:
                return float(cells[1])
            except ValueError:
                continue
    return None


def exports() -> list[dict]:
    """One row per commit that changed the mosaic's results and names a step, oldest first."""
    ref = _curve(json.loads((ROOT / REFERENCE).read_text())["val"])
    rows = []
    for line in _git("log", "--format=%h %s", "--", MOSAIC).splitlines():
        commit, subject = line.split(" ", 1)
        step = re.search(r"step (\d+)", subject)
        mosaic, dubai, val, card = (_at(commit, p) for p in (MOSAIC, DUBAI, VAL, CARD))
        if not (step and mosaic and dubai and val and card):
            continue
        m, d = json.loads(mosaic)["bd_rate"], json.loads(dubai)["bd_rate"]
        if WINDOW not in m or WINDOW not in d:
            continue
        step = int(step.group(1))
        hours = _hours(card, step)
        if hours is None:
            continue
        rows.append(dict(commit=commit, step=step, hours=hours,
                         val_vs_elic_v2=bd_rate(*ref, *_curve(json.loads(val)["val"])),
                         mosaic_window=m[WINDOW]["bd_rate_percent"], dubai_window=d[WINDOW]["bd_rate_percent"]))
    return sorted(rows, key=lambda r: r["hours"])


def saturating_fit(hours: np.ndarray, values: np.ndarray) -> dict | None:
    from scipy.optimize import curve_fit

    f = lambda x, a, b, tau: a + b * np.exp(-x / tau)  # noqa: E731
    try:
        (a, b, tau), _ = curve_fit(f, hours, values, p0=(values[-1], values[0] - values[-1], 10.0), maxfev=20000)
    except RuntimeError:
        return None
    return dict(level_off=float(a), tau_hours=float(tau), at_plus_5h=float(f(hours[-1] + 5, a, b, tau)),
                at_plus_10h=float(f(hours[-1] + 10, a, b, tau)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recent", type=int, default=5, help="exports the fit uses (the last ones)")
    p.add_argument("--pace", type=int, default=3, help="exports the pace uses (the last ones)")
    p.add_argument("--out", help="write the rows and the summary as JSON here")
    args = p.parse_args(argv)
    rows = exports()
    h = np.array([r["hours"] for r in rows])
    val, mosaic, dubai = (np.array([r[k] for r in rows]) for k in ("val_vs_elic_v2", "mosaic_window", "dubai_window"))
    slope, intercept = np.polyfit(val, mosaic, 1)
    needed_val = -intercept / slope  # where the line crosses 0 on the mosaic
    recent = slice(len(rows) - args.recent, None)
    last = slice(len(rows) - args.pace, None)
    pace = {k: float(np.polyfit(h[last], y[last], 1)[0]) for k, y in
            (("val", val), ("mosaic", mosaic), ("dubai", dubai))}
    summary = dict(
        exports=len(rows), hours=float(h[-1]),
        mosaic_vs_val=dict(slope=float(slope), intercept=float(intercept),
                           correlation=float(np.corrcoef(val, mosaic)[0, 1]), val_needed_for_mosaic_0=float(needed_val)),
        pace_per_hour=pace,
        hours_to_mosaic_0_at_recent_pace=float(-mosaic[-1] / pace["mosaic"]) if pace["mosaic"] < 0 else None,
        fit_recent={k: saturating_fit(h[recent], y[recent]) for k, y in (("val", val), ("mosaic", mosaic))})
    for r in rows:
        print(f"step {r['step']:>6} {r['hours']:6.2f} h  val {r['val_vs_elic_v2']:+7.2f} %  mosaic {r['mosaic_window']:+6.2f} %"
              f"  dubai {r['dubai_window']:+6.2f} %  ({r['commit']})")
    print(f"mosaic (0.05-1 bpp) = {slope:.2f} x val + {intercept:.2f} (r = {summary['mosaic_vs_val']['correlation']:.4f}): "
          f"<= 0 needs val <= {needed_val:.2f} %")
    print(f"pace over the last {args.pace} exports, per training hour: val {pace['val']:+.3f}, "
          f"mosaic {pace['mosaic']:+.3f}, dubai {pace['dubai']:+.3f} points; mosaic at 0 in "
          f"{summary['hours_to_mosaic_0_at_recent_pace'] or float('nan'):.1f} h at that pace")
    for k, fit in summary["fit_recent"].items():
        if fit:
            print(f"fit {k}: levels off at {fit['level_off']:+.2f} % (tau {fit['tau_hours']:.1f} h); "
                  f"+5 h {fit['at_plus_5h']:+.2f}, +10 h {fit['at_plus_10h']:+.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python " + " ".join(["benchmarks/campaign_trend.py", *sys.argv[1:]]),
                                              "rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
