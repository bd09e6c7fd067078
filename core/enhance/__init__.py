"""Decoder-side enhancement (Code-RSIC): windows over strips, any raster, and enhanced decoding.

Names are imported on first use (PEP 562): plain decoding goes through ``decode`` and
never loads the enhancer's networks (torch).
"""

from .. import lazy_exports

_WHERE = {"StripEnhancer": "windows", "enhance_array": "windows", "enhance_tile": "windows",
          "enhance_raster": "raster", "auto_enhancement": "decode", "decompress_enhanced": "decode",
          "default_enhancement": "decode", "enhancement_reason": "decode", "enhancement_status": "decode"}

__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
