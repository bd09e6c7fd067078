"""The codec's contract inside the plugin: ``core/options.py`` and ``core/errors.py``, unchanged.

The plugin takes every default, limit, check and job parameter dataclass from
``core.options`` (and the error classes from ``core.errors``), and always imports them
from here::

    from ._contract import errors, options

Both files import only the standard library, so QGIS's Python loads them without torch.
They are loaded under this package's name, never as ``core.*``, so it does not matter
whether (or which) ``core`` package is on QGIS's ``sys.path``. Where the files come from:

* the built plugin zip (``python3 -m coderic_qgis.build``) has copies of them in this
  folder, next to this file;
* in a source checkout (the plugin folder linked into QGIS's profile, or the tests),
  this folder holds only this file, and the package's path is the checkout's ``core/``:
  the plugin then reads core's own files, so there is nothing to keep in sync.
"""

from __future__ import annotations

from pathlib import Path

FILES = ("options.py", "errors.py")  # what the build copies here (options.py imports errors.py)

_HERE = Path(__file__).resolve().parent
if not all((_HERE / name).is_file() for name in FILES):
    _CORE = _HERE.parents[1] / "core"
    if not all((_CORE / name).is_file() for name in FILES):
        raise ImportError(f"the Code-RSIC plugin found neither its copy of core/options.py in {_HERE} nor a "
                          f"source checkout's {_CORE}: install it from the zip built by python3 -m coderic_qgis.build")
    __path__ = [str(_CORE)]  # noqa: F811 - the submodules below are read from the checkout's core/

from . import errors, options  # noqa: E402

__all__ = ["FILES", "errors", "options"]
