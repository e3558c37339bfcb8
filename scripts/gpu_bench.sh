#!/usr/bin/env bash
# One-shot GPU benchmark for docs/performance.md (issue 6), on one H100 / H200, about 4 minutes.
#
#   OUT=/path/to/results PYTHONPATH=. bash scripts/gpu_bench.sh          # from the repository root
#   BENCH_TINY=1 OUT=/tmp/x PYTHONPATH=. bash scripts/gpu_bench.sh       # same flow, tiny, on CPU
#
# Writes to $OUT: summary.txt (the merged table, the data engine's rates including the HR JPEG decode
# on one CPU core vs nvJPEG), bench.json (every row and run, the machine), log.txt (timestamped
# progress and every process's output).
#
# Why several processes: one torch.compile of p4 takes about a minute, six in a row would not fit.
# The benchmark processes below start together and compile at the same time (CPU work); each then
# waits at a shared gate (demakeup bench --gate) until all are ready, and they time one at a time
# under a lock, so no two timed runs share the GPU (eager-only processes wait before their first
# step, so cuDNN's algorithm timing sees an idle GPU too). Each measurement is its own process with its
# own time limit: one failure or time-out loses only its rows. `demakeup bench --merge` then tables them.
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # the repository's packages, installed or not
mkdir -p "$OUT"
START=$(date +%s)
WORK=$(mktemp -d)
say() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }

if [ "${BENCH_TINY:-0}" = 1 ]; then  # CPU check of the script itself
  COMMON=(--device cpu --batch-size 2 --size 64 --steps 1 --warmup 1 --precision fp32)
  COMPILE=${BENCH_TINY_COMPILE:---no-compile}  # CPU compiles of p4 take minutes on 2 cores
  SHARDS=(--shard-samples 8 --num-workers 1)
  GATE_TIMEOUT=600; LIMIT=900; DEVICE=cpu
  export OMP_NUM_THREADS=1  # many processes on few cores: spinning OpenMP threads would swamp the timings
else
  COMMON=(--device cuda --batch-size 64 --size 224 --steps 20 --warmup 5 --precision bf16)
  COMPILE=--compile
  SHARDS=(--shard-samples 320 --num-workers 12)
  GATE_TIMEOUT=150; LIMIT=225; DEVICE=cuda
  export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-4}  # 6 compiling processes share 16 cores
fi
# name | demakeup bench arguments (all with COMMON); the gate counts these.
JOBS=(
  "c-p4-ours|data --models p4 --variants ours $COMPILE ${SHARDS[*]}"
  "c-p3-ours|train --models p3 --variants ours $COMPILE"
  "c-p4-ref|train --models p4 --variants reference $COMPILE"
  "c-p3-ref|train --models p3 --variants reference $COMPILE"
  "c-p4-off|data --models p4 --variants ours $COMPILE ${SHARDS[*]} --data-cache off"
  "c-p4-ckpt|train --models p4 --variants ours $COMPILE --grad-checkpointing"
  "e-p3|train --models p3 --variants ours,reference,ours-reductions"
  "e-p4|train --models p4 --variants ours,ours-layered,ours-ckpt-decoder,reference"
  "e-p4-ckpt|train --models p4 --variants ours --grad-checkpointing"
)

say "start: $DEVICE, ${#JOBS[@]} bench processes, work dir $WORK"
{ nvidia-smi -L 2>/dev/null; $PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'
  $PY -c 'import torchvision; print("torchvision", torchvision.__version__)' 2>&1 | tail -1; nproc; } \
  | sed 's/^/  /' | tee -a "$OUT/log.txt"

for job in "${JOBS[@]}"; do
  name=${job%%|*}; args=${job#*|}
  say "launch $name: demakeup bench $args"
  # shellcheck disable=SC2086  # args is a word list on purpose
  timeout -k 10 "$LIMIT" $PY -m launcher.main bench $args "${COMMON[@]}" --json "$WORK/$name.json" \
    --gate "$WORK/gate" --gate-parties "${#JOBS[@]}" --gate-timeout "$GATE_TIMEOUT" > "$WORK/$name.log" 2>&1 &
done

say "waiting (limit ${LIMIT}s per process)"
wait
say "all processes done"

for f in "$WORK"/*.log; do echo "===== $(basename "$f")"; cat "$f"; done >> "$OUT/log.txt"
$PY -m launcher.main bench --merge "$WORK" --json "$OUT/bench.json" > "$OUT/summary.txt" 2>&1
for f in "$WORK"/*.log; do  # a process killed or crashed before its first row wrote no results
  [ -f "${f%.log}.json" ] || echo "no results: $(basename "${f%.log}")" >> "$OUT/summary.txt"
done
tee -a "$OUT/log.txt" < "$OUT/summary.txt"
say "done; results in $OUT"
