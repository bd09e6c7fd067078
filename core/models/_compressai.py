"""CompressAI, imported once, quickly and without its start-up noise.

``import compressai`` imports every subpackage, including its datasets and transforms,
which import ``torchvision`` and ``torch_geometric``: about 3 s of a CLI run's start-up
on two cores, and a FutureWarning (``torch.jit.script`` is deprecated) printed on every
run. We use only the image models and entropy models, which need neither. While
compressai is imported (and only if neither is imported yet), any module of those two
packages it asks for is a placeholder whose names are stand-in classes; the placeholders
are removed from ``sys.modules`` right after, so a real ``torchvision`` imported later
(the evaluation's metrics) is unaffected. ``CODERSIC_REAL_IMPORTS=1`` imports the real
packages instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
import warnings

# needed only by compressai's datasets (point clouds, video: pandas, scipy.spatial) and transforms
_STUBS = ("torch_geometric", "torchvision", "compressai.datasets")


def _stubbed(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in _STUBS)


class _StandIn:
    """Subclassable, constructible with anything; calling an instance returns its argument
    (so ``@decorator_factory("name")`` leaves the decorated class as it is)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, obj=None, *args, **kwargs):
        return obj


class _Placeholder(types.ModuleType):
    """A module whose every public attribute is a stand-in class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_StandIn,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if _stubbed(fullname):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is used, then
    imports the real one and hands the attribute over. (The stdlib ``LazyLoader`` does not
    help here: Python 3.11's import statement reads ``__spec__``, which loads it at once.)"""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent, _, child = self.__name__.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def _defer(name: str) -> None:
    """compressai's entropy models use ``scipy.stats`` (about 1 s to import) only in
    ``update()``, which coding never calls: the tables come with the weights."""
    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


def _import():
    if any(s in sys.modules for s in _STUBS) or os.environ.get("CODERSIC_REAL_IMPORTS"):
        from compressai.entropy_models import EntropyModel
        from compressai.models import Elic2022Official

        return Elic2022Official, EntropyModel
    _defer("scipy.stats")
    finder = _PlaceholderFinder()
    sys.meta_path.insert(0, finder)
    try:
        from compressai.entropy_models import EntropyModel
        from compressai.models import Elic2022Official
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if _stubbed(n)]:
            if isinstance(sys.modules[name], _Placeholder):
                del sys.modules[name]
    return Elic2022Official, EntropyModel


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    Elic2022Official, EntropyModel = _import()



def rans_slack(length: int, symbols: int) -> int:
    """Zero bytes to append to a ``length``-byte stream of ``symbols`` symbols so that
    CompressAI's rANS decoder, which never checks the end of its buffer, stays inside it on
    a damaged stream.

    Past the stream's end a symbol reads at most one 32-bit word when it renormalises
    (``4 * symbols``); runs of bypass chunks the damaged bytes themselves encode read at
    most 16 bytes per stream byte (``16 * length``). An escaped symbol past the end (the
    state, fed zeros, landing in a ~2**-16 sliver of the table) reads at most 35 words
    more: the slack doubles the per-symbol words and adds 4 KB for those. Measured on
    random and crafted streams: never more than ``4 * symbols + 16 * length + 64``.
    """
    return 16 * length + 8 * symbols + 4096


def guard_rans_decoding(net) -> None:
    """Make every entropy model of ``net`` hand its rANS decoder a zero-padded copy of the
    stream (``rans_slack``), so a damaged stream never makes it read outside our buffer.
    A valid stream decodes the same: the decoder reads forward and stops after its symbols."""
    for module in net.modules():
        coder = getattr(module, "entropy_coder", None)
        if not isinstance(module, EntropyModel) or coder is None or getattr(coder, "crsic_guarded", False):
            continue

        def guarded(string, indexes, *args, _decode=coder.decode_with_indexes, **kwargs):
            padded = bytes(string) + bytes(rans_slack(len(string), len(indexes)))
            return _decode(padded, indexes, *args, **kwargs)

        coder.decode_with_indexes = guarded
        coder.crsic_guarded = True


__all__ = ["Elic2022Official", "EntropyModel", "guard_rans_decoding", "rans_slack"]
