#!/usr/bin/env bash
# Does tiling close elic-v3's gap on mosaics of separate scenes? The held-out-like UCM mosaic
# (large_raster_rd.py's val-mosaic, 4096 x 2560) coded at two qualities with the default
# tiling (768 px, format 3) and with smaller tiles (format 3; format 2 without overlap, each
# tile coded and synthesised alone), plain decoding, whole files, 1 thread.
#   bash benchmarks/mosaic_tiling.sh > results/campaign/mosaic_tiling.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
$PY -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from large_raster_rd import build_named_raster
build_named_raster(Path('$TMP/mosaic.tif'), 'val-mosaic', 3072, [])"
for q in 4 8; do
  for v in "--tile 768" "--tile 256" "--tile 256 --format 2 --overlap 0" "--tile 512"; do
    $PY -m core.tile_codec compress "$TMP/mosaic.tif" -o "$TMP/m.crsic" --model elic-v3 --quality $q $v --threads 1 --quiet --overwrite > /dev/null
    $PY -m core.tile_codec decompress "$TMP/m.crsic" -o "$TMP/m.tif" --no-enhance --threads 1 --quiet --overwrite > /dev/null
    $PY -c "
import os, rasterio, numpy as np
a = rasterio.open('$TMP/mosaic.tif').read().astype(np.float64); b = rasterio.open('$TMP/m.tif').read().astype(np.float64)
bpp = os.path.getsize('$TMP/m.crsic') * 8 / (a.shape[1] * a.shape[2])
print('quality $q', '$v:', 'bpp %.4f psnr %.3f' % (bpp, 10 * np.log10(255**2 / np.mean((a - b) ** 2))), flush=True)"
  done
done
