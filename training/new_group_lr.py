"""Larger optimiser steps for the weights that serve a latent channel group added by widening.

``training/widen.py`` gives a new channel group tiny weights on both sides (the analysis rows
that write it, the synthesis rows that read it), so it starts unused and the old model's
function is kept. Adam moves every weight by about the learning rate a step, whatever its
gradient's size, so rows ten times smaller than the trained ones take hundreds of steps at a
fine-tuning rate just to reach their scale. ``NewGroupSteps`` multiplies the step Adam takes
on those weights alone, leaving the trained weights on their own schedule:

- in the transforms, the rows of the new channels in every tensor whose first dimension is
  the latent's width (the analysis' last conv and attention block, the synthesis' attention
  block and the first upsampling layer that reads the latent);
- every weight of the group's own entropy model (its channel context, spatial context and
  entropy parameters), which are new as a whole.

With ``freeze_rest`` every other weight stays as it is (``train_elic --new-group-only``): the
new group alone learns, against the old model's fixed output, so its steps can be large
without moving what the old channels do.

Used by ``train_elic --new-group-lr-scale`` / ``--new-group-only`` for ``--rounded-rate-groups``.
"""

from __future__ import annotations

import torch
from torch import nn


def new_group_slices(net: nn.Module, groups: tuple[int, ...], group: int) -> list[tuple[str, torch.Tensor, slice]]:
    """(name, parameter, rows) for every weight that writes, reads or codes channel group ``group``."""
    start, width = sum(groups[:group]), sum(groups)
    rows = slice(start, start + groups[group])
    own = (f"latent_codec.y.latent_codec.y{group}.", f"latent_codec.y.channel_context.y{group}.")
    out = []
    for name, p in net.named_parameters():
        if name.startswith(own):
            out.append((name, p, slice(None)))
        elif name.startswith(("g_a.", "g_s.")) and p.dim() and p.shape[0] == width:
            out.append((name, p, rows))
    return out


class NewGroupSteps:
    """Scale the optimiser's step on some parameter rows: ``before()`` then ``opt.step()`` then
    ``after()``. With ``freeze_rest`` (the parameters the optimiser trains), none of those moves
    but the targets: they take no gradient, and the other rows of a tensor that holds target
    rows are put back after the step."""

    def __init__(self, targets: list[tuple[str, torch.Tensor, slice]], scale: float,
                 freeze_rest: list[torch.Tensor] | None = None):
        self.targets, self.scale, self.freeze_rest, self._saved = targets, scale, bool(freeze_rest), []
        held = {id(p) for _, p, _ in targets}
        self._frozen = [p for p in freeze_rest or [] if id(p) not in held and p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)

    def before(self) -> None:
        self._saved = [p.detach().clone() if self.freeze_rest else p.detach()[rows].clone()
                       for _, p, rows in self.targets]

    @torch.no_grad()
    def after(self) -> None:
        for (_, p, rows), old in zip(self.targets, self._saved):
            if self.freeze_rest:
                moved = old.clone()
                moved[rows] = old[rows] + self.scale * (p[rows] - old[rows])
                p.copy_(moved)
            else:
                moved = p[rows]
                moved.copy_(old + self.scale * (moved - old))
        self._saved = []

    def release(self) -> None:
        """Every weight trains again."""
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
