"""The four-problem experiment report: `report.md` (table + the brief's questions) and `grid.png`.

Reads finished run dirs only: `OUT/runs/<model>/` with `status.json` ("finished"), `results.json`
(test metrics of the best weights and the identity / bicubic baselines, written by the trainer),
`config.yaml` and `best.safetensors`. `OUT/experiment.json` (written by `demakeup_dist.demo`) adds the
shard set, the hardware, the wall time and notes; a report can be rebuilt from these files alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from demakeup_dist.models import MODEL_NAMES, MODELS

EXPERIMENT_FILE = "experiment.json"
REPORT_FILE = "report.md"
GRID_FILE = "grid.png"
LABEL_HEIGHT = 14  # px of the grid's header row holding the column names
CLEAR_DB = 0.1  # PSNR differences below this are read as "no clear difference" (one seed, small test set)


@dataclass(frozen=True)
class RunSummary:
    """What the report needs from one finished run dir."""

    model: str
    run_dir: Path
    results: dict[str, Any]  # results.json: psnr, ssim, identity_psnr, ... [psnr_sr, bicubic_psnr_sr, ...]
    config: dict[str, Any]  # config.yaml
    params: int  # numbers in best.safetensors
    img_per_s: float | None  # the trainer's last measured training throughput (status.json)
    val_psnr: list[tuple[int, float]]  # (epoch, val PSNR) of every evaluation (metrics.jsonl)


def run_dir_of(out: Path, model: str) -> Path:
    return Path(out) / "runs" / model


def load_run(run_dir: Path, model: str) -> RunSummary:
    """Read a finished run; FileNotFoundError / ValueError name the run dir and what is missing."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run dir {run_dir} for {model}: train it first (`demakeup experiment` without "
                                "--report-only) or leave it out with --models")
    status = _read_json(run_dir / "status.json", {})
    if status.get("status") != "finished" or not (run_dir / "results.json").is_file():
        raise ValueError(f"the {model} run in {run_dir} is not finished (status: "
                         f"{status.get('status', 'not started')}): wait for it (`demakeup status` shows where it is), "
                         "resume it, or leave it out with --models")
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if config.get("model", model) != model:
        raise ValueError(f"{run_dir} holds a {config['model']} run, not {model}")
    weights = run_dir / "best.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the {model} run dir is incomplete; retrain it")
    with safe_open(str(weights), framework="pt") as fh:
        params = sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
    curve = [(r["epoch"], r["val_psnr"]) for r in map(json.loads, filter(str.strip, lines))]
    return RunSummary(model, run_dir, _read_json(run_dir / "results.json"), config, params, status.get("img_per_s"),
                      curve)


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is None:
            raise FileNotFoundError(f"{path} not found")
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is damaged ({exc}): rerun the step that wrote it") from None


def table(runs: dict[str, RunSummary]) -> str:
    """The results table in Markdown: identity baseline, one row per model, bicubic (when p4 ran)."""
    first = next(iter(runs.values())).results
    lines = ["| model | de-makeup PSNR (dB) | de-makeup SSIM | SR PSNR (dB) | SR SSIM | parameters | train img/s "
             "| val PSNR: epoch 1 -> best |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| identity (output = input) | {first['identity_psnr']:.2f} | {first['identity_ssim']:.4f} | | | | | |"]
    for name, run in runs.items():
        r = run.results
        sr = f"{r['psnr_sr']:.2f} | {r['ssim_sr']:.4f}" if "psnr_sr" in r else " | "
        speed = f"{run.img_per_s:.1f}" if run.img_per_s else "?"
        curve = "?"
        if run.val_psnr:
            best = max(run.val_psnr, key=lambda point: point[1])
            curve = f"{run.val_psnr[0][1]:.2f} -> {best[1]:.2f} (epoch {best[0]})"
        lines.append(f"| {name}: {MODELS[name].summary} | {r['psnr']:.2f} | {r['ssim']:.4f} | {sr} | "
                     f"{run.params / 1e6:.2f} M | {speed} | {curve} |")
    sr_run = next((run for run in runs.values() if "bicubic_psnr_sr" in run.results), None)
    if sr_run is not None:
        r = sr_run.results
        lines.append(f"| bicubic 4x of the input (SR baseline) | | | {r['bicubic_psnr_sr']:.2f} | "
                     f"{r['bicubic_ssim_sr']:.4f} | | | |")
    return "\n".join(lines)


def _verdict(gain: float) -> str:
    if gain >= CLEAR_DB:
        return "yes"
    return "no, it hurts" if gain <= -CLEAR_DB else "no clear difference"


