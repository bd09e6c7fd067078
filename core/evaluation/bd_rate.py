"""Bjontegaard delta rate between rate-quality curves, and the table of a run's BD-rates."""

from __future__ import annotations

import math

import numpy as np

BD_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")
SMALL_OVERLAP = 0.25  # BD-rates over less of the shorter curve's quality range are flagged unreliable


def quality_axis(metric: str, values: np.ndarray) -> np.ndarray:
    """Metric values -> an axis that grows with quality (MS-SSIM in dB, distances negated)."""
    if metric == "ms_ssim":
        return -10 * np.log10(np.clip(1 - values, 1e-10, None))
    if metric in ("lpips", "dists", "fid", "kid"):
        return -values
    return values


def bd_rate(rate_a, q_a, rate_t, q_t, with_overlap: bool = False, rate_window: tuple[float, float] | None = None):
    """Bjontegaard delta rate (%) of test vs anchor: mean log-rate difference at equal quality,
    over the overlapping quality range, each curve interpolated with a monotone cubic (PCHIP).
    Negative: the test codec needs fewer bits. NaN when the curves do not overlap or a curve
    is not monotonic. ``with_overlap``: also return the overlap as a fraction of the shorter
    curve's quality range (a small overlap makes the number unreliable). ``rate_window``
    (low, high): only the qualities at which both codecs code within that rate range (each
    curve's qualities at ``low`` and ``high``, on its interpolation, within its measured
    range), e.g. a target's "over 0.05-1.0 bpp"; the overlap is then of that range."""
    from scipy.interpolate import PchipInterpolator

    def curve(r, q):
        r, q = np.asarray(r, float), np.asarray(q, float)
        ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
        r, q = r[ok], q[ok]
        order = np.argsort(q)
        r, q = r[order], q[order]
        if len(q) < 2 or np.any(np.diff(q) <= 0) or np.any(np.diff(r) <= 0):
            return None
        return PchipInterpolator(q, np.log(r)), q[0], q[-1]

    def within(c, window):
        """The part of curve ``c``'s quality range where its rate lies in ``window``."""
        f, q0, q1 = c
        lo, hi = q0, q1
        for rate, side in zip(window, ("low", "high")):
            roots = f.solve(math.log(rate), extrapolate=False)
            roots = roots[(roots >= q0) & (roots <= q1)]
            if side == "low":
                lo = float(roots[0]) if len(roots) else (q0 if f(q0) >= math.log(rate) else q1)
            else:
                hi = float(roots[-1]) if len(roots) else (q1 if f(q1) <= math.log(rate) else q0)
        return f, lo, hi

    a, t = curve(rate_a, q_a), curve(rate_t, q_t)
    value, overlap = math.nan, 0.0
    if a is not None and t is not None:
        if rate_window is not None:
            a, t = within(a, rate_window), within(t, rate_window)
        lo, hi = max(a[1], t[1]), min(a[2], t[2])
        if hi > lo:
            diff = (t[0].integrate(lo, hi) - a[0].integrate(lo, hi)) / (hi - lo)
            value = float((math.exp(diff) - 1) * 100)
            overlap = float((hi - lo) / min(a[2] - a[1], t[2] - t[1]))
    return (value, overlap) if with_overlap else value


def bd_table(summary, codec_names, anchor, metrics) -> dict:
    """{codec: {metric: {"bd_rate": %, "overlap": fraction}}} of every codec against ``anchor``."""
    keys = [m for m in BD_METRICS if any(m in r for r in summary[anchor])]
    table = {}
    for name in codec_names:
        if name == anchor:
            continue
        table[name] = {}
        for m in keys:
            a, t = summary[anchor], summary[name]
            value, overlap = bd_rate(
                [r["bpp"] for r in a], quality_axis(m, np.array([r.get(m, math.nan) for r in a], float)),
                [r["bpp"] for r in t], quality_axis(m, np.array([r.get(m, math.nan) for r in t], float)),
                with_overlap=True)
            table[name][m] = {"bd_rate": value, "overlap": overlap}
    return table
