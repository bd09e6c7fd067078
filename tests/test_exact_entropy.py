"""The integer entropy path: exact, order-independent, and close to the float networks."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.models import REGISTRY, build_model
from core.models import exact_entropy
from core.models.exact_entropy import ExactElicEntropy, ExactnessError, IntConv, to_fixed


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(1)
    net = build_model(REGISTRY["elic-tiny"]).eval()
    net.update(force=True)
    return net


def _latent(net, seed=0, size=128, level=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 3, size, size), generator=g)
    with torch.inference_mode():
        return net.g_a(x) * net._interp(net.log_gain, torch.tensor([level]))


@contextlib.contextmanager
def perturbed_float_kernels(rel: float = 1e-6, seed: int = 0):
    """Every float32 / float16 conv, conv-transpose, linear and matmul result times (1 + noise)."""
    gen = torch.Generator().manual_seed(seed)
    names = ["conv2d", "conv_transpose2d", "linear"]
    originals = {n: getattr(F, n) for n in names}
    matmul = torch.matmul

    def noisy(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            if out.dtype in (torch.float32, torch.float16):
                noise = (torch.rand(out.shape, generator=gen) * 2 - 1).to(out.dtype)
                out = out * (1 + rel * noise)
            return out
        return wrapped

    try:
        for n in names:
            setattr(F, n, noisy(originals[n]))
        torch.matmul = noisy(matmul)
        yield
    finally:
        for n in names:
            setattr(F, n, originals[n])
        torch.matmul = matmul


def test_decode_reproduces_encoder_symbols(tiny_net):
    ex = ExactElicEntropy(tiny_net)
    y = _latent(tiny_net)
    enc = ex.compress(y)
    dec = ex.decompress(enc["strings"], (2, 2))
    assert dec["crc"] == enc["crc"]
    assert torch.equal(dec["y_hat"], enc["y_hat"])
    # the decoded latent is the quantised input: within half a step of y (plus the mean's grid)
    assert float((dec["y_hat"] - y).abs().max()) <= 0.5 + 2**-7


@pytest.mark.parametrize("setting", ["perturbed", "threads1", "threads2", "no-onednn"])
def test_decode_is_independent_of_float_kernels(tiny_net, setting):
    ex = ExactElicEntropy(tiny_net)
    enc = ex.compress(_latent(tiny_net, seed=3))
    threads = torch.get_num_threads()
    if setting == "perturbed":
        ctx = perturbed_float_kernels(1e-6)
    elif setting == "no-onednn":
        ctx = torch.backends.mkldnn.flags(enabled=False)
    else:
        torch.set_num_threads(int(setting[-1]))
        ctx = contextlib.nullcontext()
    try:
        with ctx:
            dec = ExactElicEntropy(tiny_net).decompress(enc["strings"], (2, 2))
    finally:
        torch.set_num_threads(threads)
    assert dec["crc"] == enc["crc"]
    assert torch.equal(dec["y_hat"], enc["y_hat"])


def test_perturbation_helper_changes_float_results():
    """The perturbation the tests rely on really reaches float32 convolutions."""
    x = torch.rand(1, 4, 8, 8)
    w = torch.rand(4, 4, 3, 3)
    clean = F.conv2d(x, w)
    with perturbed_float_kernels(1e-3):
        noisy = F.conv2d(x, w)
        exact = F.conv2d(x.double(), w.double())
    assert not torch.equal(clean, noisy)
    assert torch.equal(exact, F.conv2d(x.double(), w.double()))


@pytest.mark.parametrize("module", [
    nn.Conv2d(8, 6, 5, padding=2),
    nn.Conv2d(8, 6, 5, stride=2, padding=2),
    nn.ConvTranspose2d(8, 6, 5, stride=2, padding=2, output_padding=1),
])
def test_int_conv_is_close_to_float(module):
    torch.manual_seed(0)
    x = torch.randn(1, 8, 12, 12) * 3
    xq = to_fixed(x) / 256
    with torch.no_grad():
        want = module(xq.float()).double()
    got = IntConv(module, torch.device("cpu"))(to_fixed(xq)) / 256
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 0.02
    # integers out: the layer's output is on the activation grid
    assert torch.equal(got * 256, torch.round(got * 256))


def test_layer_that_could_overflow_is_refused():
    wide = nn.Conv2d(2048, 1, 5)  # fan-in 51200: 2**24 * 2**15 * 51200 > 2**53
    with torch.no_grad():
        wide.weight.fill_(1.0)
    with pytest.raises(ExactnessError):
        IntConv(wide, torch.device("cpu"))


def test_qat_matches_integer_network(tiny_net):
    """Training's fake quantisation computes what the integer coder computes."""
    import copy

    from training.qat import enable, entropy_path_convs

    net = copy.deepcopy(tiny_net)
    assert enable(net) == len(entropy_path_convs(net)) > 0
    h_s = net.latent_codec.latent_codec["hyper"].h_s
    z = torch.randint(-4, 5, (1, 16, 3, 3)).float()
    with torch.no_grad():
        fake = h_s(z).double()
    exact = ExactElicEntropy(tiny_net).h_s(to_fixed(z)) / 256
    assert float((fake - exact).abs().max()) <= 2 / 256


@pytest.mark.parametrize("band_bytes", [None, 1])
def test_row_gemm_equals_convolution(monkeypatch, band_bytes):
    """One GEMM per kernel row (in bands of output rows, down to one row) gives exactly
    the convolution, masked kernels (zero kernel rows skipped) included."""
    if band_bytes:
        monkeypatch.setattr(exact_entropy, "_BAND_BYTES", band_bytes)
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 5, 5, padding=2)
    with torch.no_grad():
        conv.weight[:, :, 3:] = 0  # like a causal mask: the last kernel rows are zero
    for module in (nn.Conv2d(6, 5, 5, padding=2), conv, nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 3, padding=1)):
        layer = IntConv(module, torch.device("cpu"))
        a = torch.randint(-2**20, 2**20, (2, 6, 9, 7)).double()
        assert torch.equal(layer._row_gemm(a), F.conv2d(a, layer.weight, None, 1, module.padding))
