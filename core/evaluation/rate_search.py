"""Matching a target bitrate: per image and codec, the quality parameter whose file is closest to it.

A safeguarded bisection on log-bpp (interpolating, with a plain halving every third
step), memoised across the targets of one image so later targets start from a tight
bracket.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .codec_adapters import Codec


@dataclass
class Encoded:
    quality: float
    data: bytes
    bpp: float
    seconds: float
    hit: bool
    tries: int


class RateSearch:
    """Encodings of one image by one codec, memoised across targets."""

    def __init__(self, codec: Codec, img: np.ndarray):
        self.codec, self.img = codec, img
        self.pixels = img.shape[0] * img.shape[1]
        self.done: dict[float, tuple[bytes, float]] = {}

    def bpp(self, q: float) -> float:
        if q not in self.done:
            t0 = time.perf_counter()
            data = self.codec.encode(self.img, q)
            self.done[q] = (data, time.perf_counter() - t0)
        return len(self.done[q][0]) * 8 / self.pixels

    def match(self, target: float, tol: float = 0.03, max_tries: int = 14) -> Encoded:
        """Parameter whose bpp is closest (in log ratio) to ``target``; ``hit`` when within ``tol``."""
        c = self.codec
        sign = 1.0 if c.increasing else -1.0
        u = lambda q: sign * q  # noqa: E731  (u grows with the bitrate)
        q_of = lambda v: sign * v  # noqa: E731
        snap = (lambda v: float(round(v))) if c.integer else (lambda v: float(v))
        err = lambda q: abs(math.log(self.bpp(q) / target))  # noqa: E731
        start = len(self.done)
        lo, hi = sorted((u(c.lo), u(c.hi)))
        # tighten the bracket with what earlier targets already measured
        for q in list(self.done):
            b = self.bpp(q)
            if b <= target and u(q) > lo:
                lo = u(q)
            if b >= target and u(q) < hi:
                hi = u(q)
        guess = c.guess(target)
        if guess is not None and lo < u(guess) < hi:
            b = self.bpp(snap(guess))
            lo, hi = (u(guess), hi) if b <= target else (lo, u(guess))
        b_lo, b_hi = self.bpp(q_of(lo)), self.bpp(q_of(hi))
        tries = 0
        while b_lo < target < b_hi and tries < max_tries:
            if min(err(q_of(lo)), err(q_of(hi))) <= math.log1p(tol):
                break
            if c.integer and hi - lo <= 1:
                break
            if hi - lo < 1e-3 * max(1.0, abs(hi)):
                break
            t = (math.log(target) - math.log(b_lo)) / (math.log(b_hi) - math.log(b_lo)) if b_hi > b_lo else 0.5
            v = lo + min(max(t if tries % 3 != 2 else 0.5, 0.1), 0.9) * (hi - lo)
            if c.integer:
                v = min(max(round(v), lo + 1), hi - 1)
            b = self.bpp(q_of(v))
            if b <= target:
                lo, b_lo = v, b
            else:
                hi, b_hi = v, b
            tries += 1
        best = min(self.done, key=err)
        data, seconds = self.done[best]
        bpp = self.bpp(best)
        return Encoded(best, data, bpp, seconds, abs(bpp / target - 1) <= tol, len(self.done) - start)
