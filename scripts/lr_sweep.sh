#!/usr/bin/env bash
# The learning-rate sweep behind the default LR (docs/results.md): one network, one synthetic set,
# the brief's recipe at several peak LRs; prints each run's test metrics and best val PSNR
# (`demakeup status` of the finished run).
#   bash scripts/lr_sweep.sh [MODEL] [SIZE] [TRAIN] [EPOCHS] [LRS...]
set -euo pipefail
MODEL=${1:-p3}; SIZE=${2:-64}; TRAIN=${3:-256}; EPOCHS=${4:-6}; shift $(( $# < 4 ? $# : 4 ))
LRS=${*:-1e-2 3e-3 1e-3}
W=${SWEEP_DIR:-/tmp/lr_sweep}
D="python -m launcher.main"
[ -d "$W/shards" ] || { $D synth "$W/data" --train "$TRAIN" --val 64 --test 64 --size "$SIZE" --seed 7 >/dev/null 2>&1
                        $D shard "$W/data" --out "$W/shards" >/dev/null 2>&1; }
for LR in $LRS; do
    rm -rf "$W/$MODEL-$LR"
    $D train "$MODEL" --shards "$W/shards" --run-dir "$W/$MODEL-$LR" --epochs "$EPOCHS" --batch-size 8 \
        --lr "$LR" --wandb disabled --num-workers 1 >/dev/null 2>&1
    echo "== lr $LR"
    $D status "$W/$MODEL-$LR" | grep -E "^(training|metrics|best val PSNR):"
done
