"""Small facts written once: the JSON cleaner and the GeoTIFF creation profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import rasterio

from core.format.json_values import json_safe
from core.format.raster_io import GEOTIFF_CREATION, geotiff_profile


def test_json_safe_gives_values_json_takes():
    value = {"a": math.nan, 1: (math.inf, -math.inf, 2.5), "n": np.float32(1.5), "i": np.int64(3),
             "p": Path("x/y.tif"), "b": True, "none": None, "nested": [{"z": np.float64("nan")}]}
    safe = json_safe(value)
    assert safe == {"a": None, "1": [None, None, 2.5], "n": 1.5, "i": 3, "p": "x/y.tif", "b": True, "none": None,
                    "nested": [{"z": None}]}
    assert type(safe["i"]) is int and json.loads(json.dumps(safe, allow_nan=False)) == safe


def test_every_geotiff_writer_uses_the_one_profile(tmp_path, neon_rgb):
    """Decoded, enhanced and difference rasters: one layout, the predictor by data type."""
    from core.enhance.raster import _output_profile
    from core.compare.difference import _profile

    with rasterio.open(neon_rgb) as ds:
        profiles = {"enhanced": _output_profile(ds), "difference": _profile(ds, 10, 20, ds.transform),
                    "plain": geotiff_profile(10, 20, 3, "uint16", ds.crs, ds.transform)}
    for name, profile in profiles.items():
        assert {k: profile[k] for k in GEOTIFF_CREATION} == GEOTIFF_CREATION, name
    assert profiles["difference"]["predictor"] == 3 and profiles["enhanced"]["predictor"] == 2
    assert profiles["enhanced"]["photometric"] == "RGB" and "photometric" not in profiles["plain"]
    out = tmp_path / "x.tif"
    with rasterio.open(out, "w", **profiles["difference"]) as dst:
        dst.write(np.zeros((1, 20, 10), np.float32))
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate" and ds.block_shapes[0] == (256, 256)
