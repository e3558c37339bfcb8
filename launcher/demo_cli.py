"""`demakeup demo` and `demakeup experiment`: the four problems trained alike, one report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from launcher.errors import UserError, user_errors
from launcher.options import ALL_MODELS, MODELS_HELP, models_list


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the data, shards, runs, report.md and grid.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds an earlier demo."),
    models: str = typer.Option(ALL_MODELS, help=MODELS_HELP),
    seeds: int = typer.Option(1, help="Train every network this many times (seeds 25, 26, ...) and report mean +- "
                              "std; the time grows in proportion (3 seeds: about 3x the 4-10 minutes on a 2-core CPU)."),
) -> None:
    """The whole experiment on a small synthetic dataset, sized for this machine (4-6 min on a 2-core CPU, up to 10 on slow ones).

    Synthesises faces with and without makeup, packs them into shards, trains p1, p2, p3 and p4 with
    the recommended configuration (configs/recommended/: the brief's recipe plus residual heads, peak lr
    2e-3 and the PSNR loss), evaluates each on the test split and writes OUT/report.md (the table, the
    brief's questions answered, the makeup removed per face region) and OUT/grid.png (the test faces with
    the strongest lipstick, eye makeup, blush and foundation: per network its output and what it changed).
    On a 2-core CPU (64 px faces, 256 steps per network) expect p3 about +1.7 dB above copying the input
    and about 60% of the lipstick removed. A GPU, when present, is used with 224 px faces and more data.
    """
    from demakeup_dist.demo import run_demo
    from demakeup_dist.report import GRID_FILE, REPORT_FILE

    with user_errors():
        try:
            text = run_demo(out, models=models_list(models), overwrite=overwrite, seeds=seeds)
        except RuntimeError as exc:  # a training that failed; the message says where to look
            raise UserError(str(exc)) from None
    typer.echo(text)
    typer.echo(f"\nreport: {out / REPORT_FILE}   pictures: {out / GRID_FILE}")


def experiment(
    shards: Optional[Path] = typer.Option(None, help="Shard set made by `demakeup shard` (has manifest.json); "
                                                     "with --report-only it defaults to the one OUT was trained on."),
    out: Path = typer.Option(Path("runs/experiment"), help="Folder for configs/, runs/<model>/, report.md, grid.png."),
    local: bool = typer.Option(False, "--local", help="Train here, one model after the other."),
    nproc: int = typer.Option(1, help="With --local: processes per training (GPUs, or CPU processes)."),
    gpus: Optional[int] = typer.Option(None, help="Submit one Slurm job per model with this many GPUs, then wait."),
    gpus_per_node: int = typer.Option(8, help="With --gpus: GPUs on one node of the partition."),
    partition: Optional[str] = typer.Option(None, help="With --gpus: Slurm partition."),
    account: Optional[str] = typer.Option(None, help="With --gpus: Slurm account."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="With --gpus: Slurm time limit per job, D-HH:MM:SS."),
    epochs: Optional[int] = typer.Option(None, help="Epochs for every model (default: configs/MODEL.yaml: 300)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch for every model (default: the config's, 64)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate for every model (default: the config's, 1e-2)."),
    models: str = typer.Option(ALL_MODELS, help=MODELS_HELP),
    residual: bool = typer.Option(False, "--residual", help="Train each network's `residual: true` variant "
                                  "(input added to the output; not in the brief, see docs/results.md)."),
    recommended: bool = typer.Option(False, "--recommended", help="Start from configs/recommended/MODEL.yaml (the "
                                     "levers that measurably won, docs/results.md) instead of configs/MODEL.yaml."),
    seeds: int = typer.Option(1, help="Train every network this many times (the config's seed, +1, ...); the report "
                              "gives mean +- std and calls a difference clear only beyond the seed noise."),
    report_only: bool = typer.Option(False, "--report-only", help="Only rebuild OUT/report.md from finished runs."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="A config key for every model, as for `demakeup train --set`."),
) -> None:
    """Train p1..p4 alike on any shard set (here or on Slurm) and write the comparison report.

    Rerunning the same command keeps finished models and resumes unfinished ones. Examples:
    `demakeup experiment --shards shards/data --local --epochs 20`,
    `demakeup experiment --shards /shared/shards --gpus 8 --partition gpu --time 2-00:00:00`,
    `demakeup experiment --report-only --out runs/experiment`,
    `demakeup experiment --shards shards/data --local --recommended --seeds 3`.
    """
    from demakeup_dist.experiment import RECOMMENDED_DIR, run_experiment
    from demakeup_dist.report import REPORT_FILE, write_report
    from demakeup_dist.train.config import parse_sets

    with user_errors():
        chosen = models_list(models)
        if report_only:
            text = write_report(out, chosen, shards=shards)
        else:
            if shards is None:
                raise UserError("--shards DIR is required (a shard set made by `demakeup shard`), unless --report-only")
            if local == (gpus is not None):
                raise UserError("choose where to train: --local (this machine) or --gpus N (Slurm jobs)")
            slurm = None if local else dict(gpus=gpus, gpus_per_node=gpus_per_node, partition=partition,
                                            account=account, time=time_limit)
            try:
                text = run_experiment(shards, out, models=chosen, nproc=nproc, slurm=slurm, residual=residual,
                                      overrides=dict(epochs=epochs, batch_size=batch_size, lr=lr),
                                      sets=parse_sets(sets or []), seeds=seeds,
                                      config_dir=RECOMMENDED_DIR if recommended else None)
            except RuntimeError as exc:  # a training that failed; the message says where to look
                raise UserError(str(exc)) from None
    typer.echo(text)
    typer.echo(f"\nreport: {out / REPORT_FILE}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(demo)
    app.command()(experiment)
