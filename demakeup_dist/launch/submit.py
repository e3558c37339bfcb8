"""Submit a rendered training job to Slurm (`sbatch --parsable`) or run the same script here (`--local`).

Every submission leaves in the run dir the exact script (`job.sbatch`) and a record of how it was made
(`submissions.json`: job id, time, the `demakeup` command line, log path). The environment is never
recorded: secrets such as WANDB_API_KEY reach the job through it, not through files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from demakeup_dist import atomic
from demakeup_dist.launch.render import JobOptions, log_path, render, validate

SCRIPT_NAME = "job.sbatch"
RECORD_NAME = "submissions.json"


@dataclass(frozen=True)
class Submission:
    job_id: str  # Slurm job id, or `local-PID` for --local
    run_dir: Path
    log: Path
    script: Path
    wandb_id: str | None  # known once the run has started once (RUN_DIR/wandb_id.txt)


def default_run_dir(model: str, root: Path = Path("runs")) -> Path:
    return (root / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()


def check_inputs(opts: JobOptions, resume: bool) -> None:
    """Refuse what would fail only once the job starts: missing shards, a run dir of another model or
    one that already holds a run (unless resuming it)."""
    from demakeup_dist.data.shards import load_manifest
    from demakeup_dist.train.checkpoint import latest_checkpoint
    from demakeup_dist.train.rundir import check_same_model

    if not opts.shards.is_dir():
        raise FileNotFoundError(f"--shards {opts.shards}: no such folder; make one with `demakeup shard DATA`")
    load_manifest(opts.shards)
    if opts.config is not None and not opts.config.is_file():
        raise FileNotFoundError(f"--config {opts.config}: no such file")
    if resume:
        if not opts.run_dir.is_dir():
            raise FileNotFoundError(f"--resume {opts.run_dir}: no such run dir")
        check_same_model(opts.run_dir, opts.model)
        return
    if opts.run_dir.exists():
        check_same_model(opts.run_dir, opts.model)
        latest = latest_checkpoint(opts.run_dir)
        if latest is not None:
            raise ValueError(
                f"--run-dir {opts.run_dir} already holds a run (checkpoint {latest.name}): continue it with "
                f"--resume {opts.run_dir}, or choose a new --run-dir"
            )


def submit(opts: JobOptions, *, template: Path | None = None, command: list[str] | None = None,
           resume: bool = False) -> Submission:
    """Render, save and `sbatch --parsable` the job; return its id and where to look."""
    script_text = _prepare(opts, template, resume)
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise FileNotFoundError(
            "sbatch not found on PATH: submit from a Slurm login node, or run here with --local "
            "(or see the script with --dry-run)"
        )
    created = not opts.run_dir.exists()
    script = _save_script(opts.run_dir, script_text)
    result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        if created:
            shutil.rmtree(opts.run_dir, ignore_errors=True)
        raise ValueError(f"sbatch refused the job (exit {result.returncode}): {result.stderr.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    return _record(opts.run_dir, job_id, log_path(opts.run_dir, job_id), script, command)


def run_local(opts: JobOptions, *, template: Path | None = None, command: list[str] | None = None,
              resume: bool = False, out: TextIO = sys.stdout) -> tuple[Submission, int]:
    """Run the job script on this machine as a one-node job; its output goes to `out` and to the log.
    Returns the submission record and the script's exit code."""
    if validate(opts).nodes != 1:
        raise ValueError("--local runs on this machine only: use --nodes 1 (or fewer --gpus)")
    script = _save_script(opts.run_dir, _prepare(opts, template, resume))
    job_id = f"local-{os.getpid()}"
    submission = _record(opts.run_dir, job_id, log_path(opts.run_dir, job_id), script, command)
    env = {**os.environ, "DEMAKEUP_LOCAL": "1", "SLURM_JOB_ID": str(os.getpid()), "SLURM_JOB_NODELIST":
           socket.gethostname(), "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_RESTART_COUNT": "0"}
    with open(submission.log, "a", encoding="utf-8") as log, subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # tee: the terminal and the log
            out.write(line)
            log.write(line)
            log.flush()
    return submission, proc.returncode


def _prepare(opts: JobOptions, template: Path | None, resume: bool) -> str:
    text = render(opts, template)
    check_inputs(opts, resume)
    return text


def _save_script(run_dir: Path, text: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SCRIPT_NAME
    atomic.write_text(path, text)
    path.chmod(0o755)
    return path


def _record(run_dir: Path, job_id: str, log: Path, script: Path, command: list[str] | None) -> Submission:
    """Append this submission to RUN_DIR/submissions.json (rewritten atomically)."""
    path = run_dir / RECORD_NAME
    records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    records.append({"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": command or [], "log": str(log), "script": str(script)})
    atomic.write_json(path, records)
    wandb_file = run_dir / "wandb_id.txt"
    wandb_id = wandb_file.read_text(encoding="utf-8").strip() if wandb_file.is_file() else None
    return Submission(job_id, run_dir, log, script, wandb_id)

