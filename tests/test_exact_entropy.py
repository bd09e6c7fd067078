"""The integer entropy path: exact, order-independent, and close to the float networks."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.models import REGISTRY, build_model
from core.models import int_layers
from core.models.exact_entropy import ExactElicEntropy, IntegerTables
from core.models.int_layers import ExactnessError, to_fixed
from core.models.tables_from_torch import integer_sequence, integer_tables


def int_conv(module):
    """The integer layer of one torch convolution."""
    (layer,) = integer_sequence(module).layers
    return layer


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
        return (net.g_a(x) * net._interp(net.log_gain, torch.tensor([level]))).numpy()


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
    ex = ExactElicEntropy(integer_tables(tiny_net))
    y = _latent(tiny_net)
    enc = ex.compress(y)
    dec = ex.decompress(enc["strings"], (2, 2))
    assert dec["crc"] == enc["crc"]
    assert np.array_equal(dec["y_hat"], enc["y_hat"])
    # the decoded latent is the quantised input: within half a step of y (plus the mean's grid)
    assert float(np.abs(dec["y_hat"] - y).max()) <= 0.5 + 2**-7


def test_saved_tables_code_the_same_bytes(tiny_net, tmp_path):
    """Tables saved and loaded (what coding runs on) give the converted network's streams."""
    tables = integer_tables(tiny_net)
    tables.save(tmp_path / "tables.npz")
    y = _latent(tiny_net, seed=5, level=2.0)
    a = ExactElicEntropy(tables).compress(y, 7)
    b = ExactElicEntropy(IntegerTables.load(tmp_path / "tables.npz")).compress(y, 7)
    assert a["strings"] == b["strings"] and a["crc"] == b["crc"]


def test_tables_gains_follow_the_network(tiny_net):
    """NumPy's interpolated gains are torch's within a float32 rounding, at and between levels."""
    tables = integer_tables(tiny_net)
    for level in (-1.0, 0.0, 0.5, 1.75, tiny_net.levels - 1.0):
        for inverse, table in ((False, tiny_net.log_gain), (True, tiny_net.log_inv_gain)):
            want = tiny_net._interp(table, torch.tensor([level])).detach().numpy()
            assert np.allclose(tables.gains(level, inverse), want, rtol=2e-7, atol=0), (level, inverse)


def test_tables_of_another_layout_are_refused(tiny_net, tmp_path):
    tables = integer_tables(tiny_net)
    tables.arrays["tables_version"] = np.asarray(99)
    tables.save(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="another layout"):
        IntegerTables.load(tmp_path / "old.npz")


@pytest.mark.parametrize("setting", ["perturbed", "threads1", "threads2", "no-onednn"])
def test_decode_is_independent_of_float_kernels(tiny_net, setting):
    ex = ExactElicEntropy(integer_tables(tiny_net))
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
            dec = ExactElicEntropy(integer_tables(tiny_net)).decompress(enc["strings"], (2, 2))
    finally:
        torch.set_num_threads(threads)
    assert dec["crc"] == enc["crc"]
    assert np.array_equal(dec["y_hat"], enc["y_hat"])


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
    xq = to_fixed(x.numpy()) / 256
    with torch.no_grad():
        want = module(torch.from_numpy(xq).float()).double().numpy()
    got = int_conv(module)(to_fixed(xq)) / 256
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) < 0.02
    # integers out: the layer's output is on the activation grid
    assert np.array_equal(got * 256, np.round(got * 256))


def test_layer_that_could_overflow_is_refused():
    wide = nn.Conv2d(2048, 1, 5)  # fan-in 51200: 2**24 * 2**15 * 51200 > 2**53
    with torch.no_grad():
        wide.weight.fill_(1.0)
    with pytest.raises(ExactnessError):
        int_conv(wide)


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
    exact = ExactElicEntropy(integer_tables(tiny_net)).h_s(to_fixed(z.numpy())) / 256
    assert float(np.abs(fake.numpy() - exact).max()) <= 2 / 256


@pytest.mark.parametrize("band_bytes", [None, 1])
def test_row_gemm_equals_convolution(monkeypatch, band_bytes):
    """One GEMM per kernel row (in bands of output rows, down to one row) gives exactly
    the convolution, masked kernels (zero kernel rows skipped) included."""
    if band_bytes:
        monkeypatch.setattr(int_layers, "_BAND_BYTES", band_bytes)
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 5, 5, padding=2)
    with torch.no_grad():
        conv.weight[:, :, 3:] = 0  # like a causal mask: the last kernel rows are zero
    for module in (nn.Conv2d(6, 5, 5, padding=2), conv, nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 3, padding=1)):
        layer = int_conv(module)
        a = torch.randint(-2**20, 2**20, (2, 6, 9, 7)).double()
        want = F.conv2d(a, torch.from_numpy(layer.weight), None, 1, module.padding).numpy()
        assert np.array_equal(layer._row_gemm(a.numpy()), want)


