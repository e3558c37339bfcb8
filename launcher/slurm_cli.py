"""`demakeup submit`, `demakeup status`, `demakeup cancel`: training jobs on Slurm (or here, --local)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from launcher.errors import UserError, user_errors


def submit(
    model: str = typer.Argument(..., help="Network to train: p1, p2, p3 or p4."),
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
    strategy: str = typer.Option("ddp", help="ddp, or deepspeed (ZeRO config configs/deepspeed/zeroN.json)."),
    zero: int = typer.Option(2, help="DeepSpeed ZeRO stage 1, 2 or 3 (with --strategy deepspeed)."),
    precision: Optional[str] = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on GPUs, fp32 on CPUs)."),
    config: Optional[Path] = typer.Option(None, help="Training YAML config (default: configs/MODEL.yaml)."),
    template: Optional[Path] = typer.Option(None, help="Your copy of slurm/train.sbatch to render instead."),
    resume: Optional[Path] = typer.Option(None, metavar="RUN_DIR", help="Continue this run from its last checkpoint."),
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
    from demakeup_dist.launch.submit import check_inputs, default_run_dir, run_local, submit as submit_job
    from launcher.train_cli import check_train_options

    with user_errors():
        if dry_run and local:
            raise UserError("--dry-run and --local exclude each other: pick one")
        if resume is not None and run_dir is not None and resume.resolve() != run_dir.resolve():
            raise UserError("--resume RUN_DIR already names the run dir: drop --run-dir")
        if nodes != "auto" and not nodes.isdigit():
            raise UserError(f"--nodes {nodes!r}: use auto or a number")
        target = resume or run_dir or default_run_dir(model)
        opts = JobOptions(
            model=model, shards=shards.resolve(), run_dir=target.resolve(), gpus=gpus, gpus_per_node=gpus_per_node,
            nodes=None if nodes == "auto" else int(nodes), cpu_procs_per_node=cpu_procs_per_node,
            cpus_per_gpu=cpus_per_gpu, partition=partition, account=account, qos=qos, time=time_limit, mem=mem,
            strategy=strategy, zero=zero, precision=precision, config=config.resolve() if config else None,
            signal_seconds=signal_seconds, max_restarts=max_restarts, train_args=tuple(train_args or ()),
        )
        template = template.resolve() if template else None
        # Everything the job would refuse once it leaves the queue is refused here, --dry-run included.
        validate(opts)
        check_train_options(model, opts.shards, opts.train_args, config=opts.config, run_dir=opts.run_dir,
                            resume=resume is not None, strategy=strategy, zero=zero, precision=precision)
        check_inputs(opts, resume is not None)
        if dry_run:
            sys.stdout.write(render(opts, template))
            typer.echo(f"(dry run: nothing submitted; run dir would be {opts.run_dir})", err=True)
            return
        command = ["demakeup", *sys.argv[1:]]
        if local:
            sub, code = run_local(opts, template=template, command=command, resume=resume is not None)
            typer.echo(f"local job ended with exit code {code}; run dir {sub.run_dir}; log {sub.log}", err=True)
            raise typer.Exit(code)
        sub = submit_job(opts, template=template, command=command, resume=resume is not None)
    typer.echo(f"job id:  {sub.job_id}")
    typer.echo(f"run dir: {sub.run_dir}")
    typer.echo(f"log:     {sub.log}")
    typer.echo(f"wandb:   {sub.wandb_id or 'id in RUN_DIR/wandb_id.txt once training starts'}")
    typer.echo(f"watch:   demakeup status {sub.job_id}")


def status(
    target: Optional[str] = typer.Argument(None, metavar="[RUN_DIR|JOB_ID]", help="Default: the newest run in runs/."),
) -> None:
    """Where a run stands: Slurm state, epoch/step, last metrics, img/s, ETA, checkpoints, restarts."""
    from demakeup_dist.launch.status import run_report, stale_heartbeat

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
        typer.echo("training: not started yet (no status.json)")
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
    typer.echo(f"checkpoints: {', '.join(report.checkpoints) if report.checkpoints else 'none'}")
    if report.log is not None:
        typer.echo(f"log:      {report.log}")


def cancel(
    target: str = typer.Argument(..., metavar="RUN_DIR|JOB_ID"),
    now: bool = typer.Option(False, "--now", help="scancel at once instead of checkpointing first."),
) -> None:
    """Stop a run: the training saves a checkpoint at the next step and the job ends (not requeued).

    Resume it later with `demakeup submit MODEL --shards DIR --resume RUN_DIR`.
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
