#!/usr/bin/env bash
# The product as users install it, not the checkout: build the wheel, install it into a fresh venv
# outside the checkout (torch pinned first, as scripts/bootstrap.sh does, then the wheel and its
# dependencies from the index), and run it from a folder that has no configs/ or slurm/ of its own.
# Run from a checkout where scripts/bootstrap.sh has made .venv (it builds the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/demakeup-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

.venv/bin/python -m pip wheel -q --no-deps -w "$WORK/dist" .
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VPY" -m pip install -q "torch==${TORCH_VERSION}"
"$VPY" -m pip install -q "$WORK"/dist/demakeup-*.whl

cd "$WORK"
D="$WORK/venv/bin/demakeup"
"$VPY" - <<'PY'
import demakeup_dist, launcher
for module in (demakeup_dist, launcher):  # the installed copy, never the checkout
    assert "/venv/" in module.__file__, module.__file__
PY
step() { echo "wheel-check: $*"; }

step "shards"
"$D" synth data --train 4 --val 2 --test 2 --size 32 --workers 1 >/dev/null
"$D" shard data --out shards --samples-per-shard 4 --workers 1 >/dev/null

step "submit --dry-run (DDP)"
"$D" submit p4 --gpus 16 --shards shards --run-dir runs/ddp --dry-run >ddp.sbatch
grep -q -- "--multi_gpu" ddp.sbatch

step "submit --dry-run (DeepSpeed ZeRO 3)"
"$D" submit p4 --gpus 16 --shards shards --run-dir runs/ds --strategy deepspeed --zero 3 --dry-run >ds.sbatch
ds_json=$(grep -o -- '--deepspeed_config_file [^ ]*' ds.sbatch | cut -d' ' -f2)
case "$ds_json" in "$WORK"/venv/*/demakeup_dist/configs/deepspeed/zero3.json) ;; *) echo "bad ZeRO config path: $ds_json"; exit 1;; esac
test -f "$ds_json"

step "train p1 with the shipped configs/p1.yaml"
"$D" train p1 --shards shards --run-dir runs/p1 --epochs 1 --batch-size 2 --num-workers 0 --wandb disabled
# model_args defaults to {} in TrainConfig; only the shipped p1.yaml sets base_channels.
"$VPY" - <<'PY'
import yaml
recorded = yaml.safe_load(open("runs/p1/config.yaml"))
assert recorded["model_args"] == {"base_channels": 32}, recorded["model_args"]
PY
step "predict without the infer extra: whole images, and one line saying how to get face mode"
"$D" predict runs/p1 data/test/makeup/000000.jpg --out pred 2>predict.err
grep -q "demakeup\[infer\]" predict.err
test -f pred/000000_demakeup.png && test -f pred/000000_faces.json
step "ok"
