"""`demakeup demo` / `demakeup experiment` and the report (CPU, tiny: 32 px, a handful of samples, 1 epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from demakeup_dist import experiment as exp
from demakeup_dist.data.loader import eval_batches
from demakeup_dist.demo import DemoScale, run_demo
from demakeup_dist.launch.status import JobState
from demakeup_dist.launch.submit import Submission
from demakeup_dist.pictures import GRID_MIN_TILE, LABEL_HEIGHT
from demakeup_dist.regions import showcase_rows, split_region_maps
from demakeup_dist.report import write_report
from demakeup_dist.results import EpochRecord, Evaluation, Quality, RunResults
from demakeup_dist.rundir import RunDir
from launcher.main import app

TINY = DemoScale(size=32, train=8, val=4, test=4, epochs=1, batch_size=4, lr=2e-3, num_workers=0)
MODELS = ("p1", "p2", "p3", "p4")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """The tiny demo, run once for the module: (OUT, the table it returned)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and leaves the other core to the loader
    out = tmp_path_factory.mktemp("demo") / "out"
    try:
        yield out, run_demo(out, TINY, workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table -> {first cell: the other cells}."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_demo_writes_report_with_every_row_and_grid(demo_out):
    out, text = demo_out
    report = (out / "report.md").read_text(encoding="utf-8")
    assert text in report
    rows = table_rows(text)
    names = [name.split(":")[0] for name in rows]
    assert names == ["identity (output = input)", *MODELS, "bicubic 4x of the input (SR baseline)"]
    for name, cells in rows.items():
        if name.startswith("p"):
            assert float(cells[0]) > 0 and 0 < float(cells[1]) <= 1  # de-makeup PSNR / SSIM
            assert cells[4].endswith(" M") and float(cells[5]) > 0  # parameters, img/s
            assert cells[6].endswith("(epoch 1)")  # one epoch: the first evaluation is the best
    p4 = next(cells for name, cells in rows.items() if name.startswith("p4"))
    assert float(p4[2]) > 0 and float(p4[3]) > 0  # SR PSNR / SSIM
    for question in ("ResNet34 encoder help", "skip connections help", "SR task help", "beat bicubic"):
        assert question in report
    assert "32x32 images (HR 128x128), 8 train, 4 val, 4 test" in report
    grid = Image.open(out / "grid.png")
    columns = 3 + 2 * len(MODELS) + 2  # input, target, makeup; p1..p4 and their changes; SR crop, HR crop
    tile = GRID_MIN_TILE  # 32 px faces zoomed 4x
    assert grid.size == (columns * tile, LABEL_HEIGHT + TINY.test * tile)
    # The input column holds the test inputs to the pixel (zoomed by repetition), in the showcase order
    # (strongest lipstick first), each row labelled on its bottom strip.
    names, labels = showcase_rows(out / "shards", split_region_maps(out / "shards", out / "data"), rows=TINY.test)
    assert f"Rows: the test faces with the most makeup" in report and labels[0] == "strong lipstick"
    batch = next(iter(eval_batches(out / "shards", "test", batch_size=TINY.test, with_hr=False, num_workers=0,
                                   uint8=True)))
    by_name = dict(zip(batch["name"], batch["makeup"].permute(0, 2, 3, 1).numpy()))
    inputs = np.asarray(grid)[LABEL_HEIGHT:, :tile]
    for row, name in enumerate(names):
        shown = inputs[row * tile:(row + 1) * tile - LABEL_HEIGHT]  # above the label strip
        zoomed = by_name[name].repeat(4, axis=0).repeat(4, axis=1)[:tile - LABEL_HEIGHT]
        np.testing.assert_array_equal(shown, zoomed)
    assert "## Where the makeup was removed" in report and "| lips |" in report
    record = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    assert {"synthesise", "shard", *(f"train {m}" for m in MODELS)} <= set(record["phases"])
    assert record["wall_s"] == pytest.approx(sum(record["phases"].values()))


def test_report_only_cli_rebuilds_the_same_table(demo_out):
    out, text = demo_out
    (out / "report.md").unlink()
    result = CliRunner().invoke(app, ["experiment", "--report-only", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert text in result.output and (out / "report.md").is_file()


def test_experiment_skips_finished_runs_and_refuses_other_shards(demo_out, tmp_path):
    out, _ = demo_out
    before = RunDir(out / "runs" / "p2").best_weights.stat().st_mtime_ns
    text = exp.run_experiment(out / "shards", out, models=("p2",), overrides=TINY.overrides())
    assert RunDir(out / "runs" / "p2").best_weights.stat().st_mtime_ns == before
    assert [n.split(":")[0] for n in table_rows(text)] == ["identity (output = input)", "p2"]
    other = shutil.copytree(out / "shards", tmp_path / "other-shards")
    with pytest.raises(ValueError, match="holds runs trained on .* choose another --out"):
        exp.run_experiment(other, out, models=("p2",), overrides=TINY.overrides())


def fake_run(out: Path, model: str, psnr: float, ssim: float, sr: tuple[float, ...] | None = None,
             status: str = "finished", params: int = 1_250_000, label: str | None = None, seed: int = 25) -> Path:
    """A finished run dir whose test results are `psnr`, `ssim` beside identity 28.00 dB / 0.9000, and
    `sr`: (SR PSNR, SR SSIM, bicubic PSNR, bicubic SSIM)."""
    run = out / "runs" / (label or model)
    run.mkdir(parents=True)
    metrics, baselines = {"demakeup": Quality(psnr, ssim)}, {"demakeup": Quality(28.0, 0.9)}
    if sr:
        metrics["sr"], baselines["sr"] = Quality(*sr[:2]), Quality(*sr[2:])
    results = RunResults(model, "test", 2, Evaluation(metrics, baselines))
    RunDir(run).status_file.write_text(json.dumps({"status": status, "img_per_s": 12.5}))
    RunDir(run).results_file.write_text(json.dumps(results.to_dict()))
    RunDir(run).config_file.write_text(yaml.safe_dump({"model": model, "epochs": 300, "batch_size": 64, "lr": 0.01,
                                                              "seed": seed}))
    curve = [EpochRecord(e, 10 * e, 0.1, 0.01, 1.0, 1.5, Evaluation({"demakeup": Quality(v, 0.8)},
                                                                    {"demakeup": Quality(21.0, 0.7)}))
             for e, v in ((1, 20.0), (2, 22.5), (3, 22.0))]
    RunDir(run).metrics_file.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in curve))
    save_file({"w": torch.zeros(params, dtype=torch.uint8)}, str(RunDir(run).best_weights))
    return run


FAKE = {  # test PSNR, SSIM[, (SR PSNR, SR SSIM, bicubic PSNR, bicubic SSIM)]
    "p1": (30.0, 0.91),
    "p2": (25.0, 0.80),
    "p3": (31.0, 0.93),
    "p4": (31.05, 0.935, (33.5, 0.95, 32.0, 0.94)),
}


def test_report_from_fake_run_dirs_has_their_numbers(tmp_path):
    for model, results in FAKE.items():
        fake_run(tmp_path, model, *results)
    rows = table_rows(write_report(tmp_path, MODELS))
    assert rows["identity (output = input)"][:2] == ["28.00", "0.9000"]
    by_model = {name.split(":")[0]: cells for name, cells in rows.items()}
    assert by_model["p2"][:2] == ["25.00", "0.8000"]
    assert by_model["p2"][4:] == ["1.25 M", "12.5", "20.00 -> 22.50 (epoch 2)"]
    assert by_model["p4"][:4] == ["31.05", "0.9350", "33.50", "0.9500"]
    assert by_model["bicubic 4x of the input (SR baseline)"][2:4] == ["32.00", "0.9400"]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Does a ResNet34 encoder help (p3 vs p1)? **yes**: 31.00 vs 30.00 dB (+1.00 dB)" in report
    assert "Do skip connections help (p3 vs p2)? **yes**: 31.00 vs 25.00 dB (+6.00 dB)" in report
    assert "Does adding the SR task help de-makeup (p4 vs p3)? **no clear difference**" in report
    assert "beat bicubic upsampling? **yes**: 33.50 vs 32.00 dB (+1.50 dB)" in report
    assert "p2 vs the identity baseline: -3.00 dB (below it" in report
    assert "p3 vs the identity baseline: +3.00 dB (above it" in report
    assert "300 epochs, batch 64" in report
    assert not (tmp_path / "grid.png").exists()  # no shard set known: no pictures


def test_report_with_seeds_gives_spreads_and_answers_only_beyond_the_noise(tmp_path):
    # p3 beats p1 by 0.5 dB with 0.1 dB spreads (clear); p4 vs p3 +0.2 dB with 0.3 dB spreads (noise).
    psnr = {"p1": [30.0, 30.1, 29.9], "p3": [30.5, 30.6, 30.4], "p4": [30.4, 30.7, 31.0]}
    for model, values in psnr.items():
        for k, value in enumerate(values, start=1):
            fake_run(tmp_path, model, value, 0.9, (33.0, 0.9, 32.0, 0.8) if model == "p4" else None,
                     label=model if k == 1 else f"{model}-s{k}", seed=24 + k)
    (tmp_path / "experiment.json").write_text(json.dumps({"seeds": 3}))
    rows = {name.split(":")[0]: cells for name, cells in table_rows(write_report(tmp_path, ("p1", "p3", "p4"))).items()}
    assert rows["p3"][0] == "30.50 +- 0.10" and rows["p4"][0] == "30.70 +- 0.30"
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Does a ResNet34 encoder help (p3 vs p1)? **yes**: 30.50 +- 0.10 vs 30.00 +- 0.10 dB" in report
    assert "(p4 vs p3)? **no clear difference (within the seed noise)**" in report
    assert "3 seeds per network" in report and "- seeds: p1 25, 26, 27" in report
    plot = Image.open(tmp_path / "val_psnr.png")
    assert plot.size == (640, 400) and "![val PSNR per epoch](val_psnr.png)" in report
    RunDir(tmp_path / "runs" / "p3-s3").write_status({"status": "running"})
    with pytest.raises(ValueError, match=r"p3 run in .*p3-s3 is not finished"):
        write_report(tmp_path, ("p1", "p3"))


def test_one_seed_report_reads_differences_against_the_measured_seed_noise(tmp_path):
    # One run each: 2 seed stds (0.24 dB) from identity, 0.34 dB between two runs (report.CLEAR_DB).
    for model, value in (("p1", 29.0), ("p2", 28.2), ("p3", 28.7)):
        fake_run(tmp_path, model, value, 0.9)
    write_report(tmp_path, ("p1", "p2", "p3"))
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "p3 vs the identity baseline: +0.70 dB (above it" in report
    assert "p2 vs the identity baseline: +0.20 dB (within the seed noise of it" in report
    assert "(p3 vs p1)? **no clear difference**: 28.70 vs 29.00 dB (-0.30 dB)" in report


def test_report_refuses_missing_and_unfinished_runs(tmp_path):
    fake_run(tmp_path, "p1", *FAKE["p1"])
    with pytest.raises(FileNotFoundError, match=r"no run dir .*runs/p3 for p3"):
        write_report(tmp_path, ("p1", "p3"))
    fake_run(tmp_path, "p3", *FAKE["p3"], status="running")
    with pytest.raises(ValueError, match=r"p3 run in .* is not finished \(status: running\)"):
        write_report(tmp_path, ("p1", "p3"))
    with pytest.raises(ValueError, match="choose among"):
        write_report(tmp_path, ("p9",))
    assert not (tmp_path / "report.md").exists()


def test_cli_bad_input_gets_clear_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "--local"])
    assert result.exit_code == 2 and "--shards DIR is required" in result.output
    result = runner.invoke(app, ["experiment", "--shards", str(tmp_path)])
    assert result.exit_code == 2 and "--local" in result.output and "--gpus" in result.output
    result = runner.invoke(app, ["experiment", "--shards", str(tmp_path), "--local"])
    assert result.exit_code == 2 and "manifest.json" in result.output
    result = runner.invoke(app, ["experiment", "--shards", str(tmp_path), "--local", "--seeds", "0"])
    assert result.exit_code == 2 and "--seeds 0: must be at least 1" in result.output
    result = runner.invoke(app, ["experiment", "--report-only", "--out", str(tmp_path), "--models", "p1,p7"])
    assert result.exit_code == 2 and "--models" in result.output
    (tmp_path / "keep.txt").write_text("not a demo")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2 and "does not look like a demo output" in result.output
    assert (tmp_path / "keep.txt").is_file()


