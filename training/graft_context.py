"""Graft a slim channel context into a running campaign, which then trains on with it.

``training.slim_context`` fits narrower channel-context networks to a model's frozen
latents. Grafted into the campaign's checkpoint (``train_elic``'s ``last.pt``), they train
on jointly with everything else: the transforms, the rest of the entropy model and their
Adam moments carry on as they were; the grafted layers keep the slim run's weights and
start fresh moments. The architecture is the registry's, so set the model's ``context``
there to the slim run's widths first; a mismatch is refused before anything is written.

    python -m training.graft_context --model elic-v3 --campaign runs/elic-v3 --slim runs/slim-v3/last.pt

The campaign's checkpoint before the graft is kept beside it as ``last_before_graft.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from core.models import REGISTRY, build_model

from .slim_context import CONTEXT
from .train_elic import split_parameters


def graft(campaign: dict, slim_model: dict, net: torch.nn.Module) -> dict:
    """A campaign checkpoint with its channel contexts taken from ``slim_model`` (a state
    dict), for ``net``'s architecture. Raises ValueError where a shape does not fit."""
    own = net.state_dict()
    main, aux = split_parameters(net)
    parameters = {n for n, _ in main + aux}
    model = {}
    for key, target in own.items():
        source = slim_model if CONTEXT in key else campaign["model"]
        if key not in source:
            raise ValueError(f"{key} is missing from the {'slim run' if CONTEXT in key else 'campaign'}")
        value = source[key]
        if (CONTEXT in key or key in parameters) and value.shape != target.shape:
            raise ValueError(f"{key}: {tuple(value.shape)} does not fit the registry's {tuple(target.shape)}")
        model[key] = value.to(target.dtype)
    names = [n for n, _ in main]
    opt = campaign["opt"]
    if len(opt["param_groups"][0]["params"]) != len(names):
        raise ValueError("the campaign's optimiser holds another set of parameters")
    # Adam's state is keyed by each parameter's place in the optimiser; grafted layers start afresh
    state = {i: s for i, s in opt["state"].items() if CONTEXT not in names[int(i)]}
    return dict(campaign, model=model, opt={"state": state, "param_groups": opt["param_groups"]})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.graft_context", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(REGISTRY), help="the campaign's architecture")
    p.add_argument("--campaign", required=True, help="the campaign's run folder (its last.pt is grafted)")
    p.add_argument("--slim", required=True, help="training.slim_context's last.pt")
    args = p.parse_args(argv)
    ckpt = Path(args.campaign) / "last.pt"
    campaign = torch.load(ckpt, map_location="cpu", weights_only=True)
    slim = torch.load(args.slim, map_location="cpu", weights_only=True)["model"]
    try:
        grafted = graft(campaign, slim, build_model(REGISTRY[args.model]))
    except ValueError as exc:
        print(f"graft_context: {exc} (is the registry's context for {args.model} the slim run's?)", file=sys.stderr)
        return 2
    tmp = ckpt.with_name("last.pt.tmp")
    torch.save(grafted, tmp)
    ckpt.replace(ckpt.with_name("last_before_graft.pt"))
    tmp.replace(ckpt)
    print(f"grafted the channel contexts of {args.slim} into {ckpt} at step {campaign['step']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
