"""The four-problem experiment report: `report.md` (table + the brief's questions), `grid.png`, `val_psnr.png`.

With several seeds (`experiment.json` "seeds": N) each number is the mean +- std over the seeds and a
question is answered only where the difference exceeds the seed noise (demakeup_dist/seeds.py).
Reads finished run dirs only (demakeup_dist/rundir.py): `OUT/runs/<model>/` (seed 1; `<model>-s2` .. `-sN`
beside it) whose status is "finished", with their test results (the best weights' metrics and the identity /
bicubic baselines, written by the trainer), config, best weights and val metrics. `OUT/experiment.json`
(written by `demakeup_dist.experiment`) adds the shard set, the hardware, the wall time and notes; a report
can be rebuilt from these files alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from demakeup_dist import atomic
from demakeup_dist.rundir import RunDir
from demakeup_dist.models import MODEL_NAMES, MODELS
from demakeup_dist.pictures import CHANGE_GAIN, grid_columns, picture_grid, psnr_plot, sr_models
from demakeup_dist.regions import evaluate_regions, showcase_rows, split_region_maps, synthetic_source
from demakeup_dist.regions import table as region_table
from demakeup_dist.results import EpochRecord, Quality, RunResults
from demakeup_dist.seeds import Spread, difference, spread

EXPERIMENT_FILE = "experiment.json"
REPORT_FILE = "report.md"
GRID_FILE = "grid.png"
PLOT_FILE = "val_psnr.png"
# One seed only: PSNR differences below CLEAR_DB are read as "no clear difference". It is 2 standard errors
# of the difference of two single runs, 2 * sqrt(2) * SEED_STD_DB, with the seed std of the recommended p3
# at demo scale (docs/results.md section 6: seeds 25-27, synthesizer version 2); at the brief's scale the
# spread may differ: `--seeds` measures it.
SEED_STD_DB = 0.12
CLEAR_DB = round(2 * math.sqrt(2) * SEED_STD_DB, 2)


@dataclass(frozen=True)
class RunSummary:
    """What the report needs from one finished run dir."""

    model: str
    run_dir: Path
    results: RunResults  # results.json: test metrics per task and the baselines
    config: dict[str, Any]  # the run's resolved config
    params: int  # numbers in best.safetensors
    img_per_s: float | None  # the trainer's last measured training throughput (status.json)
    records: list[EpochRecord]  # every evaluation on val (metrics.jsonl)

    def test(self, task: str) -> Quality:
        return self.results.evaluation.metrics[task]

    def baseline(self, task: str) -> Quality:
        return self.results.evaluation.baselines[task]

    @property
    def val_psnr(self) -> list[tuple[int, float]]:
        """(epoch, val PSNR) of every evaluation."""
        return [(r.epoch, r.val.psnr) for r in self.records]


def run_dir_of(out: Path, model: str, seed_index: int = 1) -> Path:
    """OUT/runs/<model> for the first seed (so a 1-seed experiment grows into an N-seed one), <model>-sK after."""
    return Path(out) / "runs" / (model if seed_index == 1 else f"{model}-s{seed_index}")


def load_run(run_dir: Path, model: str) -> RunSummary:
    """Read a finished run; FileNotFoundError / ValueError name the run dir and what is missing."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise FileNotFoundError(f"no run dir {run_dir} for {model}: train it first (`demakeup experiment` without "
                                "--report-only) or leave it out with --models")
    status = run.read_status()
    if status.get("status") != "finished" or not run.results_file.is_file():
        raise ValueError(f"the {model} run in {run_dir} is not finished (status: "
                         f"{status.get('status', 'not started')}): wait for it (`demakeup status` shows where it is), "
                         "resume it, or leave it out with --models")
    saved = run.read_config()
    config = saved.to_dict() if saved is not None else {}
    if config.get("model", model) != model:
        raise ValueError(f"{run_dir} holds a {config['model']} run, not {model}")
    weights = run.best_weights
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the {model} run dir is incomplete; retrain it")
    with safe_open(str(weights), framework="pt") as fh:
        params = sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())
    records = [EpochRecord.from_dict(r, f"{run.metrics_file} record {i}")
               for i, r in enumerate(run.read_metrics(), start=1)]
    results = RunResults.from_dict(run.read_results(), str(run.results_file))
    return RunSummary(model, run.path, results, config, params, status.get("img_per_s"), records)


