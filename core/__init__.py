"""Code-RSIC for GIS: learned compression of large georeferenced rasters."""

__version__ = "0.1.0"
