"""`demakeup submit`, `demakeup status`, `demakeup cancel`: training jobs on Slurm (or here, --local)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from launcher.errors import UserError, user_errors
from launcher.options import RESUME_HELP, Model, Precision, Strategy, ZeroStage, plain, warn_renamed


def submit(
    model: Model = typer.Argument(..., help="Network to train (see `demakeup models`)."),
    train_args: Optional[List[str]] = typer.Argument(
        None, metavar="[-- TRAIN_OPTIONS]", help="Options for `demakeup train` after `--`, e.g. -- --epochs 50."),
    shards: Path = typer.Option(..., help="Shard dir made by `demakeup shard`, on a filesystem all nodes see."),
    gpus: int = typer.Option(1, help="GPUs in total; 0 = CPU processes (see --cpu-procs-per-node)."),
    gpus_per_node: int = typer.Option(8, help="GPUs on one node of the partition."),
    nodes: str = typer.Option("auto", help="auto = ceil(gpus / gpus-per-node); a number spreads the GPUs evenly."),
    cpu_procs_per_node: int = typer.Option(1, help="Training processes per node when --gpus 0."),
    cpus_per_gpu: int = typer.Option(8, help="CPU cores per training process (data loading, OMP threads)."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (default: the cluster's)."),
    account: Optional[str] = typer.Option(None, help="Slurm account to charge."),
    qos: Optional[str] = typer.Option(None, help="Slurm QOS."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Time limit D-HH:MM:SS (default: the partition's)."),
    mem: Optional[str] = typer.Option(None, help="Memory per node, e.g. 200G (default: the partition's)."),
    run_dir: Optional[Path] = typer.Option(None, help="Run dir on a shared filesystem (default: runs/MODEL-TIME)."),
    strategy: Strategy = typer.Option("ddp", help="ddp, or deepspeed (ZeRO config configs/deepspeed/zeroN.json)."),
    zero: ZeroStage = typer.Option("2", help="DeepSpeed ZeRO stage (with --strategy deepspeed)."),
    precision: Precision = typer.Option("auto", help="auto = bf16 on GPUs, fp32 on CPUs."),
    config: Optional[Path] = typer.Option(None, help="Training YAML config (default: configs/MODEL.yaml)."),
    template: Optional[Path] = typer.Option(None, help="Your copy of slurm/train.sbatch to render instead."),
    resume: Optional[str] = typer.Option(None, metavar="auto|latest", help=f"Continue --run-dir: {RESUME_HELP}."),
    signal_seconds: int = typer.Option(120, help="Seconds before the time limit to checkpoint and requeue."),
    max_restarts: int = typer.Option(10, help="Requeue at most this many times (stops a crash loop)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the batch script on stdout; submit nothing."),
    local: bool = typer.Option(False, "--local", help="Run the same job on this machine without Slurm."),
) -> None:
    """Submit a training job to Slurm: one task per node, `accelerate launch` on each, bf16, DDP or DeepSpeed.

    When preempted or near its time limit the job checkpoints and requeues itself; the restarted job resumes from the latest checkpoint in the same wandb run.

    Example: demakeup submit p4 --gpus 16 --shards /shared/shards --partition gpu --time 2-00:00:00 -- --epochs 300
    """
    from demakeup_dist.launch.render import JobOptions, render, validate
    from demakeup_dist.launch.submit import check_inputs, run_local, submit as submit_job
    from demakeup_dist.choices import STOP_REASONS
    from demakeup_dist.rundir import RunDir, new_run_dir
    from launcher.train_cli import EXIT_INTERRUPTED, check_train_options

    model, strategy, zero, precision = plain(model), plain(strategy), int(plain(zero)), plain(precision)
    with user_errors():
        if dry_run and local:
            raise UserError("--dry-run and --local exclude each other: pick one")
        run_dir, resume = _resume_target(run_dir, resume)
        if nodes != "auto" and not nodes.isdigit():
            raise UserError(f"--nodes {nodes!r}: use auto or a number")
        target = run_dir or new_run_dir(model).resolve()
        opts = JobOptions(
            model=model, shards=shards.resolve(), run_dir=target.resolve(), gpus=gpus, gpus_per_node=gpus_per_node,
            nodes=None if nodes == "auto" else int(nodes), cpu_procs_per_node=cpu_procs_per_node,
            cpus_per_gpu=cpus_per_gpu, partition=partition, account=account, qos=qos, time=time_limit, mem=mem,
            strategy=strategy, zero=zero, precision=precision, config=config.resolve() if config else None,
            signal_seconds=signal_seconds, max_restarts=max_restarts, train_args=tuple(train_args or ()),
        )
        template = template.resolve() if template else None
        # Everything the job would refuse once it leaves the queue is refused here, --dry-run included.
        layout = validate(opts)
        cfg = check_train_options(model, opts.shards, opts.train_args, config=opts.config, run_dir=opts.run_dir,
                                  resume=resume is not None, strategy=strategy, zero=zero, precision=precision)
        check_inputs(opts, resume)
        _say_batch(cfg, layout.processes, gpus > 0)
        if dry_run:
            sys.stdout.write(render(opts, template))
            typer.echo(f"(dry run: nothing submitted; run dir would be {opts.run_dir})", err=True)
            return
        command = ["demakeup", *sys.argv[1:]]
        if local:
            sub, code = run_local(opts, template=template, command=command, resume=resume)
            ended = RunDir(sub.run_dir).read_status().get("status")
            if code == 0 and ended in STOP_REASONS:
                code = EXIT_INTERRUPTED
            typer.echo(f"local job ended with exit code {code} ({ended}); run dir {sub.run_dir}; log {sub.log}",
                       err=True)
            raise typer.Exit(code)
        sub = submit_job(opts, template=template, command=command, resume=resume)
    typer.echo(f"job id:  {sub.job_id}")
    typer.echo(f"run dir: {sub.run_dir}")
    typer.echo(f"log:     {sub.log}")
    typer.echo(f"wandb:   {sub.wandb_id or 'run id known once training starts (demakeup status)'}")
    typer.echo(f"watch:   demakeup status {sub.job_id}")


def _say_batch(cfg, processes: int, gpus: bool) -> None:
    """The batch line (and the scaling advice when the per-GPU batch is small), before anything is queued."""
    from demakeup_dist.train.batching import efficiency_note, plan_batch

    plan = plan_batch(cfg, processes)
    typer.echo(plan.describe(gpus=gpus), err=True)
    if gpus and (note := efficiency_note(plan)):
        typer.secho(note, err=True, fg=typer.colors.YELLOW)


def _resume_target(run_dir: Path | None, resume: str | None) -> tuple[Path | None, str | None]:
    """(run dir, resume mode) of submit's options; the older `--resume RUN_DIR` still works, with a warning."""
    from demakeup_dist.choices import RESUME_MODES

    if resume is None or resume in RESUME_MODES:
        if resume is not None and run_dir is None:
            raise UserError(f"--resume {resume} continues a run: name it with --run-dir RUN_DIR")
        return run_dir, resume
    if not Path(resume).is_dir():
        raise UserError(f"--resume {resume!r}: use {' or '.join(RESUME_MODES)} with --run-dir RUN_DIR")
    warn_renamed("--resume RUN_DIR", f"--run-dir {resume} --resume auto")
    if run_dir is not None and run_dir.resolve() != Path(resume).resolve():
        raise UserError("--resume RUN_DIR and --run-dir name different run dirs: keep --run-dir only")
    return Path(resume), "auto"


