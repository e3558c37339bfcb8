"""`demakeup train`, `demakeup evaluate`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import typer

from demakeup_dist.choices import STOP_REASONS
from launcher.errors import storage_problem, user_errors
from launcher.options import (
    MODEL_CHECK_HELP, RESUME_HELP, CompileMode, DataCache, LrScaling, Model, Precision, Split, Strategy, WandbMode,
    ZeroStage, plain,
)

if TYPE_CHECKING:
    from demakeup_dist.train.config import TrainConfig

SET_HELP = ("Any config key, VALUE read as YAML; repeatable. `model_args.NAME=VALUE` sets one network option, "
            "e.g. --set model_args.residual=true --set weight_decay=0. Recorded in the run dir's config.")


def train(
    ctx: typer.Context,
    model: Model = typer.Argument(..., help="Network to train (see `demakeup models`)."),
    shards: Path = typer.Option(..., "--shards", help="Shard dir made by `demakeup shard` (has manifest.json)."),
    config: Optional[Path] = typer.Option(None, help="YAML config (default: configs/MODEL.yaml). CLI options override it."),
    run_dir: Optional[Path] = typer.Option(None, help="Where checkpoints, metrics and weights go (default: runs/MODEL-TIME)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (brief: 300)."),
    batch_size: Optional[int] = typer.Option(None, help="GLOBAL batch, split across all processes (brief: 64): "
                                             "the same batches on any process count."),
    batch_per_gpu: Optional[int] = typer.Option(None, help="Images per process (GPU) instead: global batch = N x "
                                                "--grad-accum x processes. Excludes --batch-size."),
    grad_accum: Optional[int] = typer.Option(None, help="Forward passes summed per optimizer step, for a batch "
                                             "that does not fit one pass per GPU (default 1)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate at the reference batch 64 (brief: 1e-2)."),
    lr_scaling: Optional[LrScaling] = typer.Option(None, help="How the peak lr follows the global batch G: none, "
                                                   "linear (lr x G/64) or sqrt (lr x sqrt(G/64)); default none."),
    precision: Optional[Precision] = typer.Option(None, help="auto = bf16 on a bf16 GPU, else fp32."),
    strategy: Optional[Strategy] = typer.Option(None, help="ddp (default) or deepspeed (ZeRO, see --zero)."),
    zero: Optional[ZeroStage] = typer.Option(None, help="DeepSpeed ZeRO stage."),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing",
                                                      help="Recompute the 896x896 SR head in backward (less memory)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                           help="torch.compile the train step (network + loss in one graph)."),
    compile_mode: Optional[CompileMode] = typer.Option(None, help="torch.compile mode (reduce-overhead: CUDA graphs)."),
    data_cache: Optional[DataCache] = typer.Option(
        None, help="Where the decoded images live: device (GPU memory), host (memory shared by the node's "
                   "processes), off (decode from the shards every epoch), auto (device if they fit in half the "
                   "GPU's free memory, else host if they fit in half the available RAM, else off)."),
    seed: Optional[int] = typer.Option(None, help="Seed for weights and data order (brief: 25)."),
    resume: Optional[str] = typer.Option(None, help=RESUME_HELP + "; or a checkpoint dir of the run."),
    nproc: int = typer.Option(1, help="Local processes (GPUs, or CPU processes over gloo). Ignored inside `accelerate launch`."),
    wandb: Optional[WandbMode] = typer.Option(None, help="auto = online when wandb has credentials (WANDB_API_KEY, "
                                              "`wandb login`), else offline files in the run dir."),
    eval_every: Optional[int] = typer.Option(None, help="Evaluate on val every N epochs."),
    save_every_steps: Optional[int] = typer.Option(None, help="Also checkpoint every N steps (0 = epoch ends only)."),
    num_workers: Optional[int] = typer.Option(None, help="Decoding processes per training process."),
    profile_steps: Optional[str] = typer.Option(None, metavar="A:B", help="Record global steps A..B with "
                                                "torch.profiler into RUN_DIR/profile/ (open in ui.perfetto.dev)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    allow_other_shards: bool = typer.Option(False, "--allow-other-shards",
                                            help="Resume even if --shards is not the shard set the run trained on."),
) -> None:
    """Train a network on shards with the brief's recipe (AdamW, warm-up + linear decay, MSE x 100).

    Runs in this process, or on --nproc local processes through `accelerate launch`; under
    `demakeup submit` the same command runs on every node. Resumable: see --resume.
    """
    from demakeup_dist.train.config import parse_sets
    from demakeup_dist.train.distributed import check_strategy, launched, relaunch_command
    from demakeup_dist.train.tracking import check_wandb

    from demakeup_dist.train.resume import resolve_config

    model = plain(model)
    with user_errors():
        cfg = resolve_config(model, config, run_dir, resume, parse_sets(sets or []), _config_overrides(ctx.params))
        check_strategy(cfg.strategy)
        if os.environ.get("RANK", "0") == "0":  # the rank that logs to wandb
            check_wandb(cfg.wandb)
    from demakeup_dist.rundir import RunDir, new_run_dir
    from demakeup_dist.train.supervise import Supervisor, die_with_parent

    deepspeed = cfg.strategy == "deepspeed"
    if (nproc > 1 or deepspeed) and not launched():
        argv = sys.argv[1:]
        if run_dir is None:  # one run dir for every rank, named here
            run_dir = new_run_dir(model)
            argv += ["--run-dir", str(run_dir)]
        cmd, env = relaunch_command(nproc, cfg.precision, argv, zero=cfg.zero if deepspeed else None)
        supervisor = Supervisor(cmd, {**os.environ, **env}, RunDir(run_dir))
        code = supervisor.wait()
        status = RunDir(run_dir).read_status().get("status")
        if supervisor.aborted and status == "running":  # the ranks were killed before they could say so
            RunDir(run_dir).write_status({**RunDir(run_dir).read_status(), "status": "aborted",
                                          "error": "aborted by a second Ctrl-C"})
        if supervisor.aborted or (code == 0 and status in STOP_REASONS):
            _say_stopped(model, shards, run_dir, "aborted" if supervisor.aborted else status)
            raise typer.Exit(EXIT_INTERRUPTED)
        raise typer.Exit(code)
    if launched():
        die_with_parent()  # a worker never outlives its launcher

    from demakeup_dist.train.loop import NonFiniteLoss, train as run_training

    with user_errors():
        run_dir = run_dir or new_run_dir(model)
        try:
            result = run_training(cfg, shards, run_dir, resume=resume, allow_other_shards=allow_other_shards)
        except NonFiniteLoss as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            _exit(3)
        except KeyboardInterrupt:
            _say_stopped(model, shards, run_dir, "aborted")
            _exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if (problem := storage_problem(exc, run_dir, RETRY_TRAIN)) is None:
                raise
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
            _exit(2)
    ended = result.get("status", "finished")
    if ended in STOP_REASONS:
        # Inside a launch or a job script a clean stop is a success, or torch elastic / accelerate report
        # the ranks as failed (the job script reads the status); the command the user started (here or
        # the --nproc launcher) says "interrupted".
        if os.environ.get("RANK", "0") == "0" and os.environ.get("DEMAKEUP_RELAUNCHED") != "1":
            _say_stopped(model, shards, run_dir, ended)
        _exit(0 if launched() or "SLURM_JOB_ID" in os.environ else EXIT_INTERRUPTED)
    typer.echo(f"run dir: {run_dir} ({ended})", err=True)
    _exit(0)


RETRY_TRAIN = ("Free space or fix the permissions (or choose another --run-dir), then run the command again "
               "(with --resume latest once the run has checkpoints)")

EXIT_INTERRUPTED = 130
"""The exit code of a training that stopped before its end on request (128 + SIGINT, as shells use)."""


def _say_stopped(model: str, shards: Path, run_dir: Path, how: str) -> None:
    """The one line a stopped, preempted or aborted training ends with."""
    from demakeup_dist.rundir import RunDir

    run = RunDir(run_dir)
    latest = run.latest_checkpoint()
    saved = (f"checkpoint {latest.name}" if how != "aborted" else
             f"nothing saved since {latest.name if latest else 'the start'}")
    command = "submit" if "SLURM_JOB_ID" in os.environ else "train"  # a job is continued by another job
    again = (f"continue with: demakeup {command} {model} --shards {shards} --run-dir {run_dir} --resume latest"
             if latest else "nothing to continue from")
    typer.secho(f"{how} at step {run.read_status().get('step', 0)} ({saved}); {again}", err=True,
                fg=typer.colors.YELLOW)


_OVERRIDES = ("epochs", "batch_size", "batch_per_gpu", "grad_accum", "lr", "lr_scaling", "precision", "strategy",
              "zero", "grad_checkpointing", "compile", "compile_mode", "data_cache", "seed", "wandb", "eval_every",
              "save_every_steps", "num_workers", "profile_steps")


def _config_overrides(params: dict) -> dict:
    """The TrainConfig values among the train command's parsed options (None: not given)."""
    return {k: plain(params[k]) for k in _OVERRIDES}