Runs = dict[str, list[RunSummary]]  # model -> one finished run per seed


def _metric(runs: list[RunSummary], task: str, measure: str = "psnr") -> Spread:
    return spread(getattr(run.test(task), measure) for run in runs)


def _sr(runs: Runs) -> dict[str, list[RunSummary]]:
    return {name: runs[name] for name in sr_models(runs)}


def _cell(value: Spread, digits: int) -> str:
    return f"{value.mean:.{digits}f}" + (f" +- {value.std:.{digits}f}" if value.n > 1 else "")


def table(runs: Runs) -> str:
    """The results table in Markdown: identity baseline, one row per model, bicubic (when an SR model ran).

    With several seeds a cell is `mean +- std` over them; the curve column reads the seeds' mean curve.
    """
    identity = next(iter(runs.values()))[0].baseline("demakeup")
    lines = ["| model | de-makeup PSNR (dB) | de-makeup SSIM | SR PSNR (dB) | SR SSIM | parameters | train img/s "
             "| val PSNR: epoch 1 -> best |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| identity (output = input) | {identity.psnr:.2f} | {identity.ssim:.4f} | | | | | |"]
    for name, seeds in runs.items():
        sr = " | "
        if name in _sr(runs):
            sr = f"{_cell(_metric(seeds, 'sr'), 2)} | {_cell(_metric(seeds, 'sr', 'ssim'), 4)}"
        speeds = [run.img_per_s for run in seeds if run.img_per_s]
        speed = f"{sum(speeds) / len(speeds):.1f}" if speeds else "?"
        curve = "?"
        mean_curve = _mean_curve(seeds)
        if mean_curve:
            best = max(mean_curve, key=lambda point: point[1])
            curve = f"{mean_curve[0][1]:.2f} -> {best[1]:.2f} (epoch {best[0]})"
        lines.append(f"| {name}: {MODELS[name].summary} | {_cell(_metric(seeds, 'demakeup'), 2)} | "
                     f"{_cell(_metric(seeds, 'demakeup', 'ssim'), 4)} | {sr} | {seeds[0].params / 1e6:.2f} M | {speed} "
                     f"| {curve} |")
    sr_runs = list(_sr(runs).values())
    if sr_runs:  # the same test set for every network: one bicubic row
        bicubic = sr_runs[0][0].baseline("sr")
        lines.append(f"| bicubic 4x of the input (SR baseline) | | | {bicubic.psnr:.2f} | "
                     f"{bicubic.ssim:.4f} | | | |")
    return "\n".join(lines)


def _mean_curve(seeds: list[RunSummary]) -> list[tuple[int, float]]:
    """(epoch, mean val PSNR over the seeds) for the epochs every seed evaluated."""
    common = set.intersection(*(set(dict(run.val_psnr)) for run in seeds))
    return [(e, sum(dict(run.val_psnr)[e] for run in seeds) / len(seeds)) for e in sorted(common)]


def _verdict(a: Spread, b: Spread, fixed_baseline: bool = False) -> tuple[str, str]:
    """(answer, the difference in words) for b vs a: with one seed the CLEAR_DB rule, else the seed noise.

    `fixed_baseline`: a is a baseline without training noise (identity, bicubic), so a single run's
    noise is that of b alone: CLEAR_DB / sqrt(2) (2 seed stds).
    """
    diff = difference(a, b)
    if min(a.n, b.n) >= 2:
        return diff.verdict(), str(diff)
    if abs(diff.delta) < (CLEAR_DB / math.sqrt(2) if fixed_baseline else CLEAR_DB):
        return "no clear difference", f"{diff.delta:+.2f} dB"
    return ("yes" if diff.delta > 0 else "no, it hurts"), f"{diff.delta:+.2f} dB"


