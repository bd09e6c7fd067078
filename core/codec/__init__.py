"""Tiles to entropy-coded bytes and back: the tile coder, compress / decompress pipelines, jobs."""
