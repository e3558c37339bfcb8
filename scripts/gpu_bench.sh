#!/usr/bin/env bash
# One-shot GPU benchmark for docs/performance.md (issue 6), on one H100 / H200, about 4 minutes.
#
#   OUT=/path/to/results PYTHONPATH=. bash scripts/gpu_bench.sh          # from the repository root
#   BENCH_TINY=1 OUT=/tmp/x PYTHONPATH=. bash scripts/gpu_bench.sh       # same flow, tiny, on CPU
#
# Writes to $OUT: summary.txt (the tables), bench.json (every row, the decode and conv rates, the
# machine), log.txt (timestamped progress and every process's output).
#
# Why several processes: one torch.compile of p4 takes about a minute, six in a row would not fit.
# The benchmark processes below start together and compile at the same time (CPU work); each then
# waits at a shared gate (demakeup bench --gate) until all are ready, and they time one at a time
# under a lock, so no two timed runs share the GPU (eager-only processes wait before their first
# step, so cuDNN's algorithm timing sees an idle GPU too). Each measurement is its own process with its
# own time limit: one failure or time-out loses only its rows.
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # the repository's packages, installed or not
mkdir -p "$OUT"
START=$(date +%s)
WORK=$(mktemp -d)
say() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }

if [ "${BENCH_TINY:-0}" = 1 ]; then  # CPU check of the script itself
  COMMON=(--device cpu --batch 2 --size 64 --steps 1 --warmup 1 --precision fp32)
  COMPILE=${BENCH_TINY_COMPILE:---no-compile}  # CPU compiles of p4 take minutes on 2 cores
  SHARDS=(--shard-samples 8 --num-workers 1)
  GATE_TIMEOUT=600; LIMIT=900; DEVICE=cpu
  export OMP_NUM_THREADS=1  # many processes on few cores: spinning OpenMP threads would swamp the timings
else
  COMMON=(--device cuda --batch 64 --size 224 --steps 20 --warmup 5 --precision bf16)
  COMPILE=--compile
  SHARDS=(--shard-samples 320 --num-workers 12)
  GATE_TIMEOUT=150; LIMIT=225; DEVICE=cuda
  export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-4}  # 6 compiling processes share 16 cores
