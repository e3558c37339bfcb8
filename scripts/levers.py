"""One lever at a time: train a network under several configurations x seeds, same budget, and tabulate.

    python scripts/levers.py --shards SHARDS --out OUT --model p3 --seeds 1,2,3 \
        --base epochs=5 batch_size=8 model_args.residual=true \
        --variant brief= --variant l1=loss=l1 --variant ema=ema_decay=0.99

Each variant is `NAME=key=value,key=value` (TrainConfig keys, YAML values; `model_args.K=V` sets one
model argument), applied on top of `--base` and `configs/MODEL.yaml`. Runs go to OUT/NAME/seed-S
(finished ones are kept in OUT/NAME/seed-S/lever.json, the run's results.json plus "flip", so a rerun only
adds what is missing). Every run is also evaluated on test with the flip self-ensemble on the same weights
(a paired comparison, no retraining).
Writes OUT/levers.json and OUT/levers.md: mean +- std per variant and its difference from the first
variant with the seed noise it must exceed (demakeup_dist/seeds.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from demakeup_dist.models import model_tasks
from demakeup_dist.results import Evaluation, RunResults
from demakeup_dist.rundir import RunDir
from demakeup_dist.seeds import difference, spread


def parse_assignments(text: str) -> dict:
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        value = yaml.safe_load(value)
        if key.startswith("model_args."):
            out.setdefault("model_args", {})[key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


def train_one(model: str, overrides: dict, seed: int, shards: Path, run_dir: Path) -> dict:
    import torch

    from demakeup_dist.data.loader import eval_batches
    from demakeup_dist.train.config import load_config
    from demakeup_dist.train.evaluation import evaluate
    from demakeup_dist.train.loop import train
    from demakeup_dist.weights import load_trained

    config = load_config(model, **{**overrides, "seed": seed, "wandb": "disabled"})
    results = train(config, shards, run_dir, resume="auto")
    if results.get("status") == "preempted":
        raise SystemExit(f"{run_dir}: stopped before the end; rerun the same command to resume it")
    if results.get("status") == "finished":  # trained by an earlier call
        results = RunDir(run_dir).read_results()
    net, _ = load_trained(run_dir, model)
    batches = eval_batches(shards, "test", batch_size=16, with_hr="sr" in model_tasks(model), num_workers=0)
    flip, _ = evaluate(net, batches, model_tasks(model), torch.device("cpu"), lambda t: t, flip_ensemble=True)
    return {**results, "flip": flip.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="p3")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--base", nargs="*", default=[])
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--summary-only", action="store_true", help="tabulate the finished runs, train nothing")
    args = parser.parse_args()
    base = parse_assignments(",".join(args.base))
    variants = {}
    for text in args.variant:
        name, _, assignments = text.partition("=")
        over = parse_assignments(assignments)
        variants[name] = {**base, **over, "model_args": {**base.get("model_args", {}), **over.get("model_args", {})}}
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for seed in seeds:  # seed-major: a partial sweep has every variant at its first seeds
        for name, overrides in variants.items():
            # One file per run, so that several processes can fill one OUT with different variants.
            run_dir = args.out / name / f"seed-{seed}"
            done = run_dir / "lever.json"
            if not done.is_file() and not args.summary_only:
                done.write_text(json.dumps(train_one(args.model, overrides, seed, args.shards, run_dir)))
            if done.is_file():
                results[f"{name}/seed-{seed}"] = json.loads(done.read_text())
    args.out.joinpath("levers.json").write_text(json.dumps(results, indent=1))
    args.out.joinpath("levers.md").write_text(summarise(variants, results, args.model))
    print(args.out.joinpath("levers.md").read_text())


def summarise(variants: dict, results: dict, model: str) -> str:
    """The table over the finished runs of each variant (the seeds they have)."""
    # (test, flip) evaluations of every run, read by task and measure.
    evaluations = {key: (RunResults.from_dict(r, key).evaluation, Evaluation.from_dict(r["flip"], key))
                   for key, r in results.items()}
    columns = [("test PSNR", lambda test, flip: test.psnr, str),
               ("test PSNR, flip ensemble", lambda test, flip: flip.psnr, str),
               ("test SSIM", lambda test, flip: test.metrics["demakeup"].ssim, lambda c: f"{c.mean:.4f}")]
    if "sr" in model_tasks(model):
        columns.append(("SR PSNR", lambda test, flip: test.metrics["sr"].psnr, str))
    identity = next(iter(evaluations.values()))[0].baselines["demakeup"].psnr
    lines = [f"{model}; identity baseline {identity:.2f} dB (test)", "",
             "| variant | seeds | " + " | ".join(label for label, *_ in columns)
             + " | flip - plain (same weights) | PSNR vs first variant |",
             "|---|---|" + "---:|" * (len(columns) + 2)]
    first = None
    for name in variants:
        seeds = [key.split("seed-")[1] for key in results if key.startswith(f"{name}/")]
        if not seeds:
            continue
        runs = [evaluations[f"{name}/seed-{s}"] for s in seeds]
        cells = [spread(value(*run) for run in runs) for _, value, _ in columns]
        first = first or cells[0]
        diff = difference(first, cells[0])
        lines.append(f"| {name} | {','.join(seeds)} | " + " | ".join(text(c) for c, (_, _, text) in zip(cells, columns))
                     + f" | {spread(flip.psnr - test.psnr for test, flip in runs).mean:+.3f} dB"
                     + f" | {diff} ({'clear' if diff.clear else 'within noise'}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
