"""The single owners of shared contracts: the run dir's layout (RunDir), whole-or-nothing writes (atomic),
and the closed sets of values (choices) that the config, the CLI and the registry all use."""

from __future__ import annotations

import json
import os
import re

import pytest
import typer

from demakeup_dist import atomic, choices
from demakeup_dist.rundir import RunDir, find_runs
from demakeup_dist.train.config import _CHOICES, TrainConfig
from launcher.main import app
from launcher.options import plain


def test_run_dir_layout_is_the_documented_one(tmp_path):
    """The file names are an interface (Slurm script, users' tools, older runs): changing one is a break."""
    run = RunDir(tmp_path)
    names = {"config.yaml": run.config_file, "status.json": run.status_file, "metrics.jsonl": run.metrics_file,
             "results.json": run.results_file, "best.safetensors": run.best_weights,
             "model.safetensors": run.final_weights, "checkpoints": run.checkpoints_dir, "train.log": run.log_file,
             "STOP": run.stop_file, "trainer.lock": run.lock_file, "wandb_id.txt": run.wandb_id_file,
             "submissions.json": run.submissions_file, "job.sbatch": run.job_script,
             "slurm-7.out": run.slurm_log("7"), "samples/epoch-0003.png": run.sample_panel(3),
             "checkpoints/step-00000012": run.checkpoint(12)}
    assert {name: path.relative_to(tmp_path).as_posix() for name, path in names.items()} == {n: n for n in names}


def test_checkpoints_skip_saves_in_progress_and_sort_by_step(tmp_path):
    run = RunDir(tmp_path)
    for step in (100, 12, 9):
        run.checkpoint(step).mkdir(parents=True)
    atomic.temporary_name(run.checkpoint(200)).mkdir()  # a save that was killed
    (run.checkpoints_dir / "step-00000300.old").mkdir()
    assert [p.name for p in run.checkpoints()] == ["step-00000009", "step-00000012", "step-00000100"]
    assert run.latest_checkpoint() == run.checkpoint(100)
    assert run.is_checkpoint(run.checkpoint(12)) and not run.is_checkpoint(tmp_path / "elsewhere" / "step-00000012")
    assert RunDir(tmp_path / "none").checkpoints() == [] and RunDir(tmp_path / "none").latest_checkpoint() is None


def test_metrics_append_and_cut_back_to_a_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for step in (10, 20, 30):
        run.append_metrics({"step": step, "val_psnr": step / 10})
    run.truncate_metrics(20)
    assert [r["step"] for r in run.read_metrics()] == [10, 20]
    assert atomic.leftovers(run.metrics_file) == []


def test_status_results_submissions_round_trip(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_status() == {} and run.submissions() == [] and not run.holds_run()
    run.write_status({"status": "running", "step": 3})
    run.record_submission({"job_id": "1"})
    run.record_submission({"job_id": "2"})
    assert run.read_status()["step"] == 3 and [s["job_id"] for s in run.submissions()] == ["1", "2"]
    assert run.holds_run()
    with pytest.raises(FileNotFoundError, match="results.json not found"):
        run.read_results()
    run.results_file.write_text("{broken")
    with pytest.raises(ValueError, match="results.json is damaged"):
        run.read_results()


def test_find_runs_orders_by_last_change(tmp_path):
    older, newer, other = (RunDir(tmp_path / name) for name in ("b", "a", "not-a-run"))
    for run in (older, newer, other):
        run.path.mkdir()
    older.write_status({"status": "finished"})
    newer.record_submission({"job_id": "5"})
    os.utime(older.path, (1, 1))
    assert find_runs(tmp_path) == [older, newer]


def test_stop_request(tmp_path):
    run = RunDir(tmp_path)
    assert not run.stop_requested()
    run.request_stop()
    assert run.stop_requested()
    run.clear_stop()
    assert not run.stop_requested()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(path, {"psnr": 1.0})
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk gone")
    assert json.loads(path.read_text()) == {"psnr": 1.0} and atomic.leftovers(path) == []
    assert list(tmp_path.iterdir()) == [path]


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "shards"
    for content in ("old", "new"):
        with atomic.atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "manifest.json").write_text(content)
            assert not (out / "manifest.json").exists() or (out / "manifest.json").read_text() == "old"
    assert (out / "manifest.json").read_text() == "new" and sorted(tmp_path.iterdir()) == [out]


def test_the_registry_builds_exactly_the_names_every_command_accepts():
    from demakeup_dist.models import MODELS

    assert tuple(MODELS) == choices.MODEL_NAMES


def _offered(command: str, option: str, args: list[str]) -> list[str]:
    """The values `demakeup COMMAND ARGS --OPTION V` parses to, for every V it accepts (found by asking
    the parser: each valid value parses, and the refusal of a wrong one lists all the accepted ones)."""
    click_command = typer.main.get_command(app).commands[command]
    flag = [] if option == "model" else [f"--{option.replace('_', '-')}"]
    with pytest.raises(Exception, match="is not one of") as refused:  # typer's own click (vendored) raises it
        click_command.make_context(command, [*args, *flag, "nonsense"] if flag else ["nonsense", *args[1:]])
    listed = re.findall(r"'([^']+)'", str(refused.value).split("is not one of", 1)[1])
    for value in listed:
        ctx = click_command.make_context(command, [*args, *flag, value] if flag else [value, *args[1:]])
        assert plain(ctx.params[option]) == value
    return listed


@pytest.mark.parametrize("field", sorted(set(_CHOICES) - {"loss"}))  # loss: a YAML / --set key only
def test_every_config_choice_is_offered_as_is_by_train(field):
    """`demakeup train --<field>` offers exactly the values the config accepts (one definition)."""
    assert _offered("train", field, ["p1", "--shards", "s"]) == [str(v) for v in _CHOICES[field]]


@pytest.mark.parametrize("field", sorted(_CHOICES))
def test_the_config_refuses_a_value_outside_its_choices(field):
    bad = 9 if field == "zero" else "nonsense"
    with pytest.raises(ValueError, match=f"{field} {bad!r}: choose one of"):
        TrainConfig(**{field: bad})


@pytest.mark.parametrize("command, option, args, values", [
    ("train", "model", ["p1", "--shards", "s"], choices.MODEL_NAMES),
    ("submit", "model", ["p1", "--shards", "s"], choices.MODEL_NAMES),
    ("submit", "strategy", ["p1", "--shards", "s"], choices.STRATEGIES),
    ("submit", "precision", ["p1", "--shards", "s"], choices.PRECISIONS),
    ("submit", "zero", ["p1", "--shards", "s"], choices.ZERO_STAGES),
    ("evaluate", "split", ["w", "--shards", "s"], choices.SPLITS),
])
def test_other_commands_offer_the_same_values(command, option, args, values):
    assert _offered(command, option, args) == [str(v) for v in values]
