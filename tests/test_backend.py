"""The CompressAI backend (core/models/compressai_backend.py): the version check, the one import
step, and the rANS bounds guard that must survive pickling and deep copies."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from core.errors import CodecError
from core.models import compressai_backend as backend
from testdata import ROOT


def test_version_check_names_the_supported_version(monkeypatch):
    assert backend.version_problem(backend.SUPPORTED_VERSION) is None
    for installed in ("1.2.9", "1.2.6", None):
        line = backend.version_problem(installed)
        assert "\n" not in line and f"compressai {backend.SUPPORTED_VERSION} only" in line
        assert f"pip install compressai=={backend.SUPPORTED_VERSION}" in line
    from core.models import rans

    monkeypatch.setattr(rans.metadata, "version", lambda name: "9.9.9")
    with pytest.raises(CodecError, match=r"compressai 9\.9\.9 is installed, but Code-RSIC supports compressai "):
        backend.check_version()


def test_a_wrong_compressai_fails_the_cli_with_one_line(tmp_path, tiny_weights):
    """Decoding with another version installed (its rANS coder is loaded, torch or not): one
    ``error:`` line, exit status 1, nothing written."""
    out_tif = tmp_path / "out.tif"
    code = ("import importlib.metadata as m; real = m.version\n"
            "m.version = lambda name: '1.3.0' if name == 'compressai' else real(name)\n"
            "from core.tile_codec import main; from core.errors import exit_now\n"
            f"exit_now(main(['decompress', 'tests/data/golden_v2_elic-tiny.crsic', '-o', {str(out_tif)!r}, "
            f"'--model', {str(tiny_weights)!r}, '--no-enhance']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert not out_tif.exists()
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == ("error: compressai 1.3.0 is installed, but Code-RSIC supports compressai "
                                  f"{backend.SUPPORTED_VERSION} only: pip install compressai=={backend.SUPPORTED_VERSION}")


def test_the_import_step_leaves_nothing_behind():
    """No placeholder stays in ``sys.modules`` or in the package, torchvision is not imported,
    and a real import of an optional compressai module still works afterwards."""
    code = ("import sys, types\n"
            "import core.models.compressai_backend as b, compressai\n"
            "left = [n for n, m in sys.modules.items() if isinstance(m, b.Placeholder)]\n"
            "left += [n for n in vars(compressai) if isinstance(getattr(compressai, n), b.Placeholder)]\n"
            "print(left, 'torchvision' in sys.modules, 'torch_geometric' in sys.modules)\n"
            "import compressai.registry.transforms as t\n"
            "print(isinstance(t, b.Placeholder), 'torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[] False False", "False True"]


def test_scipy_stats_is_imported_only_when_used():
    """Decoding never needs scipy.stats (0.7 s of start-up): it stays a LazyModule until
    CompressAI builds CDF tables (training's update()), then it is the real module."""
    code = ("import sys, core.models.compressai_backend\n"
            "print(type(sys.modules['scipy.stats']).__name__)\n"
            "from compressai.entropy_models import GaussianConditional\n"
            "print(round(float(GaussianConditional._standardized_quantile(0.025)), 6))\n"
            "import scipy.stats\n"
            "print(type(sys.modules['scipy.stats']).__name__, scipy.stats.norm.__class__.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["LazyModule", "-1.959964", "module norm_gen"]


def test_the_import_step_stubs_only_for_its_own_thread():
    finder = backend.OptionalModuleFinder()
    assert finder.find_spec("compressai.datasets") is not None
    assert finder.find_spec("torchvision") is None and finder.find_spec("compressai.models") is None
    seen = []
    other = threading.Thread(target=lambda: seen.append(finder.find_spec("compressai.datasets")))
    other.start()
    other.join()
    assert seen == [None]


def _streams(model, rng, n: int):
    """Random (damaged) streams with symbol indexes valid for ``model``'s tables."""
    tables = int(model._cdf_length.numel())
    for _ in range(n):
        symbols = int(rng.integers(1, 400))
        yield rng.bytes(int(rng.integers(0, 64))), torch.from_numpy(rng.integers(0, tables, symbols).astype(np.int32))


@pytest.mark.parametrize("how", ["as built", "pickled", "deep-copied"])
def test_damaged_streams_never_read_past_the_buffer(tiny_weights, how):
    """Every entropy model's decoder gets a zero-padded copy of the stream, also after
    pickling (CompressAI's ``__setstate__`` rebuilds the coder) or a deepcopy: the decoded
    symbols of damaged streams are those of the stream followed by zeros, whatever lies
    beyond the slack (a canary that would change them if the decoder read that far)."""
    from core.models import load_model

    net = load_model(tiny_weights).net
    models = [m for m in net.modules() if isinstance(m, backend.EntropyModel)]
    if how == "pickled":
        models = [pickle.loads(pickle.dumps(m)) for m in models]
    elif how == "deep-copied":
        net = copy.deepcopy(net)
        models = [m for m in net.modules() if isinstance(m, backend.EntropyModel)]
    assert len(models) == 1 + 3  # elic-tiny: the hyper-latent's bottleneck, a Gaussian conditional per channel group (3)
    rng = np.random.default_rng(7)
    for model in models:
        coder = model.entropy_coder
        assert isinstance(coder, backend.BoundedRansCoder), type(coder)
        tables = backend.cdf_tables(model)
        for string, indexes in _streams(model, rng, 40):
            got = backend.rans_decode(model, string, indexes).reshape(-1).tolist()
            padded = string + bytes(backend.rans_slack(len(string), len(indexes)))
            for canary in (b"\x00", b"\xa5", b"\x5a"):
                raw = coder.raw_decoder.decode_with_indexes(padded + canary * 65536, indexes.tolist(), *tables.as_args())
                assert raw == got


def test_an_unbounded_coder_is_refused(tiny_weights):
    from compressai.entropy_models import EntropyBottleneck

    plain = EntropyBottleneck(8)
    plain.update(force=True)
    with pytest.raises(TypeError, match="unbounded"):
        backend.rans_decode(plain, b"\x00" * 8, torch.zeros(4, dtype=torch.int32))


def test_symbols_are_logged_only_while_recording(tiny_weights):
    """Format 1's symbol CRC: encoder and decoder record the same symbols, and nothing
    is recorded outside ``record_symbols``."""
    from core.models import load_model

    net = load_model(tiny_weights).net
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    level = torch.tensor([0.5])
    with torch.inference_mode():
        with backend.record_symbols(net, "encode", seed=5) as enc:
            out = net.compress(x, level)
        assert enc.value not in (0, 5)
        with backend.record_symbols(net, "decode", seed=5) as dec:
            net.decompress(out["strings"], {"y": [(c, 4, 4) for c in (8, 8, 32)], "hyper": (1, 1)}, level)
        assert dec.value == enc.value
        net.compress(x, level)
    assert all(m.symbols is None for m in net.modules() if isinstance(m, backend.EntropyModel))


def test_out_of_memory_is_not_a_corrupt_stream(tiny_weights, monkeypatch):
    """An allocation failure says so and names a smaller tile; a bug stays a bug."""
    from core.codec.tile_coder import get_coder
    from core.errors import CorruptContainer, OutOfMemory

    coder = get_coder(tiny_weights)
    tile = np.random.default_rng(0).random((3, 128, 128), dtype=np.float32)
    stream, crc = coder.encode_tile(tile, 0.5)

    def fail(message):
        def decompress(*args, **kwargs):
            raise RuntimeError(message)
        return decompress

    monkeypatch.setattr(coder.exact, "decompress", fail("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(OutOfMemory, match=r"^out of memory coding a 128 x 128 px tile on cpu: .*--tile 64") as exc:
        coder.decode_tile(stream, 0.5, crc)
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(coder.exact, "decompress", fail("some bug"))
    with pytest.raises(RuntimeError, match="some bug") as exc:
        coder.decode_tile(stream, 0.5, crc)
    assert not isinstance(exc.value, CorruptContainer)


def test_the_coder_is_handed_only_the_tables_a_call_names_and_the_bytes_are_the_same(tiny_weights):
    """``rans_encode`` / ``rans_decode`` cut the tables to those the indexes name (the native
    coder converts every table on every call): the stream is byte for byte the one the full
    tables give, and decodes to the symbols, whichever subset (one table, some, all) is named."""
    from core.models import load_model
    from core.models.rans import _used_tables, rans_decode, rans_encode

    net = load_model(tiny_weights).net
    model = next(m for m in net.modules() if isinstance(m, backend.GaussianConditional))
    tables, coder = backend.cdf_tables(model), model.entropy_coder
    n = len(tables.cdfs)
    rng = np.random.default_rng(3)
    for named in ([n - 1], [0, n // 2, n - 1], list(range(n))):
        indexes = rng.choice(named, size=(4, 9, 7)).astype(np.int32)
        symbols = rng.integers(-3, 4, size=indexes.shape).astype(np.int32)
        args, renumbered = _used_tables(tables, indexes)
        used = len(np.unique(indexes))
        assert len(args[0]) == used and max(renumbered) == used - 1
        full = coder.encode_with_indexes(symbols.reshape(-1).tolist(), indexes.reshape(-1).tolist(), *tables.as_args())
        string = rans_encode(coder, tables, symbols, indexes)
        assert string == full
        assert np.array_equal(rans_decode(coder, tables, string, indexes), symbols)
