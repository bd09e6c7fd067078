"""The CompressAI backend: everything Code-RSIC takes from CompressAI, and nothing else does.

What we use, and where it comes from:

- the model class ``Elic2022Official`` (``VariableRateElic`` subclasses it);
- the entropy models, as ``BoundedEntropyBottleneck`` / ``BoundedGaussianConditional``:
  CompressAI's own classes whose rANS coder is a ``BoundedRansCoder`` from construction
  (and again after unpickling or a deepcopy), and which log the symbols they code for the
  symbol CRC (``record_symbols``);
- the stored integer CDF tables and medians the exact integer path reads (``cdf_tables``,
  ``bottleneck_medians``), and ELIC's latent-codec layout (``elic_entropy_parts``);
- rANS coding with those tables (``rans_encode``, ``rans_decode``) and the symbol CRC
  (``SymbolCRC``).

The installed version is checked when this module loads: the private parts above change
between releases, so any version but ``SUPPORTED_VERSION`` fails with one line.

Importing CompressAI: ``import compressai`` imports all its subpackages; three of them
(``compressai.datasets``, ``compressai.transforms``, ``compressai.registry.transforms``)
import ``torchvision`` and ``torch_geometric`` (about 6 s of a CLI run's start-up on two
cores, and a FutureWarning on every run), and we use none of them. ``import_compressai``
is the one step that leaves them out: while it runs (under a lock, once per process),
those three compressai modules -- only these, never a third-party package -- are
placeholders for the importing thread, and they are taken out of ``sys.modules`` and the
package right after, so nothing of them lingers. ``CODERSIC_REAL_IMPORTS=1`` imports
everything instead. ``scipy.stats`` (0.7 s of start-up; CompressAI needs it only to build
CDF tables in ``update()``, which training does and decoding never does) is imported
lazily: the real module, imported on its first use (``LazyModule``).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass


from .rans import (SUPPORTED_VERSION, BackendVersionError, BoundedRansCoder, CdfTables, SymbolCRC,  # noqa: F401
                   check_version, rans_slack, version_problem)
from .rans import rans_decode as _rans_decode
from .rans import rans_encode as _rans_encode

# ---------------------------------------------------------------- importing CompressAI

# compressai modules that import torchvision / torch_geometric, for features we do not use
OPTIONAL_MODULES = ("compressai.datasets", "compressai.transforms", "compressai.registry.transforms")
_IMPORT_LOCK = threading.Lock()


class _StandIn:
    """Subclassable, constructible with anything; calling an instance returns its argument
    (so ``@register_transform("name")`` leaves the decorated class as it is)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, obj=None, *args, **kwargs):
        return obj


class Placeholder(types.ModuleType):
    """A module whose every public attribute is a stand-in class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_StandIn,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


def _optional(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in OPTIONAL_MODULES)


class OptionalModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Placeholders for ``OPTIONAL_MODULES``, for the thread that created the finder only."""

    def __init__(self):
        self.thread = threading.get_ident()

    def find_spec(self, fullname, path=None, target=None):
        if threading.get_ident() == self.thread and _optional(fullname):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


LAZY_MODULES = ("scipy.stats",)


class LazyModule(types.ModuleType):
    """Stands for a real module until one of its attributes is first read, then imports it
    (and puts it where the import system expects it). ``importlib.util.LazyLoader`` cannot
    be used here: on Python 3.11 an ``import`` statement reads ``__spec__`` of a module
    already in ``sys.modules``, which makes LazyLoader execute it at once."""

    def __getattr__(self, attr: str):
        real = self.__dict__.get("_real")
        if real is None:
            name = self.__name__
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = importlib.import_module(name)  # also sets it on its parent package
            self.__dict__["_real"] = real
        return getattr(real, attr)


def _import_lazily(name: str) -> None:
    """Put a ``LazyModule`` for ``name`` in ``sys.modules`` (and on its parent package)."""
    parent, _, child = name.rpartition(".")
    if name in sys.modules or importlib.util.find_spec(parent or name) is None:
        return  # already imported, or not installed: the import that needs it says so
    module = LazyModule(name)
    if parent:
        setattr(importlib.import_module(parent), child, module)
    sys.modules[name] = module


