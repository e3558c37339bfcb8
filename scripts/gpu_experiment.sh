#!/usr/bin/env bash
# Part B of scripts/gpu_check.sh: the four-problem experiment at 224 px on one GPU, with the brief's
# networks and with `residual: true` (docs/results.md). Report, grid and test lines go to $1.
set -uo pipefail
OUT=${1:?usage: gpu_experiment.sh OUT}
W=/tmp/experiment; rm -rf "$W"
D="python3 -m launcher.main"
EPOCHS=${EPOCHS:-6}; TRAIN=${TRAIN:-1280}
echo "== $(date +%T) synth + shard ($TRAIN train triplets at 224)"
$D synth "$W/data" --train "$TRAIN" --val 128 --test 128 --size 224 --workers 16 2>&1 | tail -n 1
$D shard "$W/data" --out "$W/shards" --workers 16 2>&1 | tail -n 1
echo "== $(date +%T) brief's networks p1..p4, $EPOCHS epochs, batch 32, lr 1e-2"
$D experiment --shards "$W/shards" --local --epochs "$EPOCHS" --batch-size 32 --out "$W/brief" 2>&1 \
    | grep -E "test \(best|Error|error" | tail -n 20
cp "$W/brief/report.md" "$OUT/report_brief.md"; cp "$W/brief/grid.png" "$OUT/grid_brief.png"
echo "== $(date +%T) residual networks (demakeup experiment --residual)"
$D experiment --shards "$W/shards" --local --epochs "$EPOCHS" --batch-size 32 --residual --out "$W/res" 2>&1 \
    | tail -n 25
cp "$W/res/report.md" "$OUT/report_residual.md" 2>/dev/null; cp "$W/res/grid.png" "$OUT/grid_residual.png" 2>/dev/null
