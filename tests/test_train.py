"""The training engine end to end on tiny synthetic shards (CPU, fp32).

Covers the run-dir contract, wandb offline files, loss going down for every network, exact resume
after a real SIGKILL, the SIGTERM checkpoint, the NaN stop, 2-process DDP metrics, evaluate and
predict on a trained run, and the resume refusals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import synth_dataset
from demakeup_dist.results import EpochRecord, RunResults
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.config import load_config
from demakeup_dist.train.loop import NonFiniteLoss, train
from demakeup_dist.weights import load_trained

SIZE = 32
DEMAKEUP = [sys.executable, "-m", "launcher.main"]


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """12 train / 4 val / 4 test synthetic triplets at 32x32 (HR 128x128), 4 samples per shard."""
    root = tmp_path_factory.mktemp("train_data")
    data = synth_dataset(root / "data", train=12, val=4, test=4, size=SIZE, seed=3, workers=1, progress=False)
    write_shards(data, root / "shards", samples_per_shard=4, workers=1, progress=False)
    return root / "shards"


def tiny(model: str, **overrides):
    base = dict(epochs=2, batch_size=4, wandb="disabled", num_workers=0)
    return load_config(model, **{**base, **overrides})


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(DEMAKEUP + args, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def p4_run(shards, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("p4") / "run"
    train(tiny("p4", wandb="offline"), shards, run_dir)
    return run_dir


def test_run_dir_contract(p4_run):
    for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "model.safetensors", "results.json",
                 "status.json", "train.log", "wandb_id.txt"):
        assert (p4_run / name).is_file(), name
    records = [json.loads(line) for line in RunDir(p4_run).metrics_file.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in map(EpochRecord.from_dict, records):
        assert set(record.val.metrics) == set(record.val.baselines) == {"demakeup", "sr"}
        values = [record.step, record.train_loss, record.lr, *record.val.flat("val").values()]
        assert all(np.isfinite(values)), record
    assert all(0 < r["train_s"] < r["epoch_s"] for r in records)  # the epoch's wall time includes validation
    assert "data: decoded once and resident" in RunDir(p4_run).log_file.read_text()  # auto on a tiny set
    assert sorted(p.name for p in RunDir(p4_run).checkpoints_dir.iterdir()) == ["step-00000003", "step-00000006"]
    assert len(list((p4_run / "samples").glob("*.png"))) >= 1
    panel = Image.open(next((p4_run / "samples").glob("*.png")))
    assert panel.size == (5 * SIZE, SIZE)  # input | target | prediction | HR crop | SR crop
    results = json.loads(RunDir(p4_run).results_file.read_text())
    assert (results["model"], results["split"], results["baselines"]["sr"]["name"]) == ("p4", "test", "bicubic")
    flat = RunResults.from_dict(results).flat()
    for key in ("test/demakeup/psnr", "test/demakeup/ssim", "test/baseline/demakeup/psnr",
                "test/baseline/demakeup/ssim", "test/sr/psnr", "test/baseline/sr/psnr"):
        assert np.isfinite(flat[key]), key
    status = json.loads(RunDir(p4_run).status_file.read_text())
    assert status["status"] == "finished" and status["last_metrics"] == flat
    _, info = load_trained(RunDir(p4_run).best_weights)  # strict: every key matches
    assert (info.model, info.image_size, info.model_args["decoder_channels"]) == ("p4", SIZE, [256, 128, 64, 32, 16])


def test_wandb_offline_files(p4_run):
    run_id = RunDir(p4_run).wandb_id_file.read_text().strip()
    runs = list((p4_run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    assert (runs[0] / f"run-{run_id}.wandb").stat().st_size > 0
    assert list(runs[0].glob("files/media/images/**/*.png")), "sample panels are logged as images"


def test_evaluate_cli_reproduces_best_val_psnr(p4_run, shards):
    records = [json.loads(line) for line in RunDir(p4_run).metrics_file.read_text().splitlines()]
    best = max(map(EpochRecord.from_dict, records), key=lambda r: r.val.psnr)
    out = run_cli(["evaluate", str(p4_run), "--shards", str(shards), "--split", "val"])
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[2:]}
    assert float(rows["demakeup/psnr"][0]) == pytest.approx(best.val.psnr, abs=1e-3)
    assert rows["sr/psnr"][2] == "bicubic" and rows["demakeup/psnr"][2] == "identity"


def test_evaluate_warns_when_the_shards_have_another_image_size(p4_run, tmp_path):
    data = synth_dataset(tmp_path / "data", train=1, val=1, test=2, size=2 * SIZE, seed=3, workers=1, progress=False)
    write_shards(data, tmp_path / "shards", samples_per_shard=4, workers=1, progress=False)
    out = run_cli(["evaluate", str(p4_run), "--shards", str(tmp_path / "shards")])
    assert out.returncode == 0, out.stderr
    assert f"trained on {SIZE} px images, {tmp_path / 'shards'} has {2 * SIZE} px ones" in out.stderr


def test_predict_cli_on_odd_rgba_and_gray_images(p4_run, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 50, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (45, 33), dtype=np.uint8), "L").save(tmp_path / "gray.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    out = run_cli(["predict", str(p4_run), str(tmp_path / "rgba.png"), str(tmp_path / "gray.jpg"), "--out",
                   str(tmp_path / "out")])
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "out" / "rgba_demakeup.png").size == (50, 37)
    assert Image.open(tmp_path / "out" / "rgba_sr4x.png").size == (200, 148)
    assert Image.open(tmp_path / "out" / "gray_demakeup.png").mode == "RGB"
    bad = run_cli(["predict", str(p4_run), str(tmp_path / "notes.jpg"), "--out", str(tmp_path / "out2")])
    assert bad.returncode != 0 and "notes.jpg" in bad.stderr and "not a readable image" in bad.stderr


@pytest.mark.parametrize("model", ["p1", "p2", "p3"])
def test_loss_decreases(model, shards, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny(model, epochs=4, lr=2e-3), shards, run_dir)
    losses = [json.loads(line)["train_loss"] for line in RunDir(run_dir).metrics_file.read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0], losses


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shards, tmp_path, monkeypatch):
    import demakeup_dist.train.step as step

    real, calls = step.restoration_loss, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        total, terms = real(*args, **kwargs)
        return (total * float("nan") if calls["n"] == 3 else total), terms

    monkeypatch.setattr(step, "restoration_loss", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="at step 3") as stopped:
        train(tiny("p1", save_every_steps=1), shards, run_dir)
    # A resume is exact and meets the NaN again, and it refuses another --lr: the advice is a new run.
    assert "start a new --run-dir with a lower --lr (this run: 0.01)" in str(stopped.value)
    assert "and resume" not in str(stopped.value)
    # Steps 1 and 2 were good and saved (the last 2 are kept); the NaN step 3 saved nothing.
    assert sorted(p.name for p in RunDir(run_dir).checkpoints_dir.iterdir()) == ["step-00000001", "step-00000002"]
    assert json.loads(RunDir(run_dir).status_file.read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def reference_p1(shards, tmp_path_factory) -> Path:
    """An uninterrupted p1 run (3 epochs x 3 steps) to compare interrupted ones against."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    out = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--epochs", "3",
                   "--batch-size", "4", "--wandb", "disabled", "--num-workers", "1", "--save-every-steps", "1"])
    assert out.returncode == 0, out.stderr
    return run_dir


