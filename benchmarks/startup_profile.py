"""Where the start-up to the first tile goes: the whole ``compress`` of a 256 px raster and the
whole plain ``decompress`` of its container (one tile: the time is start-up), and the
cumulative import time of the heaviest packages in the compress (``python -X importtime``).

    python benchmarks/startup_profile.py --out results/startup_profile.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import build_raster  # noqa: E402

PACKAGES = ("torch", "openvino", "rasterio", "numpy", "compressai", "core.cli", "core.codec.jobs")


def import_times(stderr: str) -> dict[str, float]:
    """Cumulative seconds of each top-level entry of ``-X importtime`` named in PACKAGES."""
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if name in PACKAGES and name not in out:
            out[name] = int(cumulative) / 1e6
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args(argv)
    images = sorted((ROOT.parent / "shared/data/val/dubai").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "startup.tif", Path(tmp) / "startup.crsic"
        build_raster(src, 256, images)
        cmd = [sys.executable, "-m", "core.tile_codec", "compress", str(src), "-o", str(out), "--quiet", "--overwrite"]
        decode = [sys.executable, "-m", "core.tile_codec", "decompress", str(out), "-o", str(Path(tmp) / "d.tif"),
                  "--quiet", "--overwrite", "--no-enhance"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)  # caches made (first use of the weights)
        walls, decode_walls, imports = [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(decode, cwd=ROOT, check=True, capture_output=True)
            decode_walls.append(time.perf_counter() - t0)
            res = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], cwd=ROOT, check=True,
                                 capture_output=True, text=True)
            imports.append(import_times(res.stderr))
    result = {"command": "benchmarks/startup_profile.py " + " ".join(argv or sys.argv[1:]),
              "whole_compress_256px_s": float(np.median(walls)),
              "whole_decompress_256px_s": float(np.median(decode_walls)),
              "import_s": {k: float(np.median([i[k] for i in imports if k in i])) for k in PACKAGES
                           if any(k in i for i in imports)}}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