def check_train_options(model: str, shards: Path, args: Sequence[str], *, config: Path | None, run_dir: Path,
                        resume: bool, **launcher_options) -> "TrainConfig":
    """Refuse now what `demakeup train MODEL --shards SHARDS ARGS` would refuse once a queued job starts:
    the train command's own parser first, then the config the options resolve to. `launcher_options`
    are the TrainConfig values the launcher adds itself (strategy, zero, precision). A parser error
    propagates as typer's own usage error (exit 2, "Usage: demakeup train ..."). Returns the config."""
    from demakeup_dist.train.config import parse_sets
    from demakeup_dist.train.resume import resolve_config
    from demakeup_dist.train.tracking import check_wandb

    solo = typer.Typer()
    solo.command()(train)
    ctx = typer.main.get_command(solo).make_context("demakeup train", [model, "--shards", str(shards), *args])
    overrides = {**_config_overrides(ctx.params), **{k: v for k, v in launcher_options.items() if v is not None}}
    cfg = resolve_config(model, config, run_dir, "auto" if resume else None, parse_sets(ctx.params["sets"] or []),
                          overrides)
    check_wandb(cfg.wandb)  # the job inherits this environment, credentials included
    return cfg


def _exit(code: int) -> None:
    """Inside a multi-process launch, skip interpreter teardown: gloo sometimes aborts there (torch 2.13)."""
    from demakeup_dist.train.distributed import launched

    if launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def evaluate(
    weights: Path = typer.Argument(..., help="A run dir (uses its best weights) or a .safetensors file."),
    shards: Path = typer.Option(..., "--shards", help="Shard dir made by `demakeup shard`."),
    model: Optional[Model] = typer.Option(None, help=MODEL_CHECK_HELP),
    split: Split = typer.Option("test", help="The split to evaluate."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
) -> None:
    """Print PSNR / SSIM of a trained network on a split, beside the identity and bicubic baselines."""
    from demakeup_dist.data.loader import eval_batches
    from demakeup_dist.data.shardset import ShardSet
    from demakeup_dist.machine import torch_device
    from demakeup_dist.results import BASELINES, MEASURES
    from demakeup_dist.train.evaluation import evaluate as run_eval
    from demakeup_dist.weights import load_trained, size_warning

    with user_errors():
        device = torch_device()
        net, info = load_trained(weights, plain(model), device)
        if warning := size_warning(info, ShardSet.open(shards).image_size, str(shards)):
            typer.secho(warning, err=True, fg=typer.colors.YELLOW)
        batches = eval_batches(shards, plain(split), batch_size=batch_size, with_hr="sr" in net.tasks, uint8=True)
        evaluation, _ = run_eval(net, batches, net.tasks, device, lambda t: t, baselines=True)
    typer.echo(f"{info.model} on {plain(split)} of {shards}")
    typer.echo(f"{'metric':<16}{'model':>10}{'baseline':>10}  baseline")
    for task, quality in evaluation.metrics.items():
        baseline = evaluation.baselines[task]
        for measure in MEASURES:
            typer.echo(f"{f'{task}/{measure}':<16}{getattr(quality, measure):>10.4f}"
                       f"{getattr(baseline, measure):>10.4f}  {BASELINES[task]}")


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": False})(train)
    app.command()(evaluate)
