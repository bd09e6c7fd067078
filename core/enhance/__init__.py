"""Decoder-side enhancement (Code-RSIC): windows over strips, any raster, and enhanced decoding.

Names are imported on first use (PEP 562): plain decoding goes through ``decode`` and
never loads the enhancer's networks (torch).
"""

from importlib import import_module

_WHERE = {"StripEnhancer": "windows", "enhance_array": "windows", "enhance_tile": "windows",
          "enhance_raster": "raster", "auto_enhancement": "decode", "decompress_enhanced": "decode",
          "default_enhancement": "decode", "enhancement_reason": "decode", "enhancement_status": "decode"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
