"""Widen a trained ELIC into a larger registered architecture without losing what it learned.

Function-preserving growth (in the spirit of Net2Net, Chen et al. 2016): every tensor of
the wide model starts from its own fresh initialisation, the trained tensor is copied into
its leading slice, and the weights from *new* input channels to *old* output channels are
zero, so every old channel computes exactly what it computed before. The new channels are
free to learn (their own weights are random, so gradients reach the zero blocks at once).

Two places need more than that rule:

- **New latent channels** (M grows) would cost bits from the first step. The layers that
  write them (the analysis' last conv and its attention block) get new rows scaled by
  ``LATENT_MUTE``, so they start tiny and round to zero; the new channel group's entropy
  parameters start at mean 0 and the smallest scale, so a zero costs almost no bits.
- **Reading them.** With zeros on both sides the new latents would sit on a saddle: rounded
  to zero they give the synthesis weights that read them no gradient, and zero weights give
  them none. Growing M alone (elic-v3 -> elic-v4), a first try with those zeros left the new
  channels unused after 750 steps. So the synthesis' first upsampling layer reads them with
  fresh weights scaled by ``LATENT_LISTEN``, and the synthesis' attention block at the
  latent's width passes a new channel through unchanged where it is zero (its rows that
  write new channels from the old ones are zero): a zero latent still adds nothing, and the
  distortion's gradient reaches the new channels from the first step.
- **New hyper-latent channels** (N grows) would also cost bits: the hyper-analysis writes
  zeros into them, and their factorised densities start narrow and centred on zero
  (``HYPER_INIT_SCALE``, zero biases), so a zero costs almost nothing.
- **Channel groups** must extend the old ones: the wide groups start with the old groups,
  and new groups only come after them (ELIC's context for group k sees groups < k).

Checked by ``tests/test_widen.py``: the widened model decodes the same image with the same
reconstruction and about the same estimated rate.

Example::

    python -m training.widen --src core/weights/elic-v2.safetensors --from-model elic-v2 \
        --to-model elic-v3 --out runs/elic-v3/init.pt
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn

from core.models import REGISTRY, build_model
from core.models.compressai_backend import EntropyBottleneck

from .train_elic import read_state

LATENT_MUTE = 0.01  # scale of the new latent channels' analysis rows at the start
LATENT_LISTEN = 0.1  # scale of the synthesis' fresh weights that read the new latent channels
HYPER_INIT_SCALE = 0.03  # initial width of the new hyper-latent channels' densities
EB = "latent_codec.hyper.entropy_bottleneck."
# Buffers rebuilt by ``update()`` (CDF tables) or fixed by construction (masks, tables).
_REBUILT = ("_quantized_cdf", "_cdf_length", "_offset", "scale_table", "mask", "likelihood_lower_bound",
            "lower_bound_scale")


def _out_dim(module: nn.Module) -> int:
    """Which weight dimension indexes the output channels (1 for transposed convs)."""
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def _owners(net: nn.Module) -> dict[str, nn.Module]:
    return {f"{name}.{p}" if name else p: mod for name, mod in net.named_modules()
            for p, _ in mod.named_parameters(recurse=False)}


def _new_group_keys(wide_groups, old_groups) -> list[int]:
    if tuple(wide_groups[: len(old_groups)]) != tuple(old_groups):
        raise ValueError(f"wide groups {tuple(wide_groups)} must start with the old groups {tuple(old_groups)}")
    return list(range(len(old_groups), len(wide_groups)))


def widen_state(old_state: dict, old_spec, wide_spec) -> dict:
    """The wide model's state dict, grown from ``old_state`` (see the module docstring)."""
    if old_spec.levels != wide_spec.levels:
        raise ValueError("the rate levels must match (map them with train_elic --init-level-offset first)")
    new_groups = _new_group_keys(wide_spec.groups, old_spec.groups)
    torch.manual_seed(0)
    wide = build_model(wide_spec)
    owners = _owners(wide)
    state = wide.state_dict()
    reader = f"g_s.{_first_upsampling(wide)}.weight"  # reads the latent; its fresh rows may be needed
    fresh_reader = state[reader].clone()
    M_old = old_spec.M
    for key, fresh in state.items():
        if key.rsplit(".", 1)[-1] in _REBUILT or key not in old_state:
            continue
        old = old_state[key].to(fresh.dtype)
        if old.shape == fresh.shape:
            state[key] = old.clone()
            continue
        if old.dim() != fresh.dim() or any(o > f for o, f in zip(old.shape, fresh.shape)):
            raise ValueError(f"{key}: cannot grow {tuple(old.shape)} into {tuple(fresh.shape)}")
        grown = fresh.clone()
        if key in ("log_gain", "log_inv_gain"):  # (levels, M): new channels take the level's mean gain
            grown[:, M_old:] = old.mean(1, keepdim=True)
        grown[tuple(slice(0, n) for n in old.shape)] = old
        module = owners.get(key)
        if key.endswith("weight") and grown.dim() >= 2 and module is not None:
            o = _out_dim(module)
            i = 1 - o
            cross = [slice(None)] * grown.dim()
            cross[o], cross[i] = slice(0, old.shape[o]), slice(old.shape[i], None)
            grown[tuple(cross)] = 0  # new inputs never reach old outputs
        state[key] = grown
    _mute_new_latents(state, owners, M_old)
    if wide_spec.M > M_old:
        _listen_to_new_latents(state, fresh_reader, wide, owners, M_old)
    silence_new_hyper_channels(state, old_spec.N)
    for k in new_groups:
        _start_group_silent(state, k)
    return state


