#!/usr/bin/env bash
# The learning-rate sweep behind the default LR (docs/results.md): one network, one synthetic set,
# the brief's recipe at several peak LRs; prints best val PSNR / SSIM per LR.
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
    python - "$W/$MODEL-$LR" "$LR" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
best = max(rows, key=lambda r: r["val_psnr"])
test = json.load(open(f"{sys.argv[1]}/results.json"))
print(f"lr {sys.argv[2]:>6}: best val PSNR {best['val_psnr']:.2f} dB (epoch {best['epoch']}), "
      f"final train loss {rows[-1]['train_loss']:.3f}, test PSNR {test['psnr']:.2f} SSIM {test['ssim']:.4f} "
      f"(identity {test['identity_psnr']:.2f})")
PY
done
