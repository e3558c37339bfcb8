#!/usr/bin/env bash
# Part B of scripts/gpu_check.sh: the four-problem experiment at 224 px on one GPU, then two more
# peak LRs for p3 (the LR sweep at the course's image size). Report, grid and sweep lines go to $1.
set -uo pipefail
OUT=${1:?usage: gpu_experiment.sh OUT}
W=/tmp/experiment; rm -rf "$W"
D="python3 -m launcher.main"
EPOCHS=${EPOCHS:-12}
echo "== $(date +%T) synth + shard"
$D synth "$W/data" --train 2048 --val 128 --test 128 --size 224 --workers 16 2>&1 | tail -n 1
$D shard "$W/data" --out "$W/shards" --workers 16 2>&1 | tail -n 1
echo "== $(date +%T) experiment p1..p4, $EPOCHS epochs, batch 32, brief's lr"
$D experiment --shards "$W/shards" --local --epochs "$EPOCHS" --batch-size 32 --out "$W/exp" 2>&1 \
    | grep -E "val PSNR|test \(best|report|error|Error" | tail -n 60
cp "$W/exp/report.md" "$OUT/report.md" 2>/dev/null
cp "$W/exp/grid.png" "$OUT/grid.png" 2>/dev/null
for LR in 1e-3 3e-3; do
    echo "== $(date +%T) p3 lr $LR"
    $D train p3 --shards "$W/shards" --run-dir "$W/p3-lr$LR" --epochs "$EPOCHS" --batch-size 32 --lr "$LR" \
        --wandb disabled 2>&1 | grep -E "val PSNR|test \(best" | tail -n 3
done
grep -h "test (best" "$W"/exp/runs/*/train.log "$W"/p3-lr*/train.log > "$OUT/sweep.txt" 2>/dev/null
