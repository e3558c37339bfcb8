#!/usr/bin/env bash
# The GPU checks of a lent machine (one H100/H200), run from the repo root by the `device` tool:
#   part A (bench):      scripts/gpu_bench.sh, then DeepSpeed ZeRO-2 / ZeRO-3 real runs + resume
#   part B (experiment): synthetic set at 224, LR sweep on p3, then p1..p4 with the report
# Usage: bash scripts/gpu_check.sh A|B   (results under $OUT)
set -uo pipefail
PART=${1:?usage: gpu_check.sh A|B}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
if [ -d .whl ]; then  # packages the GPU image lacks, carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
D="python3 -m launcher.main"
stamp() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

if [ "$PART" = A ]; then
    stamp bench; PYTHON=python3 timeout 300 bash scripts/gpu_bench.sh 2>&1 | tail -n 60
    stamp deepspeed
    W=/tmp/ds; rm -rf $W
    $D synth $W/data --train 256 --val 32 --test 32 --size 64 --workers 16 >/dev/null 2>&1
    $D shard $W/data --out $W/shards --workers 16 >/dev/null 2>&1
    for Z in 2 3; do
        timeout 150 $D train p4 --shards $W/shards --run-dir $W/z$Z --epochs 2 --batch-size 32 --strategy deepspeed \
            --zero $Z --precision bf16 --num-workers 4 --save-every-steps 4 > $W/z$Z.log 2>&1
        echo "zero$Z rc=$? $(tail -n 1 $W/z$Z/train.log)"
    done
    # resume a ZeRO-2 run from a mid-epoch checkpoint: stop it with the STOP file, then --resume latest
    ( for _ in $(seq 600); do [ -d $W/r2/checkpoints/step-00000004 ] && break; sleep 0.2; done; touch $W/r2/STOP ) &
    timeout 150 $D train p4 --shards $W/shards --run-dir $W/r2 --epochs 2 --batch-size 32 --strategy deepspeed \
        --zero 2 --precision bf16 --num-workers 4 --save-every-steps 4 > $W/r2a.log 2>&1; echo "stop rc=$? $($D status $W/r2 | grep '^training:')"
    timeout 150 $D train p4 --shards $W/shards --run-dir $W/r2 --resume latest > $W/r2b.log 2>&1
    echo "resume rc=$? $(grep -h 'resumed from\|test (best' $W/r2/train.log | tail -n 2)"
    tail -n 3 $W/z3.log; cat $W/z2/results.json $W/z3/results.json > "$OUT/deepspeed.json" 2>/dev/null
fi

if [ "$PART" = B ]; then
    stamp deepspeed zero2
    W=/tmp/ds; rm -rf $W
    $D synth $W/data --train 128 --val 32 --test 32 --size 64 --workers 16 >/dev/null 2>&1
    $D shard $W/data --out $W/shards --workers 16 >/dev/null 2>&1
    timeout 90 $D train p4 --shards $W/shards --run-dir $W/z2 --epochs 1 --batch-size 32 --strategy deepspeed \
        --zero 2 --precision bf16 > $W/z2.log 2>&1; echo "zero2 rc=$?"; grep -v "^\s*$" $W/z2.log | grep -iE "error|exception|raise|test \(best" | head -n 12
    stamp experiment
    timeout 320 bash scripts/gpu_experiment.sh "$OUT" 2>&1 | tail -n 60
fi
stamp done
