"""Raster and container formats: tiling, the container and its header, payload framing, normalisation, raster I/O, stitching."""