fi
GATE="$WORK/gate"
# name | demakeup bench arguments (all with COMMON); the gate counts these plus the extras process.
JOBS=(
  "c-p4-ours|data --model p4 --variants ours $COMPILE ${SHARDS[*]}"
  "c-p3-ours|train --model p3 --variants ours $COMPILE"
  "c-p4-ref|train --model p4 --variants reference $COMPILE"
  "c-p3-ref|train --model p3 --variants reference $COMPILE"
  "c-p4-off|data --model p4 --variants ours $COMPILE ${SHARDS[*]} --data-cache off"
  "c-p4-ckpt|train --model p4 --variants ours $COMPILE --grad-checkpointing"
  "e-p3|train --model p3 --variants ours,reference,ours-reductions"
  "e-p4|train --model p4 --variants ours,ours-layered,ours-ckpt-decoder,reference"
  "e-p4-ckpt|train --model p4 --variants ours --grad-checkpointing"
)
PARTIES=$(( ${#JOBS[@]} + 1 ))

say "start: $DEVICE, ${#JOBS[@]} bench processes + extras, work dir $WORK"
{ nvidia-smi -L 2>/dev/null; $PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'
  $PY -c 'import torchvision; print("torchvision", torchvision.__version__)' 2>&1 | tail -1; nproc; } \
  | sed 's/^/  /' | tee -a "$OUT/log.txt"

for job in "${JOBS[@]}"; do
  name=${job%%|*}; args=${job#*|}
  say "launch $name: demakeup bench $args"
  # shellcheck disable=SC2086  # args is a word list on purpose
  timeout -k 10 "$LIMIT" $PY -m launcher.main bench $args "${COMMON[@]}" --json "$WORK/$name.json" \
    --gate "$GATE" --gate-parties "$PARTIES" --gate-timeout "$GATE_TIMEOUT" > "$WORK/$name.log" 2>&1 &
done

# Extras, also behind the gate: JPEG decode rates (CPU vs nvJPEG).
say "launch extras: JPEG decode CPU vs nvJPEG"
timeout -k 10 "$LIMIT" $PY - "$WORK/extras.json" "$GATE" "$PARTIES" "$GATE_TIMEOUT" "$DEVICE" > "$WORK/extras.log" 2>&1 <<'EOF' &
import io, json, sys, time
import numpy as np, torch
from PIL import Image
from demakeup_dist.bench import Gate
from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.synth import render_sample, sample_rng

out, gate_dir, parties, timeout, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
torch.backends.cudnn.benchmark = True  # as demakeup bench does
res = {}
def save():
    with open(out, "w") as f: json.dump(res, f, indent=1)
def rate(fn, n, reps):
    fn(); torch.cuda.synchronize() if device == "cuda" else None
    t = time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize() if device == "cuda" else None
    return n * reps / (time.perf_counter() - t)

with Gate(gate_dir, parties, timeout) as gate:
    # 896x896 faces as `demakeup synth` writes its high_r images (JPEG q95, 4:4:4), made before the gate.
    jpegs = []
    for i in range(16):
        buf = io.BytesIO()
        Image.fromarray(render_sample(sample_rng(25, "train", i), 224)["hr"]).save(buf, "JPEG", quality=95, subsampling=0)
        jpegs.append(buf.getvalue())
    res["jpeg_kb_mean"] = sum(map(len, jpegs)) / len(jpegs) / 1024
    gate.enter()
    try:
        res["cpu_decode_per_s_one_core"] = rate(lambda: [decode_rgb(b, "jpg") for b in jpegs], len(jpegs), 3)
        res["pil_decode_per_s_one_core"] = rate(
            lambda: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs], len(jpegs), 3)
    except Exception as e:
        res["cpu_decode_error"] = repr(e)
    save()
    try:
        from torchvision.io import decode_jpeg
        if device != "cuda":
            raise RuntimeError("no CUDA device")
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs] * 4  # a batch of 64
        res["nvjpeg_decode_per_s_batch64"] = rate(lambda: decode_jpeg(data, device="cuda"), len(data), 10)
        gpu = decode_jpeg(data[:1], device="cuda")[0].permute(1, 2, 0).cpu().numpy().astype(int)
        res["nvjpeg_max_abs_diff_vs_cpu"] = int(np.abs(gpu - decode_rgb(jpegs[0], "jpg").astype(int)).max())
    except Exception as e:
        res["nvjpeg_error"] = repr(e)
    save()
EOF

say "waiting (limit ${LIMIT}s per process)"
wait
say "all processes done"

for f in "$WORK"/*.log; do echo "===== $(basename "$f")"; cat "$f"; done >> "$OUT/log.txt"

$PY - "$WORK" "$OUT" <<'EOF' 2>&1 | tee -a "$OUT/log.txt"
import json, sys
from pathlib import Path
from demakeup_dist.bench import Row, add_ratios
from launcher.bench_cli import format_table
work, out = Path(sys.argv[1]), Path(sys.argv[2])
runs, rows = {}, []
for f in sorted(work.glob("*.json")):
    try:
        runs[f.stem] = json.loads(f.read_text())
    except ValueError as e:
        runs[f.stem] = {"error": f"unreadable: {e}"}
for name, run in runs.items():
    for r in run.get("rows", []):
        rows.append(Row(**r))
add_ratios(rows)
rows.sort(key=lambda r: (r.model, r.mode.split("+")[0] != "eager", "+ckpt" in r.mode, r.feed, r.variant != "reference"))
extras = runs.pop("extras", {})
first = next((r for r in runs.values() if "machine" in r), {})
lines = [f"machine: {json.dumps(first.get('machine'))}", f"config: {json.dumps(first.get('config'))}", "",
         format_table(rows), "", "loader (1 worker, from c-p4-ours): " + json.dumps(runs.get("c-p4-ours", {}).get("data")),
         "extras: " + json.dumps(extras, indent=1),
         "gate: " + json.dumps({k: r.get("gate_all_ready") for k, r in runs.items()}),
         "no results (killed or crashed before its first row): "
         + ", ".join(f.stem for f in sorted(work.glob("*.log")) if not (work / f"{f.stem}.json").exists())]
(out / "summary.txt").write_text("\n".join(lines) + "\n")
(out / "bench.json").write_text(json.dumps({"rows": [r.__dict__ for r in rows], "runs": runs, "extras": extras},
                                           indent=1))
print("\n".join(lines))
EOF
say "done; results in $OUT"