def import_compressai() -> types.ModuleType:
    """``compressai``, imported once without its optional modules (see the module's docstring)."""
    with _IMPORT_LOCK:
        if "compressai" in sys.modules or os.environ.get("CODERSIC_REAL_IMPORTS"):
            import compressai
            import compressai.entropy_models
            import compressai.models

            return compressai
        for name in LAZY_MODULES:
            _import_lazily(name)
        finder = OptionalModuleFinder()
        sys.meta_path.insert(0, finder)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                                        category=FutureWarning)
                import compressai
                import compressai.entropy_models
                import compressai.models
        finally:
            sys.meta_path.remove(finder)
            for name in sorted((n for n in sys.modules if _optional(n)), reverse=True):
                if isinstance(sys.modules[name], Placeholder):
                    del sys.modules[name]
                    parent, _, child = name.rpartition(".")
                    if isinstance(getattr(sys.modules.get(parent), child, None), Placeholder):
                        delattr(sys.modules[parent], child)
        return compressai


check_version()
# torch before the lazy scipy.stats: importing torch walks sys.modules (inspect), which would
# import the real module; after the version check, so a wrong compressai fails before the slow part
import torch  # noqa: E402
import_compressai()
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional  # noqa: E402
from compressai.models import Elic2022Official  # noqa: E402


# (rANS coding, its slack and the symbols CRC live in the torch-free ``core.models.rans``)

class _Bounded:
    """What our entropy models add to CompressAI's: the bounded coder, made in ``__init__``
    and in ``__setstate__`` (which CompressAI's own uses to rebuild an unguarded coder), and
    the symbol log of the float path (format 1): the encoder's ``quantize(..., "symbols")``
    and the decoder's ``dequantize`` feed ``self.symbols`` while ``record_symbols`` runs."""

    def _bind(self) -> None:
        self.entropy_coder = BoundedRansCoder()
        self.symbols: tuple[str, SymbolCRC] | None = None

    def __setstate__(self, state):
        super().__setstate__(state)
        self._bind()

    def quantize(self, inputs, mode, means=None):
        out = super().quantize(inputs, mode, means)
        if mode == "symbols" and self.symbols is not None and self.symbols[0] == "encode":
            self.symbols[1].add(out)
        return out

    def dequantize(self, inputs, means=None, dtype=torch.float):
        if self.symbols is not None and self.symbols[0] == "decode":
            self.symbols[1].add(inputs)
        return EntropyModel.dequantize(inputs, means, dtype)


class BoundedEntropyBottleneck(_Bounded, EntropyBottleneck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bind()


class BoundedGaussianConditional(_Bounded, GaussianConditional):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bind()


def _bounded_copy(module: EntropyModel) -> EntropyModel:
    if isinstance(module, EntropyBottleneck):
        new = BoundedEntropyBottleneck(module.channels, tail_mass=module.tail_mass, init_scale=module.init_scale,
                                       filters=module.filters)
    elif isinstance(module, GaussianConditional):
        new = BoundedGaussianConditional(None, scale_bound=float(module.lower_bound_scale.bound),
                                         tail_mass=module.tail_mass)
        new.scale_table = module.scale_table.clone()
    else:
        raise TypeError(f"no bounded version of {type(module).__name__}")
    new.load_state_dict(module.state_dict())
    return new


def use_bounded_entropy_models(net: torch.nn.Module) -> None:
    """Put a ``Bounded*`` entropy model in place of each of CompressAI's in a freshly built
    network (call it in the network's constructor, before any weights are loaded)."""
    with torch.random.fork_rng(devices=[]):  # the copies' initial values are the originals'
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, EntropyModel) and not isinstance(child, _Bounded):
                    setattr(parent, name, _bounded_copy(child))
    left = [type(m).__name__ for m in net.modules() if isinstance(m, EntropyModel) and not isinstance(m, _Bounded)]
    if left:
        raise TypeError(f"entropy models left unbounded: {left}")


