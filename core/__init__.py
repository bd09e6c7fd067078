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