@pytest.mark.parametrize("stride, padding, output_padding", [(1, 1, 0), (2, 2, 1), (2, 1, 0), (3, 0, 2)])
def test_numpy_convolutions_equal_torch(stride, padding, output_padding):
    """The NumPy convolutions the integer path runs are torch's, exactly, on integer inputs."""
    from core.models.int_layers import conv2d, conv_transpose2d

    g = torch.Generator().manual_seed(stride * 10 + padding)
    a = torch.randint(-2**20, 2**20, (2, 5, 7, 6), generator=g).double()
    w = torch.randint(-2**15, 2**15, (4, 5, 3, 3), generator=g).double()
    want = F.conv2d(a, w, None, stride, padding).numpy()
    assert np.array_equal(conv2d(a.numpy(), w.numpy(), (stride, stride), (padding, padding)), want)
    wt = torch.randint(-2**15, 2**15, (5, 4, 5, 5), generator=g).double()
    want = F.conv_transpose2d(a, wt, None, stride, padding, output_padding).numpy()
    got = conv_transpose2d(a.numpy(), wt.numpy(), (stride,) * 2, (padding,) * 2, (output_padding,) * 2)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("band_bytes", [None, 1])
@pytest.mark.parametrize("parity", ["even", "odd"])
def test_the_spatial_context_at_non_anchors_equals_the_full_convolution(monkeypatch, band_bytes, parity):
    """``IntConv.at_non_anchors`` reads only the anchors: the same integers as the full masked
    convolution of the joined checkerboard (non-anchors zero), split to its non-anchors, for
    checkerboard masks, an unmasked kernel and odd heights; the anchors' aggregation without
    the zero context channels equals the full one."""
    from compressai.layers import CheckerboardMaskedConv2d

    from core.models.int_layers import Sequence, _relu, join_checkerboard, split_checkerboard

    if band_bytes:
        monkeypatch.setattr(int_layers, "_BAND_BYTES", band_bytes)
    torch.manual_seed(3)
    for module in (CheckerboardMaskedConv2d(6, 12, 5, padding=2), CheckerboardMaskedConv2d(4, 8, 3, padding=1),
                   nn.Conv2d(6, 5, 5, padding=2)):
        layer = int_conv(module)
        for h, w in ((8, 10), (7, 6), (1, 4)):
            anchors = torch.randint(-2**20, 2**20, (2, module.in_channels, h, w // 2)).double().numpy()
            joined = join_checkerboard([anchors, np.zeros_like(anchors)], parity)
            want = split_checkerboard(layer(joined), parity)[1]
            assert np.array_equal(layer.at_non_anchors(anchors, parity), want), (module, h, w)
            assert np.array_equal(Sequence([layer]).at_non_anchors(anchors, parity), want)
            two = Sequence([layer, _relu])  # not a single convolution: the full one, split
            assert np.array_equal(two.at_non_anchors(anchors, parity), np.maximum(want, 0))

    first, second = int_conv(nn.Conv2d(10, 8, 1)), int_conv(nn.Conv2d(8, 4, 1))
    side = torch.randint(-2**20, 2**20, (1, 6, 4, 3)).double().numpy()
    full = Sequence([first, _relu, second])(np.concatenate([np.zeros((1, 4, 4, 3)), side], axis=1))
    assert np.array_equal(Sequence([first.without_inputs(4), _relu, second])(side), full)


def test_qat_layers_trace_into_one_graph(tiny_net):
    """The fake quantisation has no data-dependent Python step, so ``train_elic --compile``
    compiles the entropy path's layers with the rest of the step instead of breaking its graph
    at each of them."""
    import copy

    from training.qat import enable

    net = copy.deepcopy(tiny_net)
    enable(net)
    h_s = net.latent_codec.latent_codec["hyper"].h_s
    z = torch.randint(-4, 5, (1, 16, 3, 3)).float()
    explained = torch._dynamo.explain(h_s)(z)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    with torch.no_grad():
        assert torch.equal(torch.compile(h_s, backend="eager")(z), h_s(z))