def _start_p1(shards: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        DEMAKEUP + ["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--epochs", "3",
                    "--batch-size", "4", "--wandb", "disabled", "--num-workers", "1", "--save-every-steps", "1",
                    *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkill_then_resume_gives_identical_weights(shards, tmp_path, reference_p1):
    run_dir = tmp_path / "run"
    proc = _start_p1(shards, run_dir)
    _wait_for(RunDir(run_dir).checkpoint(4), proc)  # mid epoch 2
    proc.kill()
    proc.wait()
    assert not RunDir(run_dir).final_weights.exists()
    out = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--resume", "latest"])
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    assert_same_weights(RunDir(run_dir).final_weights, RunDir(reference_p1).final_weights)
    assert_same_weights(RunDir(run_dir).best_weights, RunDir(reference_p1).best_weights)


def test_sigterm_checkpoints_at_step_boundary_and_resume_auto_finishes(shards, tmp_path, reference_p1):
    run_dir = tmp_path / "run"
    proc = _start_p1(shards, run_dir)
    _wait_for(RunDir(run_dir).checkpoint(2), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 130  # interrupted, not failed
    status = json.loads(RunDir(run_dir).status_file.read_text())
    assert status["status"] == "stopped"  # outside Slurm, TERM is a stop on purpose, not a preemption
    assert (RunDir(run_dir).checkpoints_dir / f"step-{status['step']:08d}").is_dir()
    out = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--resume", "auto"])
    assert out.returncode == 0, out.stderr
    assert_same_weights(RunDir(run_dir).final_weights, RunDir(reference_p1).final_weights)
    again = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--resume", "auto"])
    assert again.returncode == 0 and "finished" in again.stderr


def test_resume_refusals(shards, reference_p1):
    run = str(reference_p1)
    no_resume = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", run])
    assert no_resume.returncode == 2 and "--resume latest" in no_resume.stderr
    other_model = run_cli(["train", "p3", "--shards", str(shards), "--run-dir", run, "--resume", "latest"])
    assert other_model.returncode == 2 and "belongs to model 'p1'" in other_model.stderr
    changed = run_cli(["train", "p1", "--shards", str(shards), "--run-dir", run, "--resume", "latest", "--lr", "0.5"])
    assert changed.returncode == 2 and "lr: 0.01 -> 0.5" in changed.stderr


def test_two_process_ddp_p4_aggregates_metrics_exactly(shards, tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli(["train", "p4", "--shards", str(shards), "--run-dir", str(run_dir), "--epochs", "1",
                   "--batch-size", "4", "--nproc", "2", "--wandb", "disabled", "--num-workers", "0"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on 2 process(es)" in RunDir(run_dir).log_file.read_text()
    record = EpochRecord.from_dict(json.loads(RunDir(run_dir).metrics_file.read_text().splitlines()[0]))
    # The same weights evaluated by one process over the whole val split give the same means.
    single = run_cli(["evaluate", str(run_dir), "--shards", str(shards), "--split", "val"])
    rows = {line.split()[0]: float(line.split()[1]) for line in single.stdout.splitlines()[2:]}
    assert rows["demakeup/psnr"] == pytest.approx(record.val.psnr, abs=1e-3)
    assert rows["sr/psnr"] == pytest.approx(record.val.metrics["sr"].psnr, abs=1e-3)
