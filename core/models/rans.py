"""rANS coding with integer CDF tables, and the symbols CRC, without torch.

CompressAI's rANS coder is a small native extension (``compressai.ans``) that links no
torch, but ``import compressai`` imports torch and all of CompressAI. ``ans_module`` loads
the extension file alone, registered under its own name so a later ``import compressai``
uses the same module, and decoding a container never pays for torch.

``CdfTables`` is what the coder reads for one entropy model (CompressAI's
``_quantized_cdf``, ``_cdf_length`` and ``_offset``); ``core.models.exact_entropy``
exports them from a network once and keeps them with its integer tables.
"""

from __future__ import annotations

import array
import importlib.machinery
import importlib.util
import sys
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import CodecError

ANS_MODULE = "compressai.ans"
SUPPORTED_VERSION = "1.2.8"


class BackendVersionError(CodecError):
    """The installed CompressAI is not the release this code reads the private parts of."""


def version_problem(installed: str | None) -> str | None:
    """One line when ``installed`` (None: not installed) is not the supported CompressAI."""
    if installed == SUPPORTED_VERSION:
        return None
    found = f"compressai {installed} is installed" if installed else "compressai is not installed"
    return (f"{found}, but Code-RSIC supports compressai {SUPPORTED_VERSION} only: "
            f"pip install compressai=={SUPPORTED_VERSION}")


def check_version() -> None:
    try:
        installed = metadata.version("compressai")
    except metadata.PackageNotFoundError:
        installed = None
    problem = version_problem(installed)
    if problem:
        raise BackendVersionError(problem)


def ans_module():
    """CompressAI's native rANS module, loaded without importing the ``compressai`` package."""
    module = sys.modules.get(ANS_MODULE)
    if module is not None:
        return module
    check_version()  # the native coder's stream format is that release's
    spec = importlib.util.find_spec("compressai")  # finds the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("compressai is not installed (pip install compressai)")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"ans{suffix}"
            if path.exists():
                ext = importlib.util.spec_from_file_location(ANS_MODULE, path)
                module = importlib.util.module_from_spec(ext)
                ext.loader.exec_module(module)
                sys.modules[ANS_MODULE] = module  # one copy: the native types register once
                return module
    raise ImportError("compressai's rANS extension (compressai/ans*.so) is missing: reinstall compressai")


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


class BoundedRansCoder:
    """CompressAI's rANS encoder and decoder, the decoder always handed a zero-padded copy
    of the stream (``rans_slack``), so a damaged stream never makes it read outside our
    buffer. A valid stream decodes the same: the decoder reads forward and stops after its
    symbols. Pickles as a fresh coder (the native coders do not pickle)."""

    name = "ans"  # what CompressAI's EntropyModel.__getstate__ records

    def __init__(self):
        ans = ans_module()
        self._encoder = ans.RansEncoder()
        self.raw_decoder = ans.RansDecoder()  # unguarded: for measurements only (benchmarks/fuzz_containers.py)

    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_lengths, offsets) -> bytes:
        return self._encoder.encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_lengths, offsets) -> list[int]:
        padded = bytes(string) + bytes(rans_slack(len(string), len(indexes)))
        return self.raw_decoder.decode_with_indexes(padded, indexes, cdfs, cdf_lengths, offsets)

    def __reduce__(self):
        return (BoundedRansCoder, ())


@dataclass
class CdfTables:
    """One entropy model's integer CDF tables, as the rANS coder takes them."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]

    def as_args(self) -> tuple[list, list, list]:
        return self.cdfs, self.lengths, self.offsets

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        width = max(len(c) for c in self.cdfs)
        padded = np.zeros((len(self.cdfs), width), np.int32)
        for i, c in enumerate(self.cdfs):
            padded[i, : len(c)] = c
        return {f"{prefix}.cdfs": padded, f"{prefix}.cdf_lengths": np.asarray(self.lengths, np.int32),
                f"{prefix}.offsets": np.asarray(self.offsets, np.int32)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "CdfTables":
        return cls(arrays[f"{prefix}.cdfs"].tolist(), arrays[f"{prefix}.cdf_lengths"].tolist(),
                   arrays[f"{prefix}.offsets"].tolist())


def _used_tables(tables: CdfTables, indexes) -> tuple[tuple[list, list, list], list[int]]:
    """The coder's table arguments cut to the tables ``indexes`` name, and the indexes
    renumbered into them. The native coder converts every table it is handed on every call
    (one of elic-lite-s's latent table sets is 64 tables of 200 k integers in all: 2.2 ms a
    call) and a call names few of them; the symbols and bytes are the same."""
    flat = np.asarray(indexes, np.int32).reshape(-1)
    used = np.flatnonzero(np.bincount(flat, minlength=len(tables.cdfs))) if flat.size else np.arange(0)
    if flat.size == 0 or len(used) == len(tables.cdfs):
        return tables.as_args(), flat.tolist()
    renumber = np.zeros(len(tables.cdfs), np.int32)
    renumber[used] = np.arange(len(used), dtype=np.int32)
    args = ([tables.cdfs[i] for i in used], [tables.lengths[i] for i in used], [tables.offsets[i] for i in used])
    return args, renumber[flat].tolist()


def rans_encode(coder: BoundedRansCoder, tables: CdfTables, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
    """rANS-encode integer symbols, each with the table its index names."""
    args, renumbered = _used_tables(tables, indexes)
    return coder.encode_with_indexes(np.asarray(symbols, np.int32).reshape(-1).tolist(), renumbered, *args)


def rans_decode(coder: BoundedRansCoder, tables: CdfTables, string: bytes, indexes: np.ndarray) -> np.ndarray:
    """Inverse of ``rans_encode``: int32 symbols shaped as ``indexes``."""
    args, renumbered = _used_tables(tables, indexes)
    values = coder.decode_with_indexes(string, renumbered, *args)
    # through a C int array: a third of the time of np.array(list)
    return np.frombuffer(array.array("i", values), dtype=np.int32).reshape(np.shape(indexes))


class SymbolCRC:
    """CRC32 of coded symbols, in coding order (format 2 seeds it with the tile's index)."""

    def __init__(self, value: int = 0):
        self.value = value

    def add(self, symbols) -> None:
        if not isinstance(symbols, np.ndarray):  # a torch tensor (the float path, format 1)
            symbols = symbols.detach().to("cpu").numpy()
        self.value = zlib.crc32(np.ascontiguousarray(symbols, dtype=np.int32).tobytes(), self.value)
