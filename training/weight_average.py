"""An exponential moving average of a model's weights, kept beside a training run.

A campaign trains in sessions at a high learning rate and drops it tenfold near each
session's end, because the weights at the high rate are noisy. An average of the recent
weights removes that noise without stopping the progress: it is validated beside the live
weights, checkpointed with them, and exported instead of them when a run keeps one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    """``avg <- decay * avg + (1 - decay) * live`` over the floating-point entries of the
    model's state (parameters and buffers), after every optimiser step (``update``)."""

    def __init__(self, net: torch.nn.Module, decay: float, state: dict | None = None):
        if not 0.0 < decay < 1.0:
            raise SystemExit(f"--ema must be between 0 and 1 (e.g. 0.999), got {decay}")
        self.decay = decay
        live = net.state_dict()  # detached views of the model's own storage: they follow the optimiser
        names = [k for k, v in live.items() if v.is_floating_point()]
        self._live = [live[k] for k in names]
        start = state if state is not None and set(names) <= set(state) else live
        self.avg = {k: start[k].detach().to(live[k].device, torch.float32, copy=True) for k in names}

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(list(self.avg.values()), [t.float() for t in self._live], 1.0 - self.decay)

    def state_dict(self) -> dict:
        return self.avg

    @contextmanager
    def applied(self, net: torch.nn.Module):
        """The model holds the averaged weights inside the block, its live ones again after."""
        kept = [t.clone() for t in self._live]
        with torch.no_grad():
            for t, avg in zip(self._live, self.avg.values()):
                t.copy_(avg)
        try:
            yield net
        finally:
            with torch.no_grad():
                for t, k in zip(self._live, kept):
                    t.copy_(k)
