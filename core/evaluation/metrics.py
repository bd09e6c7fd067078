"""Image quality metrics: PSNR, MS-SSIM, LPIPS, DISTS, FID and KID, all offline.

Images are RGB ``uint8`` arrays (H, W, 3) or float tensors (N, 3, H, W) in [0, 1].
The learned metrics read converted weights from the local cache (see
``core.evaluation.weight_cache``; ``python -m core.evaluation.metric_setup setup``
creates it) and never download anything.

Definitions (written from the papers):

* PSNR: ``10 log10(peak^2 / MSE)`` over all pixels and channels, peak 255.
* MS-SSIM (Wang, Simoncelli & Bovik 2003): 11-tap Gaussian window (sigma 1.5), K1 0.01,
  K2 0.03, five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2
  average-pool between scales, per-channel then averaged over channels.
* LPIPS v0.1 (Zhang et al. 2018): input scaled to [-1, 1], shifted/scaled per channel,
  ImageNet AlexNet (or VGG16) ReLU outputs, unit-normalised along channels, squared
  difference, learned non-negative 1x1 weights, spatial mean, summed over 5 layers.
* DISTS (Ding et al. 2020): VGG16 with L2 pooling in place of max pooling; per channel
  structure (means) and texture (variances, covariance) similarities of the image and
  5 feature stages, weighted by learned alpha/beta; ``1 - weighted sum``.
* FID (Heusel et al. 2017) on the 2048-d pool3 features of the TF 2015-12-05
  Inception-v3; KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
  kernel ``(x.y / d + 1)^3``. Both take feature sets; ``image_patches`` cuts images into
  256 x 256 patches (Mentzer et al. 2020, HiFiC) so a handful of large images still give
  enough samples.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..compare.psnr import psnr_from_mse
from .weight_cache import load_weights


def to_tensor(img) -> torch.Tensor:
    """(H, W, 3) uint8 array / (N, 3, H, W) tensor -> float32 (N, 3, H, W) in [0, 1]."""
    if isinstance(img, torch.Tensor):
        x = img.float()
        return x[None] if x.dim() == 3 else x
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float()
    return x / 255.0 if arr.dtype == np.uint8 else x


# ------------------------------------------------------------------ PSNR, MS-SSIM

def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shaped arrays (``core.compare.psnr``: identical ones give
    ``PSNR_IDENTICAL``)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return psnr_from_mse(mse, peak)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter without padding ('valid'), per channel."""
    n, c, h, w = x.shape
    x = x.reshape(1, n * c, h, w)  # one grouped conv over all planes (much faster than batched on CPU)
    win = win.to(x.dtype)
    x = F.conv2d(x, win.view(1, 1, 1, -1).repeat(n * c, 1, 1, 1), groups=n * c)
    x = F.conv2d(x, win.view(1, 1, -1, 1).repeat(n * c, 1, 1, 1), groups=n * c)
    return x.reshape(n, c, *x.shape[-2:])


def _ssim_terms(x, y, win, data_range, k1=0.01, k2=0.03):
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    n = x.shape[0]
    mu_x, mu_y, xx, yy, xy = _blur_valid(torch.cat([x, y, x * x, y * y, x * y]), win).split(n)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ms_ssim(a, b, data_range: float = 255.0) -> float | torch.Tensor:
    """MS-SSIM of two images. uint8 (H, W, 3) arrays -> float; (N, C, H, W) tensors on the
    ``data_range`` scale -> (N,) tensor. The shorter side must exceed 160 pixels."""
    single = not isinstance(a, torch.Tensor)
    x = to_tensor(a) * (255.0 if single else 1.0)
    y = to_tensor(b) * (255.0 if single else 1.0)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    win = _gaussian_window()
    scales = len(MS_SSIM_WEIGHTS)
    if min(x.shape[-2:]) <= (win.numel() - 1) * 2 ** (scales - 1):
        raise ValueError(f"MS-SSIM needs images larger than 160 px on the shorter side, got {tuple(x.shape[-2:])}")
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    factors = []
    with torch.inference_mode():
        for i in range(scales):
            ssim_val, cs = _ssim_terms(x, y, win, data_range)
            if i < scales - 1:
                factors.append(torch.relu(cs).double())
                pad = [s % 2 for s in x.shape[2:]]
                x = F.avg_pool2d(x, kernel_size=2, padding=pad)
                y = F.avg_pool2d(y, kernel_size=2, padding=pad)
        factors.append(torch.relu(ssim_val).double())
        value = torch.prod(torch.stack(factors) ** weights.view(-1, 1, 1), dim=0).mean(dim=1)
    return float(value[0]) if single else value.float()


# ------------------------------------------------------------------ LPIPS

class _FrozenMetric(nn.Module):
    def freeze(self):
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def _alexnet_features() -> nn.Sequential:
    from torchvision.models import alexnet

    return alexnet(weights=None).features


def _vgg16_features() -> nn.Sequential:
    from torchvision.models import vgg16

    return vgg16(weights=None).features


def _load_prefixed(module: nn.Module, state: dict, prefix: str) -> None:
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    module.load_state_dict(sub, strict=True)


