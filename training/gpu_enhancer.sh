#!/bin/bash
# All three enhancer stages in one short GPU session (about 8 minutes on one H200).
#
#   GPU_DATA=.gpu OUT=runs/gpu bash training/gpu_enhancer.sh
#
# GPU_DATA holds what a bare GPU machine lacks: train/ (high-quality images), val/ (a few
# validation crops), lq-val.npz (validation pairs, `training.lq_pairs --center`),
# metrics/alexnet.safetensors (LPIPS weights) and whl/ (wheels of missing packages).
# Degraded training pairs are made on the GPU with the shipped ELIC at quality 0..4.
# Every stage runs on a wall-time budget (MIN_*); its LR schedule follows that budget.
# OUT receives the exported enhancer, run folders cb/, lookup/, hpin/ (logs; model-only
# checkpoints of stages 1-2) and console.log; `training.enhancer_card --runs` reads them.
set -u
G=${GPU_DATA:-.gpu}
O=${OUT:-runs/gpu}
W=${WORK:-/tmp/enh}
DEV=${DEVICE:-cuda}
PY=${PY:-python3}
PAIRS=${PAIRS:-8000}
BATCH=${BATCH:-32}
MIN_CB=${MIN_CB:-3.0} MIN_LOOKUP=${MIN_LOOKUP:-1.1} MIN_HPIN=${MIN_HPIN:-3.6}
WATCHDOG_S=${WATCHDOG_S:-570}
mkdir -p "$O" "$W"
exec > >(tee "$O/console.log") 2>&1
if [ -z "${NO_WHEELS:-}" ] && ls "$G"/whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$G"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export CODERSIC_METRICS_DIR=$G/metrics PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
command -v nvidia-smi >/dev/null && nvidia-smi -L

collect() {  # logs and model-only checkpoints (fp32) into OUT/<stage>/; safe to call twice
    $PY - "$W" "$O" <<'PYEOF'
import shutil, sys, torch
from pathlib import Path
w, o = Path(sys.argv[1]), Path(sys.argv[2])
for stage in ("cb", "lookup", "hpin"):
    log = w / stage / "log.jsonl"
    if log.exists():
        (o / stage).mkdir(exist_ok=True)
        shutil.copy(log, o / stage / "log.jsonl")
for stage in ("cb", "lookup"):  # the hpin weights come back as the exported enhancer
    ck = w / stage / "last.pt"
    if ck.exists():
        c = torch.load(ck, map_location="cpu", weights_only=True)
        keep = {k: c[k] for k in ("model", "config", "stage", "step", "elapsed", "info") if k in c}
        torch.save(keep, o / stage / "last.pt")
PYEOF
}
fail() { echo "failed: $1"; collect; exit 1; }
( sleep "$WATCHDOG_S"; collect ) >/dev/null 2>&1 &  # saves what exists if the machine's time runs out
WATCHDOG=$!

date
$PY -m training.lq_pairs --data "$G/train" --elic core/weights/elic-lite.safetensors --out "$W/pairs.npz" \
    --count "$PAIRS" --levels -1 3 --batch 64 --device "$DEV" || fail pairs
date
$PY -m training.train_codebook --data "$G/train" --val "$G/val" --out "$W/cb" --device "$DEV" \
    --steps 100000 --batch "$BATCH" --crop 128 --max-minutes "$MIN_CB" --gan-weight 0.1 --gan-start 40000 \
    --val-every 1000 --ckpt-every 1000 --log-every 50 --val-limit 8 || fail codebook
date
$PY -m training.train_lookup --pairs "$W/pairs.npz" --val-pairs "$G/lq-val.npz" --codebook "$W/cb/last.pt" \
    --out "$W/lookup" --device "$DEV" --steps 100000 --batch "$BATCH" --crop 128 --max-minutes "$MIN_LOOKUP" \
    --val-every 1000 --ckpt-every 1000 --log-every 50 --val-limit 8 || fail lookup
date
$PY -m training.train_hpin --pairs "$W/pairs.npz" --val-pairs "$G/lq-val.npz" --codebook "$W/cb/last.pt" \
    --lookup "$W/lookup/last.pt" --out "$W/hpin" --input-skip --device "$DEV" --steps 100000 --batch "$BATCH" \
    --crop 128 --max-minutes "$MIN_HPIN" --val-every 1000 --ckpt-every 1000 --log-every 50 \
    --val-limit 8
$PY -m training.train_hpin --out "$W/hpin" --export "$O/enhancer.safetensors"
collect
kill "$WATCHDOG" 2>/dev/null
date
