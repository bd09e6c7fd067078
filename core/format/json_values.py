"""One JSON cleaner: results as values that JSON, GeoJSON and SQLite all take."""

from __future__ import annotations

import math


def json_safe(value):
    """A JSON-safe copy of ``value``: non-finite floats become None, numpy scalars Python
    numbers, dict keys strings, tuples lists, and any other object (a path, a CRS) its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars (and 0-d arrays)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return json_safe(item())
    return str(value)
