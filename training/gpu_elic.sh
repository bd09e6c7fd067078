#!/bin/bash
# Codec v2 on a lent GPU in one script: continue the shipped elic-v2 (or elic-lite, mapped
# to elic-v2's rate levels) with the integer entropy path's quantisation-aware training,
# on a wall-time budget, then export fp16 safetensors.
#
#   GPU_DATA=.gpu OUT=runs/gpu-elic MINUTES=9 bash training/gpu_elic.sh
#
# GPU_DATA holds train/ and val/ images (a bare GPU machine has no ../shared); OUT
# receives log.jsonl, last.pt and elic-v2.safetensors. Then, on the CPU machine:
#   python -m training.elic_card --weights OUT/elic-v2.safetensors --log OUT/log.jsonl
set -eu
G=${GPU_DATA:-.gpu}
O=${OUT:-runs/gpu-elic}
PY=${PY:-python3}
MINUTES=${MINUTES:-9}
INIT=${INIT:-core/weights/elic-v2.safetensors}
OFFSET=0
[ -f "$INIT" ] || { INIT=core/weights/elic-lite.safetensors; OFFSET=1; }
mkdir -p "$O"
exec > >(tee "$O/console.log") 2>&1
command -v nvidia-smi >/dev/null && nvidia-smi -L
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
$PY -m training.train_elic --model elic-v2 --data "$G/train" --val "$G/val" --out "$O" --device cuda \
    --init "$INIT" --init-level-offset "$OFFSET" --exact-qat --steps 1000000 --max-minutes "$MINUTES" \
    --batch 32 --crop 256 --lr 1e-4 --decay-at 0.8 --val-every 2000 --ckpt-every 500 --log-every 50
$PY -m training.train_elic --model elic-v2 --out "$O" --export "$O/elic-v2.safetensors"
