"""Output files: the one check that an output may be written, and atomic replacement."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadInput, OutputExists


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing output (unless ``overwrite``) or a missing folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists(f"output exists: {path} (use --overwrite to replace it)")
    if not path.parent.is_dir():
        raise BadInput(f"output folder does not exist: {path.parent}")
    return path


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False):
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
