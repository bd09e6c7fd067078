#!/bin/bash
# The ELIC campaign (issue 20) on a lent GPU in one script: continue the committed candidate
# (elic-v3; grown from elic-v2 by training/widen.py when no candidate is committed) with the
# campaign's recipe, larger batches and crops, on a wall-time budget, then export fp16
# safetensors.
#
#   GPU_DATA=.gpu OUT=runs/gpu-elic MINUTES=9 bash training/gpu_elic.sh
#
# GPU_DATA holds train/ and val/ images (a bare GPU machine has no ../shared); OUT
# receives log.jsonl, last.pt and $MODEL.safetensors. Then, on the CPU machine:
#   python benchmarks/campaign_report.py --log OUT/log.jsonl --out results/campaign
set -eu
G=${GPU_DATA:-.gpu}
O=${OUT:-runs/gpu-elic}
PY=${PY:-python3}
MINUTES=${MINUTES:-9}
MODEL=${MODEL:-elic-v3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu to test the recipe here first
INIT=${INIT:-core/weights/$MODEL.safetensors}
mkdir -p "$O"
exec > >(tee "$O/console.log") 2>&1
command -v nvidia-smi >/dev/null && nvidia-smi -L
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if [ ! -f "$INIT" ]; then
  $PY -m training.widen --src core/weights/elic-v2.safetensors --from-model elic-v2 --to-model "$MODEL" --out "$O/init.pt"
  INIT="$O/init.pt"
fi
$PY -m training.train_elic --model "$MODEL" --data "$G/train" --val "$G/val" --out "$O" --device "$DEVICE" \
    --init "$INIT" --exact-qat --high-rate-weight 3 --steps 1000000 --max-minutes "$MINUTES" \
    --batch 32 --crop 256 --lr 1e-4 --decay-at 0.8 --val-every 2000 --ckpt-every 500 --log-every 50 --val-limit 16
$PY -m training.train_elic --model "$MODEL" --out "$O" --export "$O/$MODEL.safetensors"