@contextmanager
def record_symbols(net: torch.nn.Module, mode: str, seed: int = 0):
    """While the block runs, the symbols the float path codes (``mode`` "encode" or
    "decode") go into the yielded ``SymbolCRC``."""
    crc = SymbolCRC(seed)
    models = [m for m in net.modules() if isinstance(m, _Bounded)]
    for m in models:
        m.symbols = (mode, crc)
    try:
        yield crc
    finally:
        for m in models:
            m.symbols = None


# ---------------------------------------------------------------- what the integer path reads

@dataclass(frozen=True)
class GroupParts:
    """One channel group of ELIC's latent codec (checkerboard + Gaussian conditional)."""

    context_prediction: torch.nn.Module
    entropy_parameters: torch.nn.Module
    gaussian_conditional: GaussianConditional
    anchor_parity: str


@dataclass(frozen=True)
class ElicEntropyParts:
    """ELIC's latent codec, by role: hyper-analysis / synthesis, the bottleneck of ``z``,
    the channel groups with their channel contexts (``channel_context[k - 1]`` for group k)."""

    h_a: torch.nn.Module
    h_s: torch.nn.Module
    bottleneck: EntropyBottleneck
    groups: tuple[int, ...]
    channel_context: tuple[torch.nn.Module, ...]
    group_parts: tuple[GroupParts, ...]


def elic_entropy_parts(net: torch.nn.Module) -> ElicEntropyParts:
    lc = net.latent_codec
    hyper, groups_codec = lc.latent_codec["hyper"], lc.latent_codec["y"]
    groups = tuple(groups_codec.groups)
    parts = []
    for k in range(len(groups)):
        cb = groups_codec.latent_codec[f"y{k}"]
        parts.append(GroupParts(cb.context_prediction, cb.entropy_parameters, cb.latent_codec["y"].gaussian_conditional,
                                cb.anchor_parity))
    return ElicEntropyParts(hyper.h_a, hyper.h_s, hyper.entropy_bottleneck, groups,
                            tuple(groups_codec.channel_context[f"y{k}"] for k in range(1, len(groups))), tuple(parts))


def bottleneck_medians(bottleneck: EntropyBottleneck) -> torch.Tensor:
    """The hyper-latent's per-channel medians, (1, C, 1, 1)."""
    return bottleneck._get_medians().detach().reshape(1, -1, 1, 1)


_TABLES: dict[int, tuple] = {}


def cdf_tables(model: EntropyModel) -> CdfTables:
    """An entropy model's stored integer CDF tables as the rANS coder takes them (cached)."""
    key = id(model)
    cached = _TABLES.get(key)
    if cached is None or cached[0] is not model:
        cached = _TABLES[key] = (model, CdfTables(model._quantized_cdf.tolist(),
                                                  model._cdf_length.reshape(-1).int().tolist(),
                                                  model._offset.reshape(-1).int().tolist()))
    return cached[1]


def rans_encode(model: EntropyModel, symbols: torch.Tensor, indexes: torch.Tensor) -> bytes:
    """rANS-encode integer symbols with an entropy model's stored CDF tables."""
    return _rans_encode(model.entropy_coder, cdf_tables(model), symbols.cpu().numpy(), indexes.cpu().numpy())


def rans_decode(model: EntropyModel, string: bytes, indexes: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rans_encode`` (through the model's bounded coder), shaped as ``indexes``."""
    if not isinstance(model.entropy_coder, BoundedRansCoder):
        raise TypeError(f"{type(model).__name__} has an unbounded rANS decoder")
    return torch.from_numpy(_rans_decode(model.entropy_coder, cdf_tables(model), string, indexes.cpu().numpy()))


__all__ = ["SUPPORTED_VERSION", "BackendVersionError", "BoundedEntropyBottleneck", "BoundedGaussianConditional",
           "BoundedRansCoder", "CdfTables", "Elic2022Official", "ElicEntropyParts", "EntropyModel", "GroupParts",
           "SymbolCRC", "bottleneck_medians", "cdf_tables", "check_version", "elic_entropy_parts", "import_compressai",
           "rans_decode", "rans_encode", "rans_slack", "record_symbols", "use_bounded_entropy_models",
           "version_problem"]