def answers(runs: Runs) -> list[str]:
    """The brief's questions read off the test PSNR, one line each (only those whose models ran)."""
    psnr = {name: _metric(seeds, "demakeup") for name, seeds in runs.items()}
    seeds = min(len(s) for s in runs.values())
    # The same test set for every seed: the identity baseline has no seed noise of its own.
    identity = spread([next(iter(runs.values()))[0].baseline("demakeup").psnr] * seeds)
    lines = []
    for name, value in psnr.items():
        verdict, gain = _verdict(identity, value, fixed_baseline=True)
        lines.append(f"- {name} vs the identity baseline: {gain}" + {
            "yes": " (above it: the network removes makeup)",
            "no, it hurts": " (below it: the network does not yet reproduce the face better than copying the input)",
        }.get(verdict, " (within the seed noise of it: no gain established)"))
    questions = [("p1", "p3", "Does a ResNet34 encoder help (p3 vs p1)?"),
                 ("p2", "p3", "Do skip connections help (p3 vs p2)?"),
                 ("p3", "p4", "Does adding the SR task help de-makeup (p4 vs p3)?")]
    for base, new, question in questions:
        if base in psnr and new in psnr:
            verdict, gain = _verdict(psnr[base], psnr[new])
            lines.append(f"- {question} **{verdict}**: {psnr[new]} vs {psnr[base]} dB ({gain}).")
    for name, runs_sr in _sr(runs).items():
        base = runs_sr[0].baseline("sr")
        sr, bicubic = _metric(runs_sr, "sr"), spread([base.psnr] * len(runs_sr))
        verdict, gain = _verdict(bicubic, sr, fixed_baseline=True)
        lines.append(f"- Does {name}'s SR head beat bicubic upsampling? **{verdict}**: {sr} vs "
                     f"{bicubic.mean:.2f} dB ({gain}), SSIM {_cell(_metric(runs_sr, 'sr', 'ssim'), 4)} vs "
                     f"{base.ssim:.4f}.")
    if seeds >= 2:
        lines.append(f"({seeds} seeds per network, mean +- std. A difference is called clear only when it exceeds "
                     "the seed noise, 2 standard errors of the difference; inside it the answer is 'no clear "
                     "difference'.)")
    else:
        lines.append(f"(One seed: no spread measured here; with the {SEED_STD_DB} dB seed std measured at demo scale "
                     f"(docs/results.md), differences under {CLEAR_DB} dB "
                     f"(under {CLEAR_DB / math.sqrt(2):.2f} dB from a baseline) are read as no clear difference; "
                     "`--seeds 3` measures the spread.)")
    return lines


def scale_lines(runs: Runs, experiment: dict[str, Any], out: Path, shards: Path | None) -> list[str]:
    """Image size, samples, epochs / batch / lr per model, hardware and wall time."""
    from demakeup_dist.data.shards import load_manifest

    lines = []
    if shards is not None:
        manifest = load_manifest(shards)
        size, hr = manifest["image_size"], manifest["hr_size"]
        counts = ", ".join(f"{info['samples']} {split}" for split, info in manifest["splits"].items())
        where = shards.resolve()
        where = f"OUT/{where.relative_to(out.resolve())}" if where.is_relative_to(out.resolve()) else str(where)
        lines.append(f"- data: {where}: {size}x{size} images" + (f" (HR {hr}x{hr})" if hr else "")
                     + f", {counts} triplets")
    recipes = {name: _recipe(seeds[0].config) for name, seeds in runs.items()}
    for recipe in dict.fromkeys(recipes.values()):
        names = ", ".join(n for n, r in recipes.items() if r == recipe)
        lines.append(f"- training ({names}): {recipe}")
    seeds = {name: [run.config.get("seed") for run in s] for name, s in runs.items()}
    lines.append("- seeds: " + "; ".join(f"{n} {', '.join(map(str, s))}" for n, s in seeds.items()))
    if "hardware" in experiment:
        lines.append(f"- hardware: {experiment['hardware']}")
    if "wall_s" in experiment:
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in experiment.get("phases", {}).items())
        lines.append(f"- wall time: {experiment['wall_s']:.0f} s ({phases})")
    lines += [f"- note: {note}" for note in experiment.get("notes", [])]
    return lines