@pytest.mark.parametrize("job_finishes", [True, False])
def test_experiment_on_slurm_submits_one_job_per_model_and_waits(demo_out, tmp_path, monkeypatch, job_finishes):
    """--gpus: each model is submitted with the experiment's config; a job that stops unfinished is an error."""
    out, _ = demo_out
    submitted = []

    def fake_submit(opts, command=None, resume=False):
        submitted.append(opts)
        if job_finishes:  # the "job" leaves a finished run dir behind
            shutil.copytree(out / "runs" / opts.model, opts.run_dir)
        return Submission("42", opts.run_dir, opts.run_dir / "slurm-42.out", RunDir(opts.run_dir).job_script, None)

    monkeypatch.setattr("demakeup_dist.launch.submit.submit", fake_submit)
    monkeypatch.setattr("demakeup_dist.launch.status.job_state", lambda job_id: JobState(job_id, "FAILED"))
    monkeypatch.setattr(exp, "SLURM_POLL_S", 0.0)

    def experiment() -> str:
        return exp.run_experiment(out / "shards", tmp_path, models=("p1", "p3"), overrides=TINY.overrides(),
                                  slurm={"gpus": 2, "partition": "gpu"})

    if job_finishes:
        assert [n.split(":")[0] for n in table_rows(experiment())] == ["identity (output = input)", "p1", "p3"]
        assert (tmp_path / "grid.png").is_file()
    else:
        with pytest.raises(RuntimeError, match=r"job 42 \(p1\) stopped .*\(Slurm: FAILED, training: not started\)"):
            experiment()
    assert [(o.model, o.gpus, o.partition) for o in submitted] == [("p1", 2, "gpu"), ("p3", 2, "gpu")]
    assert yaml.safe_load(submitted[0].config.read_text())["epochs"] == TINY.epochs