def status(
    target: Optional[str] = typer.Argument(None, metavar="[RUN_DIR|JOB_ID]", help="Default: the newest run in runs/."),
) -> None:
    """Where a run stands: Slurm state, epoch/step, last metrics, img/s, ETA, checkpoints, restarts."""
    from demakeup_dist.launch.status import epoch_pace, run_report, stale_heartbeat

    with user_errors():
        report = run_report(target)
    job, st = report.job, report.status
    if job is not None:
        reason = f" ({job.reason})" if job.reason and job.reason != "None" else ""
        restarts = f", {job.restarts} restart(s)" if job.restarts is not None else ""
        typer.echo(f"slurm job {job.job_id}: {job.state or 'unknown to Slurm'}{reason}{restarts}")
    if report.run_dir is None:
        typer.echo("run dir: unknown (not found for this job)")
        return
    typer.echo(f"run dir:  {report.run_dir}")
    if not st:
        typer.echo("training: not started yet (no status recorded)")
    else:
        stale = stale_heartbeat(st)
        state = f"{st.get('status')} (STALE: {stale})" if stale else st.get("status")
        typer.echo(f"training: {state} - epoch {st.get('epoch')}, "
                   f"step {st.get('step')}/{st.get('total_steps')}, "
                   f"{_num(st.get('img_per_s', '?'))} img/s, ETA {_duration(st.get('eta_s'))}, "
                   f"restarts {st.get('restarts', 0)}, updated {st.get('updated')}")
        if st.get("error"):
            typer.echo(f"error:    {st['error']}")
        metrics = st.get("last_metrics") or {}
        if metrics:
            typer.echo("metrics:  " + ", ".join(f"{k} {_num(v)}" for k, v in metrics.items()))
        if isinstance(st.get("best_val_psnr"), float) and math.isfinite(st["best_val_psnr"]):  # -inf before any eval
            typer.echo(f"best val PSNR: {_num(st['best_val_psnr'])}")
    if pace := epoch_pace(report.epoch_seconds, report.epochs):
        typer.echo(f"epoch time: {pace}")
    typer.echo(f"checkpoints: {', '.join(report.checkpoints) if report.checkpoints else 'none'}")
    if report.log is not None:
        typer.echo(f"log:      {report.log}")


def cancel(
    target: str = typer.Argument(..., metavar="RUN_DIR|JOB_ID"),
    now: bool = typer.Option(False, "--now", help="scancel at once instead of checkpointing first."),
) -> None:
    """Stop a run: the training saves a checkpoint at the next step and the job ends (not requeued).

    Resume it later with `demakeup submit MODEL --shards DIR --run-dir RUN_DIR --resume latest`.
    """
    from demakeup_dist.launch.status import cancel as cancel_run

    with user_errors():
        typer.echo(cancel_run(target, now=now))


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f} days"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(submit)
    app.command()(status)
    app.command()(cancel)
