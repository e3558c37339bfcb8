"""`demakeup bench`: train-step and input-pipeline throughput, against a straightforward reference."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from demakeup_dist.bench import WHATS
from demakeup_dist.bench.variants import VARIANTS
from demakeup_dist.choices import MODEL_NAMES, SIZE_MULTIPLE, parse_list
from launcher.errors import user_errors
from launcher.options import MODELS_HELP, CompileMode, DataCache, Device, Precision, plain, renamed

HELP = (
    "Time the train step of the networks and compare it with a straightforward PyTorch version of "
    "the same network, timed in the same run.\n\n"
    "train: synthetic batches already on the device (pure compute). data: the same steps fed from "
    "shards by the training loop's own data feed (--data-cache as in `demakeup train`; shards made "
    "on the fly from synthetic faces unless --shards is given), with the fraction of time spent "
    "waiting for data, plus the streaming reader's decode rate per worker, bytes read per rank "
    "per epoch and the HR JPEG decode rate on one CPU core and with nvJPEG. all: both.\n\n"
    "A step is exactly `demakeup train`'s: the network and the brief's loss in one (compilable) "
    "module fed uint8 batches, backward, clip, AdamW (fused), LR schedule; on CUDA with "
    "bf16 autocast and channels_last. Defaults: on CUDA the brief's batch 64 at 224 px, 20 timed "
    "steps after 5 warm-up steps; on CPU a tiny batch 2 at 64 px so it ends in seconds.\n\n"
    "Variants: reference = plain nn.InstanceNorm2d / nn.GELU network in the same step; ours = the "
    "project's network (what `demakeup train` runs); see --variants for the rest. "
    "docs/performance.md explains them and has the measured numbers."
)
VARIANTS_HELP = (f"Comma separated, any of {', '.join(VARIANTS)} (demakeup_dist/bench/variants.py and "
                 "docs/performance.md describe them).")


def bench(
    what: str = typer.Argument("all", help=f"{', '.join(WHATS)} (see above)."),
    models: str = typer.Option("p3,p4", help=MODELS_HELP + " The reference exists for p3, p4."),
    variants: str = typer.Option("reference,ours", help=VARIANTS_HELP),
    device: Device = typer.Option("auto", help="auto: cuda when available."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step.", show_default="64 cuda, 2 cpu"),
    size: Optional[int] = typer.Option(None, help=f"Input side (multiple of {SIZE_MULTIPLE}); SR targets are 4x.",
                                       show_default="224 cuda, 64 cpu"),
    steps: Optional[int] = typer.Option(None, help="Timed steps per case.", show_default="20 cuda, 3 cpu"),
    warmup: Optional[int] = typer.Option(None, help="Untimed steps first (torch.compile compiles here).",
                                         show_default="5 cuda, 1 cpu"),
    precision: Precision = typer.Option("auto", help="As `demakeup train --precision`; auto = bf16 (autocast) on "
                                                     "CUDA, fp32 on CPU."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the step's module."),
    compile_mode: CompileMode = typer.Option("default",
                                             help="torch.compile mode (as `demakeup train --compile-mode`)."),
    data_cache: DataCache = typer.Option("auto", help="Data path of the shards feed (as `demakeup train --data-cache`; "
                                                      "off: stream from the shards)."),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing/--no-grad-checkpointing",
                                            help="Build our networks with grad_checkpointing=True."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark",
                                         help="Let cuDNN time its kernels for these shapes."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder for data / all (default: synthesise one)."),
    shard_samples: Optional[int] = typer.Option(None, help="Triplets to synthesise when --shards is not given.",
                                                show_default="batch x min(warmup + steps, 5)"),
    num_workers: int = typer.Option(2, help="Loader worker processes for the shards feed."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    gate: Optional[Path] = typer.Option(None, help="Shared folder of benchmark processes run at the same time on one "
                                                   "GPU (scripts/gpu_bench.sh): they compile together, then time one "
                                                   "at a time."),
    gate_parties: int = typer.Option(1, help="Number of processes sharing --gate."),
    gate_timeout: float = typer.Option(300.0, help="Seconds to wait for the other --gate processes."),
    merge: Optional[Path] = typer.Option(None, help="Time nothing: read the --json files in this folder (runs made "
                                                    "side by side, e.g. with --gate) and print them as one table, "
                                                    "ratios across them; --json writes the merge."),
    batch: Optional[int] = typer.Option(None, hidden=True),
    model: Optional[str] = typer.Option(None, hidden=True),
) -> None:
    """Time train steps (help text above)."""
    with user_errors():
        from demakeup_dist.bench.results import Merged

        if merge is not None:
            merged = Merged.read(merge)
            merged.save(json_path)
            typer.echo(merged.text())
            raise typer.Exit(1 if any(r.error for r in merged.rows) else 0)
        from demakeup_dist.bench.config import BenchConfig
        from demakeup_dist.bench.gate import Gate
        from demakeup_dist.bench.run import run_bench

        config = BenchConfig.for_device(
            plain(device), batch=renamed("--batch", "--batch-size", batch, batch_size), size=size, steps=steps,
            warmup=warmup, precision=plain(precision), compile=compile, compile_mode=plain(compile_mode),
            grad_checkpointing=grad_checkpointing, cudnn_benchmark=cudnn_benchmark, num_workers=num_workers,
            data_cache=plain(data_cache))
        config.check()
        chosen = parse_list("--models", renamed("--model", "--models", model, models), MODEL_NAMES)
        names = parse_list("--variants", variants, VARIANTS)
        gates = Gate(gate, gate_parties, gate_timeout) if gate is not None else None
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        results = run_bench(what, chosen, names, config, command=shlex.join(["demakeup", *sys.argv[1:]]),
                            shards=shards, shard_samples=shard_samples, gate=gates, json_path=json_path,
                            echo=typer.echo)
    typer.echo("")
    typer.echo(results.text())
    if json_path is not None:
        typer.echo(f"wrote {json_path}")
    if any(r.error for r in results.rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(name="bench", help=HELP)(bench)
