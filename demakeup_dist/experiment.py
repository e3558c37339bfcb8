"""`demakeup experiment`: train networks alike on any shard set, here or on Slurm, and write the report.

Output folder layout (OUT):
  configs/<model>.yaml      the resolved training config of each run
  runs/<model>/             one run dir per model and seed (see the README's "Run directory")
  experiment.json           shard set, hardware, wall time per phase, notes (read by `report`)
  report.md  grid.png       the table, the brief's questions answered, test pictures

Progress: the trainer logs every few steps; this module logs a line per phase with its time and the
running total, on the `demakeup` logger.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from demakeup_dist import atomic
from demakeup_dist.machine import available_cores, cpu_name, torch_device
from demakeup_dist.models import MODEL_NAMES
from demakeup_dist.report import EXPERIMENT_FILE, REPORT_FILE, run_dir_of, write_report
from demakeup_dist.resources import recommended_configs
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.tracking import log, setup_logging

SLURM_POLL_S = 30.0
RECOMMENDED_DIR = recommended_configs()  # the brief's configs + the levers that measurably won


def describe_hardware() -> str:
    """One line for the report, e.g. "CPU: 2 cores AMD EPYC, torch 2.13.0 with 2 thread(s)"."""
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)} (1 of {torch.cuda.device_count()}), torch {torch.__version__}"
    return (f"CPU: {available_cores()} cores {cpu_name()}"
            + f", torch {torch.__version__} with {torch.get_num_threads()} thread(s)")


@dataclass
class PhaseClock:
    """Times named phases; logs a line at each end with the running total."""

    start: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        log.info("== %s ...", name)
        began = time.perf_counter()
        yield
        self.phases[name] = time.perf_counter() - began
        log.info("== %s done in %.0f s (total %.0f s)", name, self.phases[name], self.total())


def run_experiment(shards: Path, out: Path, *, models: tuple[str, ...] = MODEL_NAMES,
                   overrides: dict[str, Any] | None = None, nproc: int = 1, slurm: dict[str, Any] | None = None,
                   notes: list[str] | None = None, clock: PhaseClock | None = None, residual: bool = False,
                   sets: dict[str, Any] | None = None, seeds: int = 1, config_dir: Path | None = None,
                   parallel: int = 1) -> str:
    """Train `models` on `shards` into OUT/runs/<model>, one after the other, then write the report.

    `residual` trains each network's `residual: true` variant (the input added to its output). `sets`
    (from `parse_sets`) and then `overrides` change every model's config. `seeds` N trains each
    network N times, with the config's seed, seed + 1, ... (OUT/runs/<model>, <model>-s2, ...), and the
    report gives mean +- std. `config_dir` holds <model>.yaml files to start from instead of the
    shipped configs (e.g. configs/recommended). The runs share one wandb group, kept in OUT's
    experiment record so a rerun adds to it, and are tagged with model and variant.

    Where they run: in this process (nproc 1), `demakeup train --nproc N` subprocesses, `parallel` single-
    process trainings side by side (each with its share of the cores: on a small CPU, two one-thread
    trainings do more steps per second than one two-thread training), or one Slurm job per model
    (`slurm`: JobOptions fields such as gpus, partition, time), waited for. A model whose run
    dir is already finished is skipped; an unfinished one is resumed. Returns the report's table.
    """
    from demakeup_dist.data.shards import load_manifest
    from demakeup_dist.report import load_experiment
    from demakeup_dist.train.config import config_yaml, load_config

    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: must be at least 1")
    shards, out, clock = Path(shards).resolve(), Path(out), clock or PhaseClock()
    load_manifest(shards)  # a clear error now rather than in the first training
    if nproc < 1:
        raise ValueError(f"--nproc {nproc}: must be at least 1")
    earlier = load_experiment(out)
    if earlier.get("shards", str(shards)) != str(shards):
        raise ValueError(f"--out {out} holds runs trained on {earlier['shards']}, not {shards}: "
                         "choose another --out so that one report never mixes two datasets")
    (out / "configs").mkdir(parents=True, exist_ok=True)
    setup_logging(None, True)
    group = earlier.get("wandb_group") or f"{out.resolve().name}-{secrets.token_hex(3)}"
    record = {"shards": str(shards), "models": list(models), "hardware": _hardware(nproc, slurm),
              "notes": notes or earlier.get("notes", []), "wandb_group": group, "seeds": seeds}
    atomic.write_json(out / EXPERIMENT_FILE, {**earlier, **record})
    todo = []  # (label, model, run dir, config file) of every run still to train
    for model in models:
        for k in range(1, seeds + 1):
            run_dir, label = run_dir_of(out, model, k), model if k == 1 else f"{model}-s{k}"
            if RunDir(run_dir).read_status().get("status") == "finished":
                log.info("%s: already finished in %s, not retrained", label, run_dir)
                continue
            config_file = out / "configs" / f"{label}.yaml"
            config = load_config(model, config_dir / f"{model}.yaml" if config_dir else None, sets=sets,
                                 **(overrides or {}))
            config.seed += k - 1
            if residual:
                config.model_args = {**config.model_args, "residual": True}
            config.wandb_group = group
            config.wandb_tags = [model, "residual" if config.model_args.get("residual") else "brief"]
            atomic.write_text(config_file, config_yaml(config))
            todo.append((label, model, run_dir, config_file))
    if slurm is not None and todo:
        with clock.phase(f"Slurm jobs {', '.join(label for label, *_ in todo)}"):
            _run_on_slurm(todo, shards, slurm)
    if slurm is None and parallel > 1 and len(todo) > 1:
        with clock.phase(f"train {', '.join(label for label, *_ in todo)} ({min(parallel, len(todo))} at a time)"):
            _train_side_by_side(todo, shards, parallel)
    else:
        for label, model, run_dir, config_file in [] if slurm is not None else todo:
            with clock.phase(f"train {label}"):
                _train_here(model, config_file, shards, run_dir, nproc)
    phases = {**earlier.get("phases", {}), **clock.phases}  # a rerun keeps the times of what it skipped
    atomic.write_json(out / EXPERIMENT_FILE, {**record, "wall_s": sum(phases.values()), "phases": phases})
    with clock.phase("report"):
        device = torch_device()
        text = write_report(out, models, shards=shards, device=device)
    log.info("report: %s (total %.0f s)", out / REPORT_FILE, clock.total())
    return text


def _hardware(nproc: int, slurm: dict[str, Any] | None) -> str:
    if slurm is not None:
        return f"Slurm, {slurm.get('gpus', 1)} GPU(s) per model" if slurm.get("gpus") else "Slurm, CPU processes"
    return describe_hardware() + (f", {nproc} processes" if nproc > 1 else "")


def _train_here(model: str, config_file: Path, shards: Path, run_dir: Path, nproc: int) -> None:
    if nproc == 1:
        from demakeup_dist.train.config import load_config
        from demakeup_dist.train.loop import train

        try:
            train(load_config(model, config_file), shards, run_dir, resume="auto")
        finally:
            setup_logging(None, True)  # detach the run's log file from the phase lines
        return
    code = subprocess.call([*_train_command(model, config_file, shards, run_dir), "--nproc", str(nproc)])
    if code != 0:
        raise RuntimeError(f"training {model} failed (exit {code}); see {RunDir(run_dir).log_file}, fix, and rerun "
                           "the same command: finished models are kept and the rest resume")


def _train_command(model: str, config_file: Path, shards: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "launcher.main", "train", model, "--shards", str(shards), "--config",
            str(config_file), "--run-dir", str(run_dir), "--resume", "auto"]


def _train_side_by_side(todo: list[tuple[str, str, Path, Path]], shards: Path, parallel: int) -> None:
    """Train the runs of `todo`, `parallel` at a time, each a one-process `demakeup train` with
    cores // parallel threads; their lines reach the terminal prefixed by the run's label."""
    threads = max(1, available_cores() // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    waiting, running, failed = _longest_first(todo, shards), {}, []
    while waiting or running:
        while waiting and len(running) < parallel:
            label, model, run_dir, config_file = waiting.pop(0)
            proc = subprocess.Popen(_train_command(model, config_file, shards, run_dir), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            echo = threading.Thread(target=_prefix_lines, args=(proc.stdout, label), daemon=True)
            echo.start()
            running[label] = (proc, echo, run_dir)
            log.info("%s: training (%d thread(s), side by side with %d other(s))", label, threads, len(running) - 1)
        time.sleep(0.5)
        for label, (proc, echo, run_dir) in list(running.items()):
            if proc.poll() is not None:
                echo.join()
                del running[label]
                if proc.returncode != 0:
                    failed.append(f"{label} (exit {proc.returncode}; see {RunDir(run_dir).log_file})")
    if failed:
        raise RuntimeError(f"training failed: {', '.join(failed)}; fix, and rerun the same command: finished "
                           "models are kept and the rest resume")


def _longest_first(todo: list[tuple[str, str, Path, Path]], shards: Path) -> list[tuple[str, str, Path, Path]]:
    """`todo` by training work (train FLOPs per image x epochs), largest first: the longest trainings start
    first, so the lanes end close together (in the demo's order p1, p2, p3, p4 the lanes ended 80 s apart)."""
    from demakeup_dist.data.shards import load_manifest
    from demakeup_dist.train.config import config_from_file
    from demakeup_dist.train.utilisation import train_flops_per_image

    size = load_manifest(shards)["image_size"]

    def work(run: tuple[str, str, Path, Path]) -> float:
        config = config_from_file(run[3])
        return train_flops_per_image(config.model, size, config.model_args) * config.epochs

    return sorted(todo, key=work, reverse=True)


def _prefix_lines(stream, label: str) -> None:
    for line in stream:
        sys.stdout.write(f"[{label}] {line}")
        sys.stdout.flush()


def _run_on_slurm(todo: list[tuple[str, str, Path, Path]], shards: Path, slurm: dict[str, Any]) -> None:
    """Submit one job per run (resuming a run dir that holds checkpoints), then wait for all of them."""
    from demakeup_dist.launch.render import JobOptions
    from demakeup_dist.launch.status import ACTIVE_STATES, job_state
    from demakeup_dist.launch.submit import submit

    jobs, run_dirs = {}, {}
    for label, model, run_dir, config_file in todo:
        run_dirs[label] = run_dir = run_dir.resolve()
        opts = JobOptions(model=model, shards=shards, run_dir=run_dir, config=config_file.resolve(), **slurm)
        jobs[label] = submit(opts, command=["demakeup", *sys.argv[1:]], resume="auto").job_id
        log.info("%s: Slurm job %s, run dir %s", label, jobs[label], run_dir)
    while jobs:
        time.sleep(SLURM_POLL_S)
        for label, job_id in list(jobs.items()):
            status = RunDir(run_dirs[label]).read_status()
            if status.get("status") == "finished":
                log.info("%s: finished", label)
                del jobs[label]
                continue
            state = job_state(job_id).state
            if status.get("status") == "failed" or (state is not None and state.split()[0] not in ACTIVE_STATES):
                raise RuntimeError(f"Slurm job {job_id} ({label}) stopped before the training finished (Slurm: "
                                   f"{state or 'unknown'}, training: {status.get('status', 'not started')}): see "
                                   f"{run_dirs[label]}; rerun the same command to resubmit what is left")
            log.info("%s: job %s %s, epoch %s, step %s/%s, ETA %.0f s", label, job_id, state or "?",
                     status.get("epoch"), status.get("step"), status.get("total_steps"), status.get("eta_s", -1))
