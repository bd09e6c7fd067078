"""Decoder-side enhancement (Code-RSIC): windows over strips, any raster, and enhanced decoding."""

from .decode import auto_enhancement, decompress_enhanced, default_enhancement, enhancement_reason, enhancement_status
from .raster import enhance_raster
from .windows import StripEnhancer, enhance_array, enhance_tile

__all__ = ["StripEnhancer", "auto_enhancement", "decompress_enhanced", "default_enhancement", "enhance_array",
           "enhance_raster", "enhance_tile", "enhancement_reason", "enhancement_status"]