def _recipe(config: dict[str, Any]) -> str:
    """The training recipe in words, with every quality lever that differs from the brief's."""
    words = (f"{config.get('epochs')} epochs, batch {config.get('batch_size')}, AdamW with linear warm-up (10%) and "
             f"linear decay, peak lr {config.get('lr'):g}")
    levers = [f"loss {config['loss']}" if config.get("loss", "mse") != "mse" else "",
              f"weight EMA {config['ema_decay']:g}" if config.get("ema_decay") else "",
              "flip self-ensemble at test" if config.get("flip_ensemble") else "",
              "residual networks" if config.get("model_args", {}).get("residual") else ""]
    return words + "".join(f", {lever}" for lever in levers if lever)


def load_experiment(out: Path) -> dict[str, Any]:
    return atomic.read_json(Path(out) / EXPERIMENT_FILE, {})


def write_report(out: Path, models: tuple[str, ...] = MODEL_NAMES, *, shards: Path | None = None,
                 grid_rows: int = 4, device: str | torch.device = "cpu") -> str:
    """Write OUT/report.md, OUT/val_psnr.png (and OUT/grid.png when a shard set is known) from the finished
    runs of every seed (experiment.json's "seeds", default 1); return the table."""
    out = Path(out)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"--models {','.join(models)}: choose among {', '.join(MODEL_NAMES)}")
    experiment = load_experiment(out)
    seeds = int(experiment.get("seeds", 1))
    runs = {m: [load_run(run_dir_of(out, m, k), m) for k in range(1, seeds + 1)] for m in models}
    shards = Path(shards) if shards else (Path(experiment["shards"]) if "shards" in experiment else None)
    text = table(runs)
    parts = ["# De-makeup: the four problems", "", "Test split, best weights by val PSNR.", "", text, "",
             "## The brief's questions", "", *answers(runs), "",
             "## Scale", "", *scale_lines(runs, experiment, out, shards), ""]
    first = next(iter(runs.values()))[0]
    on_val = bool(first.records)  # the identity line where the curves were measured
    identity = first.records[-1].val.baselines["demakeup"] if on_val else first.baseline("demakeup")
    plot = psnr_plot({m: [run.val_psnr for run in seeds] for m, seeds in runs.items()}, identity.psnr)
    with atomic.atomic_path(out / PLOT_FILE) as tmp:
        plot.save(tmp, format="PNG")
    parts += ["## Val PSNR per epoch", "", f"![val PSNR per epoch]({PLOT_FILE})", "",
              "One line per run (every seed); the dashed line is the identity baseline (output = input) on the "
              + ("val split." if on_val else "test split (this run recorded none on val)."), ""]
    if shards is not None:
        data_dir = synthetic_source(shards)
        maps = split_region_maps(shards, data_dir) if data_dir else None
        names, labels = showcase_rows(shards, maps, rows=grid_rows) if maps else (None, None)
        grid = picture_grid({m: seeds[0].run_dir for m, seeds in runs.items()}, shards, grid_rows, device,
                            names=names, row_labels=labels)
        with atomic.atomic_path(out / GRID_FILE) as tmp:
            grid.save(tmp, format="PNG")
        parts += ["## Pictures", "", f"![test images]({GRID_FILE})", "",
                  "Columns (first seed): " + ", ".join(grid_columns(runs)) + "."
                  + f" The x{CHANGE_GAIN} columns show |input - target| (the makeup) and |output - input| (what "
                  "each network changed), amplified: a network that removes the makeup changes what the makeup "
                  "column shows and nothing else."
                  + (" SR / HR crops: the central window of the 4x images at full resolution." if _sr(runs) else "")
                  + (" Rows: the test faces with the most makeup on the lips, the eyes, the cheeks and the face "
                     "(the synthesizer's own region maps)." if names else ""), ""]
        if maps:
            errors = {m: [evaluate_regions(run.run_dir, m, shards, maps, device=device) for run in seeds]
                      for m, seeds in runs.items()}
            parts += ["## Where the makeup was removed", "", region_table(errors), "",
                      "Test split. The synthesizer records where it painted each product (lips: lipstick; eyes: "
                      "eyeshadow, liner, brow pencil; cheeks: blush, contour; face: foundation and the rest of the "
                      "face); per region, the share of the makeup error (input vs target) that lies there, and "
                      "how much of it each network removed (1 - its error / the makeup error) and the region's "
                      "PSNR gain. Background holds no makeup: its dB says what a network changed where it "
                      "should change nothing.", ""]
    atomic.write_text(out / REPORT_FILE, "\n".join(parts))
    return text