class LPIPS(_FrozenMetric):
    """LPIPS v0.1 with the AlexNet ('alex', the usual one) or VGG16 ('vgg') backbone.

    ``lpips(x, y)`` with (N, 3, H, W) tensors in [0, 1] returns (N,) distances; 0 means
    identical. ``features`` / ``from_features`` let a caller reuse a reference image's
    features against many distorted versions.
    """

    TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}

    def __init__(self, net: str = "alex", state: dict | None = None):
        super().__init__()
        if net not in self.TAPS:
            raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', not {net!r}")
        self.net_name = net
        if state is None:
            state, _ = load_weights("alexnet.safetensors" if net == "alex" else "vgg16.safetensors")
        features = _alexnet_features() if net == "alex" else _vgg16_features()
        last = self.TAPS[net][-1]
        self.features = features[: last + 1]
        _load_prefixed(self.features, state, "features.")
        self.lins = nn.ParameterList([nn.Parameter(state[f"lin{i}.weight"].float()) for i in range(5)])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.freeze()

    def features_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised backbone activations of images in [0, 1]."""
        h = ((x * 2 - 1) - self.shift) / self.scale
        taps, out = set(self.TAPS[self.net_name]), []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in taps:
                out.append(h / (torch.sqrt((h**2).sum(dim=1, keepdim=True)) + 1e-10))
        return out

    def from_features(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for a, b, w in zip(fx, fy, self.lins):
            total = total + F.conv2d((a - b) ** 2, w).mean(dim=(2, 3))
        return total.view(-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features_of(x), self.features_of(y))


# ------------------------------------------------------------------ DISTS

class L2Pool(nn.Module):
    """sqrt(blur(x^2)) with a 3x3 Hann window, stride 2 (DISTS' replacement of max pooling)."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).float()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x):
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=self.channels)
        return torch.sqrt(out + 1e-12)


