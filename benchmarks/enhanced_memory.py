"""Peak memory (whole process tree) of the enhanced decoding of an 8192 x 8192 Dubai mosaic,
quality 3, with the current settings, once as is and once with glibc's arenas capped at 2.

    python benchmarks/enhanced_memory.py            # add --runtime openvino to measure that enhancer
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_throughput import build_raster, run_usage  # noqa: E402


def main(argv=None) -> int:
    extra = list(argv if argv is not None else sys.argv[1:])
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "enhanced_memory"
    folder.mkdir(exist_ok=True)
    src, crsic = folder / "r8192.tif", folder / "r8192.crsic"
    if not src.exists():
        build_raster(src, 8192, [Path(p) for p in sorted(glob.glob(str(ROOT.parent / "shared/data/val/dubai/*.jpg")))])
    py = [sys.executable, "-m", "core.tile_codec"]
    run_usage(py + ["compress", str(src), "-o", str(crsic), "--quality", "3", "--quiet", "--overwrite"])
    rows = []
    for env in ({}, {"MALLOC_ARENA_MAX": "2"}):
        os.environ.pop("MALLOC_ARENA_MAX", None)
        os.environ.update(env)
        seconds, peak, _ = run_usage(py + ["decompress", str(crsic), "-o", str(folder / "enh.tif"), "--quiet",
                                           "--overwrite", *extra])
        rows.append({"env": env, "seconds": seconds, "peak_mb": peak})
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
