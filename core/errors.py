"""One error hierarchy: every user-facing failure is a ``CodecError`` printed as one line.

Standard library only (the QGIS plugin may load it). Every front end turns a
``CodecError`` into exit status ``EXIT_USER_ERROR`` with ``report``.
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 1  # the exit status of every CLI for a user-facing error
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM (128 + SIGINT), the status of every CLI and the worker


class CodecError(Exception):
    """A user-facing failure (bad input, corrupt container, wrong weights...)."""


class BadInput(CodecError):
    """A parameter out of range, or an input that cannot be read."""


class UnsupportedRaster(BadInput):
    """A raster the codec cannot code (data type, bands)."""


class OutputExists(CodecError):
    """The output file exists and overwriting was not asked for."""


class OutputFailed(CodecError):
    """An output that could not be written (disk full, permissions...); nothing was left behind."""


class CorruptContainer(CodecError):
    """A container that is truncated, damaged or not a container at all."""


class DesyncError(CodecError):
    """The decoded latent symbols differ from the encoder's (checksum mismatch)."""


class ModelMismatch(CodecError):
    """Weights that do not fit: not the container's model, or not the registry's file."""


class OutOfMemory(CodecError):
    """The machine (or GPU) ran out of memory; the message names a smaller tile to try."""


class WeightsUnavailable(CodecError):
    """Weights (codec, enhancer or metric) that are not installed."""


def report(exc: CodecError, stream=None) -> int:
    """Print ``error: <one line>`` and return the exit status for a user-facing error."""
    print(f"error: {exc}", file=stream or sys.stderr)
    return EXIT_USER_ERROR


def exit_now(status: int):
    """End a command-line process with ``status`` without tearing the interpreter down.

    Freeing PyTorch's modules and tensors at interpreter shutdown takes about 0.8 s on two
    cores, after the work is done and the output is in place. The exit handlers still run
    (temporary files, logging, Dask clusters); only the module teardown is skipped."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(status)
