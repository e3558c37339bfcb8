#!/usr/bin/env bash
# The brief's recipe on one GPU, timed through the user's path (issue 10): the course-sized synthetic
# set (5000 / 500 / 500 triplets, 224 px, HR 896 px), `demakeup shard`, then `demakeup train` of p4
# and p3 with the resident data path (--data-cache auto) and p3 streaming (--data-cache off), plus
# `demakeup bench` of the same step for comparison. From the repo root, about 8 minutes on an H200:
#   OUT=/path/to/results bash scripts/gpu_train.sh [EPOCHS]
#   OUT=/tmp/x TRAIN=16 VAL=4 TEST=4 SIZE=32 BATCH=4 COMPILE=--no-compile bash scripts/gpu_train.sh 2   # CPU check
# Writes $OUT/summary.txt (img/s, epoch seconds, the projected 300-epoch time) and the run dirs.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}; mkdir -p "$OUT"
EPOCHS=${1:-3}
TRAIN=${TRAIN:-5000} VAL=${VAL:-500} TEST=${TEST:-500} SIZE=${SIZE:-224} BATCH=${BATCH:-64} COMPILE=${COMPILE:---compile}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
D="python3 -m launcher.main"
W=${WORK:-/tmp/demakeup-gpu-train}; rm -rf "$W"; mkdir -p "$W"
stamp() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }

stamp "synth + shard ($TRAIN / $VAL / $TEST at $SIZE px)"
$D synth "$W/data" --train "$TRAIN" --val "$VAL" --test "$TEST" --size "$SIZE" > "$W/synth.log" 2>&1 || tail -n 5 "$W/synth.log"
$D shard "$W/data" --out "$W/shards" > "$W/shard.log" 2>&1 || tail -n 5 "$W/shard.log"
du -sh "$W/shards" | tee -a "$OUT/summary.txt"

run() {  # name, extra train options
    local name=$1; shift
    stamp "train $name: $*"
    timeout 300 $D train "$@" --shards "$W/shards" --run-dir "$W/$name" --wandb disabled --batch-size "$BATCH" $COMPILE \
        > "$W/$name.log" 2>&1; echo "rc=$?" | tee -a "$OUT/summary.txt"
    $D status "$W/$name" | tee -a "$OUT/status-$name.txt"  # img/s, test metrics, epoch time
    grep -E "^(training|metrics|epoch time):" "$OUT/status-$name.txt" >> "$OUT/summary.txt"
    sed -n 's/^epoch time: \([0-9.]*\) s.*/\1/p' "$OUT/status-$name.txt" \
        | awk '{printf "the brief'"'"'s 300 epochs at this pace: %.1f min\n", 300 * $1 / 60}' | tee -a "$OUT/summary.txt"
    cp -r "$W/$name" "$OUT/$name" 2>/dev/null  # the run dir: its log says which data path was taken
}
run p4 p4 --epochs "$EPOCHS" --grad-checkpointing
run p3 p3 --epochs "$EPOCHS"
run p3-stream p3 --epochs 1 --data-cache off --num-workers 12
stamp "bench (the same step, in-memory batches)"
timeout 240 $D bench train --models p3,p4 --variants ours $COMPILE --json "$OUT/bench.json" 2>&1 | tail -n 6 \
    | tee -a "$OUT/summary.txt"
stamp done
