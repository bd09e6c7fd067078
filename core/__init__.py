"""Code-RSIC for GIS: learned compression of large georeferenced rasters."""

import os
import sys
from importlib import import_module

__version__ = "0.1.0"

# The integer entropy path runs NumPy GEMMs on OpenBLAS, between the transforms' runtime
# calls. OpenBLAS's idle threads spin for 2**28 cycles by default, stealing the cores the
# runtime then needs: 12.6 s of system time in an 8192 px compress, 2.7 s with 2**4
# (measured; results/codec_throughput_torchfree.json). Read when OpenBLAS loads, so here,
# before any NumPy import of ours; a value the user set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def openblas_coretype(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The OpenBLAS kernels for this CPU, from its instruction-set flags (Linux; None elsewhere
    or without AVX2).

    OpenBLAS picks its kernels by the CPU's model number; a virtual machine that hides the
    model (``Intel(R) Xeon(R) Processor``) gets its generic SSE3 kernels ("Prescott"). There
    the float64 GEMMs of the integer entropy path ran at 9.6 GFLOP/s on one core against 63.0
    with the AVX-512 kernels (results/blas_kernels.json). The GEMMs sum exact integers
    below 2**53 (``core.models.exact_entropy``), so every kernel gives the same symbols."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= set(flags):
        return "SkylakeX"
    if {"avx2", "fma"} <= set(flags):
        return "Haswell"
    return None


# Read when OpenBLAS loads, like the timeout; a kernel set the user chose is kept.
if "OPENBLAS_CORETYPE" not in os.environ and "numpy" not in sys.modules:
    _coretype = openblas_coretype()
    if _coretype:
        os.environ["OPENBLAS_CORETYPE"] = _coretype


def lazy_exports(package: str, where: dict[str, str]):
    """A package's ``__getattr__`` (PEP 562) that imports each name of ``where`` (name ->
    submodule) on its first use, so importing the package does not import what the names
    need (torch) until then."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{where[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