def test_demo_trains_the_residual_networks_and_says_so(demo_out):
    from demakeup_dist.train.config import config_from_file

    out, _ = demo_out
    for model in ("p1", "p2", "p3", "p4"):
        assert config_from_file(out / "runs" / RunDir(model).config_file).model_args.get("residual") is True, model
    assert "residual: true" in (out / "report.md").read_text()


def test_side_by_side_trainings_match_one_after_the_other(demo_out, tmp_path, capsys):
    """`parallel` trains runs as concurrent `demakeup train` processes: the same weights as in-process training
    of the same configs (the demo's p1, p2), one phase for the group, every line labelled with its run."""
    from safetensors.torch import load_file

    out, _ = demo_out
    side = tmp_path / "side"
    exp.run_experiment(out / "shards", side, models=("p1", "p2"), overrides=TINY.overrides(), parallel=2,
                       config_dir=exp.RECOMMENDED_DIR)
    printed = capsys.readouterr().out
    for model in ("p1", "p2"):
        assert RunDir(side / "runs" / model).read_status()["status"] == "finished"
        assert f"[{model}] " in printed
        ours, theirs = (load_file(str(RunDir(d / "runs" / model).best_weights)) for d in (side, out))
        assert ours.keys() == theirs.keys()
        for key in ours:  # fp32 on CPU; thread counts may differ between the two ways, so not bit for bit
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-5)
    record = json.loads((side / "experiment.json").read_text(encoding="utf-8"))
    assert list(record["phases"]) == ["train p1, p2 (2 at a time)"]
