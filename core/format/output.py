"""Output files: may it be written, atomic replacement, and the one write error.

The one check that an output may be written, atomic replacement, and the one error
(``OutputFailed``) for a write the file system refuses (disk full...)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadInput, OutputExists, OutputFailed


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing output (unless ``overwrite``) or a missing folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists(f"output exists: {path} (use --overwrite to replace it)")
    if not path.parent.is_dir():
        raise BadInput(f"output folder does not exist: {path.parent}")
    return path


def reason(exc: BaseException) -> str:
    """An OSError (or a GDAL I/O error) as one short line: "No space left on device"."""
    text = getattr(exc, "strerror", None) or str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or "previous exception" in text):  # rasterio's "See previous exception"
        text = str(cause) or text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def write_failed(path, exc: BaseException) -> OutputFailed:
    """The error for a write the file system refused (disk full, quota, permissions)."""
    return OutputFailed(f"could not write {path}: {reason(exc)}")


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False):
    """Yield a temporary path next to ``path``; rename it into place only on success.

    On any error the temporary file is removed; an ``OSError`` of our own steps (making
    the temporary file, renaming it) is an ``OutputFailed``. Writers inside the block turn
    their own write errors into ``OutputFailed`` (``write_failed``)."""
    path = check_output(path, overwrite)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failed(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def held_stderr():
    """Hold back what C libraries print to file descriptor 2 during the block (libtiff
    prints "_tiffWriteProc: File too large." when a disk fills, before GDAL raises): it is
    printed after the block if the block succeeds, and dropped if it fails, since the
    one-line error then says what happened."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    held = tempfile.TemporaryFile()
    try:
        os.dup2(held.fileno(), 2)
        yield
    except BaseException:
        os.dup2(saved, 2)
        raise
    else:
        os.dup2(saved, 2)
        held.seek(0)
        text = held.read()
        if text:
            os.write(2, text)
    finally:
        os.close(saved)
        held.close()


class Partial:
    """The partial file of a resumable output (``resumable_output``)."""

    def __init__(self, path: Path, exists: bool):
        self.path, self.exists = path, exists
        self.keep = False  # set while the file is another job's: an error then leaves it alone


def partial_path(path: str | Path) -> Path:
    """Where a resumable job writes ``path`` until it is complete: ``.NAME.partial`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


@contextmanager
def resumable_output(path: str | Path, overwrite: bool = False, resume: bool = False):
    """Like ``atomic_output``, but the temporary file has a fixed name (``partial_path``), so a
    job killed part-way (kill -9, power loss) leaves it for ``resume``; yields a ``Partial``
    (``exists``: a partial file is there to continue). Without ``resume`` any old partial file
    is replaced. An error, or an interruption Python sees (Ctrl-C), removes the partial file
    (nothing half-written), unless it is another job's (``Partial.keep``); only a job killed
    outright (kill -9, power loss) leaves it."""
    path = check_output(path, overwrite)
    tmp = partial_path(path)
    partial = Partial(tmp, resume and tmp.is_file())
    try:
        yield partial
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failed(path, exc) from None
    except BaseException:
        if not partial.keep:
            tmp.unlink(missing_ok=True)
        raise