class DISTS(_FrozenMetric):
    """DISTS: (N, 3, H, W) tensors in [0, 1] -> (N,) distances (0 for identical images)."""

    CHANNELS = (3, 64, 128, 256, 512, 512)
    POOLS = {4: 64, 9: 128, 16: 256, 23: 512}  # vgg16().features max-pool index -> channels
    STAGE_ENDS = (3, 8, 15, 22, 29)

    def __init__(self, vgg_state: dict | None = None, dists_state: dict | None = None):
        super().__init__()
        if vgg_state is None:
            vgg_state, _ = load_weights("vgg16.safetensors")
        if dists_state is None:
            dists_state, _ = load_weights("dists.safetensors")
        features = _vgg16_features()[:30]
        _load_prefixed(features, vgg_state, "features.")
        for index, channels in self.POOLS.items():
            features[index] = L2Pool(channels)
        self.features = features
        alpha, beta = dists_state["alpha"].float(), dists_state["beta"].float()
        total = alpha.sum() + beta.sum()
        self.register_buffer("alpha", alpha / total)
        self.register_buffer("beta", beta / total)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.freeze()

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.STAGE_ENDS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c1 = c2 = 1e-6
        alphas = torch.split(self.alpha, self.CHANNELS, dim=1)
        betas = torch.split(self.beta, self.CHANNELS, dim=1)
        structure = texture = 0
        for fx, fy, a, b in zip(self.stages(x), self.stages(y), alphas, betas):
            mx, my = fx.mean(dim=(2, 3), keepdim=True), fy.mean(dim=(2, 3), keepdim=True)
            vx = ((fx - mx) ** 2).mean(dim=(2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean(dim=(2, 3), keepdim=True)
            cov = (fx * fy).mean(dim=(2, 3), keepdim=True) - mx * my
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            s2 = (2 * cov + c2) / (vx + vy + c2)
            structure = structure + (a * s1).sum(dim=1)
            texture = texture + (b * s2).sum(dim=1)
        return (1 - (structure + texture)).view(-1)


# ------------------------------------------------------------------ FID Inception

class BasicConv2d(nn.Module):
    """conv (no bias) + batch norm (eps 1e-3) + ReLU, torchvision names."""

    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_excl(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInception(_FrozenMetric):
    """TF Inception-v3 (2015-12-05) up to pool3: images in [0, 1] -> (N, 2048) features.

    Inputs are resized to 299 x 299 (bilinear) and mapped to [-1, 1) as the TF graph
    expects (``(255 x - 128) / 128``). The blocks differ from torchvision's Inception3 as
    the TF graph does: average pools exclude padding, and the last block max-pools.
    """

    STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "pool", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "pool")
    MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, state: dict | None = None, geometry: dict | None = None):
        super().__init__()
        if state is None:
            state, meta = load_weights("inception_fid.safetensors")
            geometry = json.loads(meta["geometry"])
        self.convs = nn.ModuleDict()
        for name, geo in geometry.items():
            w = state[f"{name}.conv.weight"]
            self.convs[name.replace(".", "__")] = BasicConv2d(
                w.shape[1], w.shape[0], tuple(w.shape[2:]), geo["stride"], geo["padding"])
        sd = {k.replace(".", "__", 1) if k.startswith("Mixed") else k: v for k, v in state.items()}
        missing, unexpected = self.convs.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"Inception weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.freeze()

    def _c(self, name, x):
        return self.convs[name.replace(".", "__")](x)

    def _mixed(self, m, i, x):
        c = lambda branch, h: self._c(f"{m}.{branch}", h)  # noqa: E731
        if i < 3:  # A
            return torch.cat([c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x)),
                              c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
                              c("branch_pool", _avg_pool_excl(x))], 1)
        if i == 3:  # B
            return torch.cat([c("branch3x3", x), c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
                              F.max_pool2d(x, 3, stride=2)], 1)
        if i < 8:  # C
            b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
            bd = x
            for k in range(1, 6):
                bd = c(f"branch7x7dbl_{k}", bd)
            return torch.cat([c("branch1x1", x), b7, bd, c("branch_pool", _avg_pool_excl(x))], 1)
        if i == 8:  # D
            b3 = c("branch3x3_2", c("branch3x3_1", x))
            b7 = x
            for k in range(1, 5):
                b7 = c(f"branch7x7x3_{k}", b7)
            return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)
        # E: 7b averages, 7c max-pools its pool branch
        a = c("branch3x3_1", x)
        b = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
        pool = _avg_pool_excl(x) if i == 9 else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([c("branch1x1", x), c("branch3x3_2a", a), c("branch3x3_2b", a),
                          c("branch3x3dbl_3a", b), c("branch3x3dbl_3b", b), c("branch_pool", pool)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        h = (x * 255.0 - 128.0) / 128.0
        for name in self.STEM:
            h = F.max_pool2d(h, 3, stride=2) if name == "pool" else self._c(name, h)
        for i, m in enumerate(self.MIXED):
            h = self._mixed(m, i, h)
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


def image_patches(img: np.ndarray, size: int = 256) -> list[np.ndarray]:
    """Non-overlapping ``size`` patches (row-major, remainder dropped); a smaller image is one patch."""
    h, w = img.shape[:2]
    if h < size or w < size:
        return [img]
    return [img[y : y + size, x : x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]


def _trace_sqrt_product(f1: np.ndarray, f2: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr(sqrtm(S1 S2)) for covariances S1, S2 of the rows of f1, f2, without ``sqrtm``.

    With centred data A1, A2: S1 S2 has the eigenvalues of (A1 A2^T)(A1 A2^T)^T / ((n1-1)(n2-1)),
    so the trace is the sum of the singular values of A1 A2^T (n1 x n2) over sqrt((n1-1)(n2-1)).
    When there are more samples than dimensions, the symmetric form
    Tr sqrt(S1^1/2 S2 S1^1/2) with eigendecompositions is cheaper. Both are exact.
    """
    n1, n2, d = len(f1), len(f2), f1.shape[1]
    if min(n1, n2) <= d:
        a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
        sv = np.linalg.svd(a1 @ a2.T, compute_uv=False)
        return float(sv.sum() / math.sqrt((n1 - 1) * (n2 - 1)))
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s2 @ root)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (n, d) feature sets:
    ``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2))``."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        return math.nan
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(f1, f2, s1, s2))
    return max(value, 0.0)


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> float:
    """Kernel Inception Distance: mean unbiased MMD^2 over random subsets (cubic kernel)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    n = min(len(f1), len(f2), subset_size)
    if n < 2:
        return math.nan
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    full = n == len(f1) == len(f2)
    values = []
    for _ in range(1 if full else subsets):
        x = f1 if full else f1[rng.choice(len(f1), n, replace=False)]
        y = f2 if full else f2[rng.choice(len(f2), n, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values))


# ------------------------------------------------------------------ cached instances

_CACHE: dict[str, nn.Module] = {}


def get_metric(name: str) -> nn.Module:
    """Process-wide instances: 'lpips' (AlexNet), 'lpips-vgg', 'dists', 'inception'."""
    if name not in _CACHE:
        factories = {"lpips": lambda: LPIPS("alex"), "lpips-vgg": lambda: LPIPS("vgg"),
                     "dists": DISTS, "inception": FIDInception}
        _CACHE[name] = factories[name]()
    return _CACHE[name]


@torch.inference_mode()
def lpips(a, b, net: str = "alex") -> float:
    """LPIPS of two uint8 RGB images (H, W, 3)."""
    return float(get_metric("lpips" if net == "alex" else "lpips-vgg")(to_tensor(a), to_tensor(b))[0])


@torch.inference_mode()
def dists(a, b) -> float:
    """DISTS of two uint8 RGB images (H, W, 3)."""
    return float(get_metric("dists")(to_tensor(a), to_tensor(b))[0])


@torch.inference_mode()
def inception_features(images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """(n, 2048) pool3 features of uint8 RGB images (each resized to 299 x 299)."""
    net = get_metric("inception")
    out = []
    for i in range(0, len(images), batch):
        x = torch.cat([F.interpolate(to_tensor(im), size=(299, 299), mode="bilinear", align_corners=False)
                       for im in images[i : i + batch]])
        out.append(net(x).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))
