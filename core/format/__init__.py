"""Raster and container formats: tiling, container, header, payload, normalisation, raster I/O, vectors."""