def answers(runs: dict[str, RunSummary]) -> list[str]:
    """The brief's questions read off the test PSNR, one line each (only those whose models ran)."""
    psnr = {name: run.results["psnr"] for name, run in runs.items()}
    identity = next(iter(runs.values())).results["identity_psnr"]
    lines = []
    for name, value in psnr.items():
        gain = value - identity
        lines.append(f"- {name} vs the identity baseline: {gain:+.2f} dB" + (
            " (above it: the network removes makeup)" if gain >= CLEAR_DB else
            " (not above it: the network does not yet reproduce the face better than copying the input)"))
    questions = [("p1", "p3", "Does a ResNet34 encoder help (p3 vs p1)?"),
                 ("p2", "p3", "Do skip connections help (p3 vs p2)?"),
                 ("p3", "p4", "Does adding the SR task help de-makeup (p4 vs p3)?")]
    for base, new, question in questions:
        if base in psnr and new in psnr:
            gain = psnr[new] - psnr[base]
            lines.append(f"- {question} **{_verdict(gain)}**: {psnr[new]:.2f} vs {psnr[base]:.2f} dB "
                         f"({gain:+.2f} dB).")
    if "p4" in runs and "psnr_sr" in runs["p4"].results:
        r = runs["p4"].results
        gain = r["psnr_sr"] - r["bicubic_psnr_sr"]
        lines.append(f"- Does p4's SR head beat bicubic upsampling? **{_verdict(gain)}**: {r['psnr_sr']:.2f} vs "
                     f"{r['bicubic_psnr_sr']:.2f} dB ({gain:+.2f} dB), SSIM {r['ssim_sr']:.4f} vs "
                     f"{r['bicubic_ssim_sr']:.4f}.")
    lines.append(f"(Differences under {CLEAR_DB} dB are read as no clear difference: one seed, a small test set.)")
    return lines


def scale_lines(runs: dict[str, RunSummary], experiment: dict[str, Any], out: Path, shards: Path | None) -> list[str]:
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
    recipes = {name: (run.config.get("epochs"), run.config.get("batch_size"), run.config.get("lr"))
               for name, run in runs.items()}
    for recipe in dict.fromkeys(recipes.values()):
        names = ", ".join(n for n, r in recipes.items() if r == recipe)
        lines.append(f"- training ({names}): {recipe[0]} epochs, batch {recipe[1]}, AdamW with linear warm-up (10%) "
                     f"and linear decay, peak lr {recipe[2]:g}")
    if "hardware" in experiment:
        lines.append(f"- hardware: {experiment['hardware']}")
    if "wall_s" in experiment:
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in experiment.get("phases", {}).items())
        lines.append(f"- wall time: {experiment['wall_s']:.0f} s ({phases})")
    lines += [f"- note: {note}" for note in experiment.get("notes", [])]
    return lines


def load_experiment(out: Path) -> dict[str, Any]:
    return _read_json(Path(out) / EXPERIMENT_FILE, {})


def write_report(out: Path, models: tuple[str, ...] = MODEL_NAMES, *, shards: Path | None = None,
                 grid_rows: int = 4, device: str | torch.device = "cpu") -> str:
    """Write OUT/report.md (and OUT/grid.png when a shard set is known) from OUT/runs/<model>; return the table."""
    out = Path(out)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"--models {','.join(models)}: choose among {', '.join(MODEL_NAMES)}")
    runs = {m: load_run(run_dir_of(out, m), m) for m in models}
    experiment = load_experiment(out)
    shards = Path(shards) if shards else (Path(experiment["shards"]) if "shards" in experiment else None)
    text = table(runs)
    parts = ["# De-makeup: the four problems", "", "Test split, best weights by val PSNR.", "", text, "",
             "## The brief's questions", "", *answers(runs), "",
             "## Scale", "", *scale_lines(runs, experiment, out, shards), ""]
    if shards is not None:
        grid = picture_grid(runs, shards, grid_rows, device)
        _save_atomic(lambda p: grid.save(p, format="PNG"), out / GRID_FILE)
        parts += ["## Pictures", "", f"![test images]({GRID_FILE})", "",
                  "Columns: " + ", ".join(grid_columns(runs)) + ". SR / HR crops: the central window of the "
                  "4x images at full resolution.", ""]
    _save_atomic(lambda p: p.write_text("\n".join(parts), encoding="utf-8"), out / REPORT_FILE)
    return text


def _save_atomic(write, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def grid_columns(runs: dict[str, RunSummary]) -> list[str]:
    sr = ["p4 SR crop", "HR crop"] if "p4" in runs else []
    return ["input", "target", *runs, *sr]


@torch.inference_mode()
def picture_grid(runs: dict[str, RunSummary], shards: Path, rows: int = 4,
                 device: str | torch.device = "cpu") -> Image.Image:
    """The first `rows` test images: input | target | each model | [p4 SR crop | HR crop], S px tiles.

    Returns an RGB image of width S * columns and height LABEL_HEIGHT + S * rows (S: the image size).
    """
    from demakeup_dist.data.loader import eval_batches, to_float
    from demakeup_dist.weights import load_trained

    batches = eval_batches(shards, "test", batch_size=rows, with_hr="p4" in runs, num_workers=0, uint8=True)
    batch = to_float(next(iter(batches)), device)
    size = batch["makeup"].shape[-1]
    tiles, sr_tiles = [batch["makeup"], batch["non_makeup"]], []
    start = (4 * size - size) // 2  # the central S x S window of the 4S x 4S images
    crop = (slice(None), slice(None), slice(start, start + size), slice(start, start + size))
    for name, run in runs.items():
        model, _ = load_trained(run.run_dir, name, device)
        outputs = model(batch["makeup"])
        tiles.append(outputs["demakeup"])
        if name == "p4":
            sr_tiles = [outputs["sr"][crop], batch["hr"][crop]]
    tiles += sr_tiles
    body = torch.cat([torch.cat(list(t.float().clamp(0, 1)), dim=1) for t in tiles], dim=2)  # (3, rows*S, cols*S)
    pixels = (body * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    grid = Image.new("RGB", (pixels.shape[1], LABEL_HEIGHT + pixels.shape[0]), "white")
    grid.paste(Image.fromarray(pixels), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(grid)
    for i, name in enumerate(grid_columns(runs)):
        draw.text((i * size + 2, 1), name, fill="black")
    return grid
