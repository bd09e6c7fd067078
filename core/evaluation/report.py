"""Writing a run's results: results.json, the bd_rate.md tables and the rate-distortion plots."""

from __future__ import annotations

import json
import math
from pathlib import Path


from ..format.json_values import json_safe
from .bd_rate import BD_METRICS, SMALL_OVERLAP

METRIC_LABELS = {"psnr": "PSNR (dB) higher is better", "ms_ssim": "MS-SSIM higher is better",
                 "lpips": "LPIPS (AlexNet) lower is better", "dists": "DISTS lower is better",
                 "fid": "FID (256 px patches) lower is better", "kid": "KID lower is better"}


def _fmt(v, digits=2):
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def markdown_tables(result: dict) -> str:
    """bd_rate.md: means per target, BD-rates against each anchor, throughput."""
    lines = []
    summary = result["summary"]
    keys = [m for m in BD_METRICS if any(m in r for rows in summary.values() for r in rows)]
    lines.append("## Mean per target bitrate\n")
    lines.append("| codec | target bpp | bpp | hit | " + " | ".join(keys) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(keys))
    digits = {"psnr": 2, "ms_ssim": 4, "lpips": 4, "dists": 4, "fid": 1, "kid": 4}
    for name, rows in summary.items():
        for r in rows:
            vals = " | ".join(_fmt(r.get(m), digits[m]) for m in keys)
            lines.append(f"| {name} | {r['target_bpp']} | {r['bpp']:.3f} | {r['hit_rate']:.0%} | {vals} |")
    for anchor, table in result["bd_rate"].items():
        if not table:
            continue
        cols = list(next(iter(table.values())).keys())
        lines.append(f"\n## BD-rate vs {anchor} (%; negative = fewer bits for the same quality)\n")
        lines.append("| codec | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for name, row in table.items():
            cells = []
            for cell in row.values():
                v = cell["bd_rate"]
                if v is None or not math.isfinite(v):
                    cells.append("n/a")
                else:
                    cells.append(f"{v:+.1f}" + (" †" if cell["overlap"] < SMALL_OVERLAP else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(f"\nn/a: the curves do not overlap in quality, or one is not monotonic. †: they overlap on "
                     f"less than {SMALL_OVERLAP:.0%} of the shorter curve's quality range (unreliable).")
    lines.append("\n## Throughput (megapixels per second, final encode / decode)\n")
    lines.append("| codec | encode | decode |")
    lines.append("|---|---|---|")
    for name, t in result["throughput"].items():
        lines.append(f"| {name} | {t['encode_mpx_per_s']:.2f} | {t['decode_mpx_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path) -> list[Path]:
    """One ``rd_<metric>.png`` per metric present: mean metric vs measured bpp per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    keys = [m for m in BD_METRICS
            if any(r.get(m) is not None and math.isfinite(r.get(m)) for rows in summary.values() for r in rows)]
    written = []
    for m in keys:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name, rows in summary.items():
            pts = [(r["bpp"], r[m]) for r in rows if r.get(m) is not None and math.isfinite(r[m])]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", label=name)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(alpha=0.3)
        ax.legend()
        title = f"{len(result['config']['images'])} images, mean per target bpp"
        if m in ("fid", "kid"):
            patches = max((r.get("fid_patches") or 0) for rows in summary.values() for r in rows)
            title = f"{len(result['config']['images'])} images, {patches} patches of 256 px"
        ax.set_title(title)
        fig.tight_layout()
        path = out / f"rd_{m}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(result: dict, out: Path) -> list[Path]:
    """results.json (atomically), bd_rate.md and the plots in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(result), indent=1))
    tmp.replace(path)
    md = out / "bd_rate.md"
    md.write_text(markdown_tables(result))
    return [path, md] + plot(result, out)