def _mute_new_latents(state: dict, owners: dict, M_old: int) -> None:
    """Scale the rows that write new latent channels (g_a's last conv and attention block)."""
    last_conv = max(int(k.split(".")[1]) for k in state if k.startswith("g_a.") and k.endswith(".weight")
                    and k.count(".") == 2)
    writers = (f"g_a.{last_conv}.", f"g_a.{last_conv + 1}.")  # the last conv and its attention block
    for key, t in state.items():
        module = owners.get(key)
        if key.startswith(writers) and t.shape[0] > M_old and module is not None and _out_dim(module) == 0:
            t[M_old:] *= LATENT_MUTE


def _first_upsampling(wide: nn.Module) -> int:
    """Index in the synthesis of its first upsampling layer, the one that reads the latent."""
    return next(i for i, m in enumerate(wide.g_s) if isinstance(m, nn.ConvTranspose2d))


def _listen_to_new_latents(state: dict, fresh_reader, wide: nn.Module, owners: dict, M_old: int) -> None:
    """The synthesis reads the new latent channels (see the module docstring): the layers
    before its first upsampling (the attention block at the latent's width) write nothing
    into the new channels but the identity, and the upsampling reads them with small fresh
    weights (``fresh_reader``: its freshly initialised weight)."""
    reader = _first_upsampling(wide)
    M = state[f"g_s.{reader}.weight"].shape[0]
    for key, t in state.items():
        module = owners.get(key)
        if not key.startswith("g_s.") or int(key.split(".")[1]) >= reader or module is None:
            continue
        out = _out_dim(module) if t.dim() > 1 else 0
        if t.shape[out] == M:  # writes the latent's channels (not a hidden layer's)
            rows = [slice(None)] * t.dim()
            rows[out] = slice(M_old, None)
            t[tuple(rows)] = 0
    state[f"g_s.{reader}.weight"][M_old:] = fresh_reader[M_old:] * LATENT_LISTEN


def silence_new_hyper_channels(state: dict, N_old: int) -> None:
    """Hyper-latent channels ``N_old:``: written as zeros, coded with narrow zero-centred densities."""
    h_a = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("latent_codec.hyper.h_a.")},
                 key=lambda k: int(k.rsplit(".", 1)[1]))[-1]
    state[f"{h_a}.weight"][N_old:] = 0
    state[f"{h_a}.bias"][N_old:] = 0
    channels = state[f"{EB}quantiles"].shape[0]
    narrow = EntropyBottleneck(channels, init_scale=HYPER_INIT_SCALE).state_dict()
    for key, t in narrow.items():
        name = key.split(".")[0]
        if name in ("matrices", "factors", "quantiles"):
            state[EB + key][N_old:] = t[N_old:]
        elif name == "biases":
            state[EB + key][N_old:] = 0


def _start_group_silent(state: dict, k: int) -> None:
    """New group ``k``: entropy parameters start at mean 0 and the smallest scale."""
    prefix = f"latent_codec.y.latent_codec.y{k}.entropy_parameters."
    last = max(int(key[len(prefix):].split(".")[0]) for key in state if key.startswith(prefix))
    w, b = state[f"{prefix}{last}.weight"], state[f"{prefix}{last}.bias"]
    w.zero_()
    half = b.shape[0] // 2  # (scales, means): GaussianConditionalLatentCodec's chunk order
    b[:half] = 0.11
    b[half:] = 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.widen", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="trained weights (.safetensors or a train_elic .pt)")
    p.add_argument("--from-model", required=True, choices=sorted(REGISTRY))
    p.add_argument("--to-model", required=True, choices=sorted(REGISTRY))
    p.add_argument("--out", required=True, help="a .pt that train_elic --init reads")
    p.add_argument("--repair", action="store_true",
                   help="--src is a checkpoint of --to-model grown before the hyper channels were silenced: "
                        "silence them in place (optimiser state kept)")
    args = p.parse_args(argv)
    if args.repair:
        ck = torch.load(args.src, map_location="cpu", weights_only=True)
        silence_new_hyper_channels(ck["model"], REGISTRY[args.from_model].N)
        torch.save(ck, args.out)
        print(json.dumps({"out": args.out, "step": ck["step"]}))
        return 0
    state = widen_state(read_state(args.src), REGISTRY[args.from_model], REGISTRY[args.to_model])
    torch.save({"model": state}, args.out)
    print(json.dumps({"out": args.out, "tensors": len(state)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
