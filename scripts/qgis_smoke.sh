#!/usr/bin/env bash
# Smoke test of the QGIS plugin in the real QGIS desktop, headless under xvfb-run.
#
#   bash scripts/qgis_smoke.sh [OUTPUT_DIR]        (default runs/qgis_smoke)
#
# Builds dist/coderic_qgis.zip, installs it into a throw-away QGIS profile (as a user
# would with "Install from ZIP"), enables it, points its settings at the worker Python,
# starts QGIS with scripts/qgis_smoke.py which runs Raster > Code-RSIC > "Compress layer
# with Code-RSIC" on a real GeoTIFF, and saves screenshots: dialog.png, running.png,
# qgis_after.png (main window with the before/after group and the result message),
# canvas_decoded.png / canvas_original.png; then the before/after tools: swipe.png,
# difference.png, quality.png, and Set up worker environment: setup_running.png and
# setup_done.png (a real venv and pip, against a local index of stand-ins for the
# third-party packages; SMOKE_SETUP=0 skips it). SMOKE_DOCS=docs/img also writes small
# copies of the four before/after screenshots there. Exits non-zero when anything failed.
#
# Weights: SMOKE_MODEL (a .safetensors file), else the shipped elic-lite when present,
# else seeded random elic-tiny weights made with the worker Python (the image then looks
# like noise: that checks the plumbing, not the codec's quality).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(realpath -m "${1:-runs/qgis_smoke}")
WORKER_PY=${CODERSIC_PYTHON:-$ROOT/.venv/bin/python}
RASTER_SRC=${SMOKE_RASTER:-$ROOT/tests/data/neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif}
command -v qgis >/dev/null || { echo "qgis is not installed (apt-get install qgis python3-qgis xvfb)" >&2; exit 2; }
command -v xvfb-run >/dev/null || { echo "xvfb-run is not installed (apt-get install xvfb xauth)" >&2; exit 2; }
[ -x "$WORKER_PY" ] || { echo "no worker Python at $WORKER_PY (set CODERSIC_PYTHON)" >&2; exit 2; }

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/coderic-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

/usr/bin/python3 -m coderic_qgis.build -o "$WORK/coderic_qgis.zip"
PROFILE=$WORK/profiles/profiles/smoke
mkdir -p "$PROFILE/python/plugins" "$PROFILE/QGIS"
/usr/bin/python3 -m zipfile -e "$WORK/coderic_qgis.zip" "$PROFILE/python/plugins/"
cp "$RASTER_SRC" "$WORK/raster.tif"
chmod u+w "$WORK/raster.tif"

if [ -n "${SMOKE_MODEL:-}" ]; then
  MODEL=$SMOKE_MODEL; QUALITY=${SMOKE_QUALITY:-3}
elif [ -f "$ROOT/core/weights/elic-lite.safetensors" ]; then
  MODEL=""; QUALITY=${SMOKE_QUALITY:-3}
else
  MODEL=$WORK/elic-tiny.safetensors; QUALITY=${SMOKE_QUALITY:-1.5}
  PYTHONPATH=$ROOT "$WORKER_PY" -W ignore - "$MODEL" <<'PY'
import sys, torch
from core.models import REGISTRY, build_model, save_weights
torch.manual_seed(0)
spec = REGISTRY["elic-tiny"]
net = build_model(spec).eval()
net.update(force=True)
save_weights(net, spec, sys.argv[1])
PY
  echo "no trained elic-lite weights: using random elic-tiny weights (the decoded image will look like noise)"
fi

# The plugin enabled, its worker configured as a user would in Raster > Code-RSIC > Settings.
cat > "$PROFILE/QGIS/QGIS3.ini" <<EOF
[PythonPlugins]
coderic_qgis=true

[CodeRSIC]
worker_python=$WORKER_PY
source_dir=$ROOT
threads=1

[qgis]
showTips=false
checkVersion=false
EOF

export SMOKE_OUT=$OUT SMOKE_RASTER=$WORK/raster.tif SMOKE_MODEL=$MODEL SMOKE_QUALITY=$QUALITY SMOKE_WORK=$WORK
# the set-up's pip sees only the smoke's local index, not this machine's pip configuration
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null
export QGIS_CUSTOM_CONFIG_PATH=$WORK/profiles
set +e
timeout 600 xvfb-run -a -s "-screen 0 1400x900x24" \
  qgis --profiles-path "$WORK/profiles" --profile smoke --nologo --noversioncheck --code "$ROOT/scripts/qgis_smoke.py" \
  >"$OUT/qgis.log" 2>&1
rc=$?
set -e
if [ ! -f "$OUT/report.json" ]; then
  echo "QGIS exited ($rc) without a report; last log lines:" >&2
  tail -20 "$OUT/qgis.log" >&2
  exit 1
fi
/usr/bin/python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for step in r["steps"]:
    print("  ", step)
if not r["ok"]:
    print("SMOKE FAILED:", r.get("error"), file=sys.stderr)
    sys.exit(1)
print("group:", r["group_layers"])
print("message:", r["message"][1])
for key in ("difference", "quality", "setup"):
    if key in r:
        print(f"{key}:", r[key].get("message", r[key].get("result")))
PY
echo "screenshots in $OUT: $(cd "$OUT" && ls *.png | tr '\n' ' ')"
if [ -n "${SMOKE_DOCS:-}" ]; then  # small 256-colour copies for the documentation (pillow: the worker's)
  mkdir -p "$SMOKE_DOCS"
  "$WORKER_PY" - "$OUT" "$SMOKE_DOCS" <<'PY'
import sys
from pathlib import Path
from PIL import Image
out, docs = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("swipe", "difference", "quality", "setup_running"):
    im = Image.open(out / f"{name}.png").convert("RGB")
    im = im.resize((900, round(im.height * 900 / im.width)), Image.LANCZOS)
    im.quantize(256, method=Image.Quantize.MEDIANCUT).save(docs / f"qgis_{name}.png", optimize=True)
    print("wrote", docs / f"qgis_{name}.png")
PY
fi
