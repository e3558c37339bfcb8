set -uo pipefail
# Quick DeepSpeed check on a lent GPU (docs/performance.md): ZeRO-2 and ZeRO-3 on a tiny p4 run.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl; export PYTHONPATH=$PWD:/tmp/site WANDB_MODE=disabled
D="python3 -m launcher.main"; W=/tmp/ds; rm -rf $W
$D synth $W/data --train 128 --val 32 --test 32 --size 64 --workers 16 >/dev/null 2>&1; $D shard $W/data --out $W/shards --workers 16 >/dev/null 2>&1
for Z in 2 3; do timeout 70 $D train p4 --shards $W/shards --run-dir $W/z$Z --epochs 2 --batch-size 32 --strategy deepspeed --zero $Z --precision bf16 --save-every-steps 2 > $W/z$Z.log 2>&1; echo "zero$Z rc=$?"; grep -hE "error|Error|val PSNR|test \(best|checkpoint" $W/z$Z.log | tail -n 6; done
