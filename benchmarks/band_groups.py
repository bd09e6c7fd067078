"""What each band group costs: every band coded (the default), bits per group from the container.

Compresses each raster with the CLI (no ``--bands``: every band, in groups of three) at
each quality, and reads the bytes of each band group's streams from the container
(``info``'s ``band_groups``), so a 4-band R, G, B, NIR raster shows what its NIR costs.

    python benchmarks/band_groups.py --out results/band_groups.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.codec.decompress import container_info  # noqa: E402
from core.options import DEFAULT_MODEL, DEFAULT_QUALITY, QUALITY_PRESETS  # noqa: E402

FIXTURES = ROOT.parent / "shared/data/fixtures"
RASTERS = {"naip_rgbn_5m": "naip_rgbn_uint8_5m_utm14n_opengeos_2020.tif",
           "landsat7_6band": "landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qualities", type=float, nargs="+", default=sorted({q for _, q in QUALITY_PRESETS}))
    p.add_argument("--out")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.crsic"
        for name, file in RASTERS.items():
            for q in args.qualities:
                subprocess.run([sys.executable, "-m", "core.tile_codec", "compress", str(FIXTURES / file), "-o",
                                str(out), "--quality", str(q), "--quiet", "--overwrite"], check=True, cwd=ROOT)
                info = container_info(out)
                row = {"raster": name, "quality": q, "bands": info["bands"], "bpp": round(info["bpp"], 4),
                       "groups": [{"bands": g["bands"], "bpp": round(g["bpp"], 4)} for g in info["band_groups"]],
                       "mask_bpp": round(info["mask_bytes"] * 8 / (info["width"] * info["height"]), 4)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.out:
        res = {"model": DEFAULT_MODEL, "default_quality": DEFAULT_QUALITY, "rows": rows,
               "command": "python benchmarks/band_groups.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
