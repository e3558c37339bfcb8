"""Rendering of the Slurm batch script and the submit/status/cancel commands, without a real Slurm.

Fake `sbatch` programs on PATH stand in for Slurm where only its answer matters; the real cluster
tests are in test_slurm_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demakeup_dist.launch import render as R
from demakeup_dist.launch.render import JobOptions, fill_template, plan_layout, render, sbatch_quote
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.config import TrainConfig
from launcher.main import app

# Run in a folder of its own, the commands in here would create the files BT and pwned there.
NASTY = "run dir with 'quotes' \"double\" $HOME `touch BT` $(touch pwned) %x & ; # \\ end"


def opts(tmp_path: Path, **kw) -> JobOptions:
    base = dict(model="p4", shards=tmp_path / "shards", run_dir=tmp_path / "run", python="/opt/py/bin/python")
    return JobOptions(**{**base, **kw})


def bash_n(script: str, tmp_path: Path) -> None:
    path = RunDir(tmp_path).job_script
    path.write_text(script)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def directives(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, re.M))


def launch_line(script: str) -> str:
    """The accelerate command of train_on_node as one line."""
    body = script.split("train_on_node() {", 1)[1].split("\n}", 1)[0]
    return " ".join(body.replace("\\\n", " ").split())


@pytest.mark.parametrize("gpus, nodes, per_node", [(8, 1, 8), (16, 2, 8), (4, 1, 4), (1, 1, 1)])
def test_gpu_jobs_fill_nodes(tmp_path, gpus, nodes, per_node):
    script = render(opts(tmp_path, gpus=gpus))
    bash_n(script, tmp_path)
    d = directives(script)
    assert d["nodes"] == str(nodes) and d["ntasks-per-node"] == "1" and d["gpus-per-node"] == str(per_node)
    assert d["cpus-per-task"] == str(8 * per_node)
    assert d["signal"] == "B:USR1@120" and "requeue" in d and d["open-mode"] == "append"
    line = launch_line(script)
    assert f"--num_machines {nodes} --num_processes {gpus}" in line
    assert '--machine_rank "${SLURM_NODEID:-0}" --main_process_ip "$HEAD_ADDR" --main_process_port "$PORT"' in line
    assert "--mixed_precision bf16" in line and "--precision bf16" in line
    assert ("--multi_gpu" in line) == (gpus > 1)
    assert "--resume auto" in line and '--run-dir "$RUN_DIR"' in line
    assert "export ACCELERATE_USE_CPU=false" in script
    # unset options leave no directive behind
    assert not {"partition", "account", "qos", "time", "mem"} & set(d)


def test_cpu_job(tmp_path):
    script = render(opts(tmp_path, gpus=0, nodes=2, cpu_procs_per_node=3, cpus_per_gpu=2, model="p3"))
    bash_n(script, tmp_path)
    d = directives(script)
    assert "gpus-per-node" not in d and d["nodes"] == "2" and d["cpus-per-task"] == "6"
    assert "export ACCELERATE_USE_CPU=true" in script and "export OMP_NUM_THREADS=2" in script
    line = launch_line(script)
    assert "--num_machines 2 --num_processes 6 " in line and "--multi_gpu" in line
    assert "--mixed_precision no" in line and "--precision fp32" in line
    single = launch_line(render(opts(tmp_path, gpus=0)))
    assert "--cpu " in single and "--multi_gpu" not in single and "--num_processes 1" in single


def test_deepspeed_job(tmp_path):
    script = render(opts(tmp_path, gpus=16, strategy="deepspeed", zero=3))
    bash_n(script, tmp_path)
    line = launch_line(script)
    config = R.deepspeed_config(3)
    assert f"--use_deepspeed --deepspeed_config_file {config}" in line
    assert "--multi_gpu" not in line and "--strategy deepspeed --zero 3" in line


def test_options_become_directives(tmp_path):
    script = render(opts(tmp_path, gpus=8, partition="gpu-a100", account="proj.1", qos="high", time="2-00:00:00",
                         mem="200G", signal_seconds=300, max_restarts=4, job_name="mine",
                         train_args=("--epochs", "50", "--lr=3e-3")))
    d = directives(script)
    assert (d["partition"], d["account"], d["qos"], d["time"], d["mem"], d["job-name"]) == (
        "gpu-a100", "proj.1", "high", "2-00:00:00", "200G", "mine")
    assert d["signal"] == "B:USR1@300" and "MAX_RESTARTS=4" in script
    assert launch_line(script).endswith("--strategy ddp --epochs 50 --lr=3e-3")


@pytest.mark.parametrize("gpus, per_node, nodes, message", [
    (12, 8, None, "use --gpus 8 or 16, or spread them evenly with --nodes 2"),
    (9, 8, None, "use --gpus 8 or 16"),
    (8, 8, 3, "cannot be spread evenly over --nodes 3"),
    (32, 8, 2, "needs 16 GPUs per node, more than --gpus-per-node 8: use --nodes 4"),
    (-1, 8, None, "--gpus -1"),
    (8, 0, None, "--gpus-per-node 0"),
    (8, 8, 0, "--nodes 0"),
])
def test_layout_errors_say_what_works(gpus, per_node, nodes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plan_layout(gpus, per_node, nodes)


def test_explicit_nodes_spread_gpus():
    layout = plan_layout(8, 8, 2)
    assert (layout.nodes, layout.procs_per_node, layout.processes) == (2, 4, 8)


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("30:15", 1815), ("2:00:00", 7200), ("1-00:00:00", 86400), ("1-2", 93600), ("0-1:30", 5400)])
def test_time_limits(text, seconds):
    assert R.time_limit_seconds(text) == seconds


@pytest.mark.parametrize("change, message", [
    (dict(model="p9"), "model 'p9'"),
    (dict(time="1 day"), "--time '1 day': not a Slurm time limit"),
    (dict(time="1:00", signal_seconds=120), "must be longer than --signal-seconds 120"),
    (dict(mem="lots"), "--mem 'lots'"),
    (dict(partition="gpu; rm -rf /"), "--partition"),
    (dict(signal_seconds=0), "--signal-seconds 0"),
    (dict(max_restarts=-1), "--max-restarts -1"),
    (dict(cpus_per_gpu=0), "--cpus-per-gpu 0"),
    (dict(strategy="fsdp"), "--strategy 'fsdp'"),
    (dict(gpus=0, strategy="deepspeed"), "--strategy deepspeed needs GPUs"),
    (dict(gpus=0, precision="fp16"), "--precision fp16 needs GPUs"),
    (dict(train_args=("--run-dir", "x")), "extra train option --run-dir: set by the launcher"),
    (dict(train_args=("--resume=latest",)), "use submit's --resume instead"),
    (dict(run_dir=Path("/tmp/a\nb")), "line break"),
])
def test_bad_options_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render(opts(tmp_path, **change))


def test_missing_deepspeed_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="--zero 4"):
        render(opts(tmp_path, strategy="deepspeed", zero=4))


def test_template_placeholders(tmp_path):
    values = {"a": "x y", "opt": None, "many": ["--flag", "$(v)"]}
    text = "#SBATCH --out={{a}}\n#SBATCH --opt={{ opt }}\necho {{a}} {{many}}\n"
    assert fill_template(text, values) == "#SBATCH --out=\"x y\"\necho 'x y' --flag '$(v)'\n"
    with pytest.raises(ValueError, match=r"line 1: unknown placeholder \{\{nope\}\}"):
        fill_template("echo {{nope}}\n", values, "my.sbatch")
    with pytest.raises(ValueError, match=r"line 1: a value for \{\{opt\}\} is needed"):
        fill_template("echo {{opt}}\n", values)


def test_user_template(tmp_path):
    mine = tmp_path / "mine.sbatch"
    mine.write_text("#!/bin/bash\n#SBATCH --constraint=a100\nmodule load cuda\necho {{model}} {{nodes}}\n")
    assert render(opts(tmp_path, gpus=16), mine).endswith("module load cuda\necho p4 2\n")
    with pytest.raises(FileNotFoundError, match="--template"):
        render(opts(tmp_path), tmp_path / "absent.sbatch")


def test_sbatch_quote():
    assert sbatch_quote("gpu") == "gpu"
    assert sbatch_quote('/a b/"c"\\d#e') == '"/a b/\\"c\\"\\\\d#e"'


def test_nasty_paths_are_data_not_code(tmp_path):
    """Run the rendered script (local mode) with a stand-in python that records its arguments."""
    marker = tmp_path / "pwned"
    run_dir = tmp_path / NASTY.replace("\\", "")  # a backslash is refused in the run dir (see below)
    shards = tmp_path / ("shards " + NASTY)
    argv_file = tmp_path / "argv.json"
    fake_python = tmp_path / "fake python"
    fake_python.write_text(f"#!/usr/bin/env python3\nimport json, sys\nif '-m' in sys.argv:\n"
                           f"    json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n")
    fake_python.chmod(0o755)
    script = render(opts(tmp_path, model="p3", gpus=0, run_dir=run_dir, shards=shards, python=str(fake_python),
                         train_args=("--epochs", "$(touch pwned)")))
    bash_n(script, tmp_path)
    run_dir.mkdir()
    RunDir(tmp_path).job_script.write_text(script)
    env = {**os.environ, "DEMAKEUP_LOCAL": "1", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "here"}
    result = subprocess.run(["bash", str(RunDir(tmp_path).job_script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists() and not (tmp_path / "BT").exists()
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--run-dir") + 1] == str(run_dir)
    assert argv[argv.index("--shards") + 1] == str(shards)
    assert argv[-1] == "$(touch pwned)"
    assert argv[argv.index("--main_process_port") + 1] == "20077"
    # the #SBATCH --output line, parsed the way sbatch does, names a log in the same run dir
    output = directives(script)["output"]
    assert output.startswith('"') and _sbatch_unquote(output) == str(run_dir).replace("%", "%%") + "/slurm-%j.out"


def test_backslash_in_run_dir_is_refused_up_front(tmp_path):
    """Slurm's --output pattern reads a backslash as "expand nothing": the job would find no log dir."""
    with pytest.raises(ValueError, match=r"--run-dir .*a\\b: Slurm reads a backslash in the log path"):
        render(opts(tmp_path, run_dir=tmp_path / "a\\b"))


def _sbatch_unquote(text: str) -> str:
    """sbatch's directive parsing of one quoted argument (see render.sbatch_quote)."""
    assert text[0] == text[-1] == '"'
    return re.sub(r"\\(.)", r"\1", text[1:-1])


# -- the CLI, with stand-ins for sbatch ---------------------------------------------------------------------

@pytest.fixture
def shards(tmp_path) -> Path:
    from demakeup_dist.data.shards import FORMAT, FORMAT_VERSION, MANIFEST

    path = tmp_path / "shards"
    path.mkdir()
    (path / MANIFEST).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION}))
    return path


def fake_sbatch(tmp_path: Path, body: str) -> Path:
    """A bin dir whose `sbatch` runs `body` (sh); it records its arguments in tmp_path/sbatch.args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/sbatch.args\n{body}\n')
    sbatch.chmod(0o755)
    return bin_dir


def run_cli(args: list[str], path: str | None = None, **env: str):
    environ = {"PATH": path} if path else {}
    return CliRunner().invoke(app, args, env={**environ, **env})


def test_dry_run_prints_exactly_the_script(tmp_path, shards):
    result = run_cli(["submit", "p4", "--gpus", "8", "--shards", str(shards), "--run-dir", str(tmp_path / "r"),
                      "--dry-run"])
    assert result.exit_code == 0, result.output
    expected = render(opts(tmp_path, gpus=8, shards=shards, run_dir=tmp_path / "r", python=sys.executable))
    assert result.stdout == expected
    assert "dry run" in result.stderr and not (tmp_path / "r").exists()
    # The recipe's global batch on 8 GPUs: the layout, and the scaling model's warning with its advice.
    assert "batch: 8 GPUs x 8 per GPU x 1 accumulation = global batch 64, peak lr 0.01\n" in result.stderr
    assert "expected scaling efficiency ~39% (the project's model" in result.stderr
    assert "--batch-per-gpu 64 --lr-scaling sqrt (global 512)" in result.stderr


@pytest.mark.parametrize("extra, line", [
    (["--batch-per-gpu", "64", "--lr-scaling", "linear"],
     "batch: 8 GPUs x 64 per GPU x 1 accumulation = global batch 512, peak lr 0.08 (linear scaling from batch 64)"),
    (["--batch-size", "128", "--grad-accum", "2"],
     "batch: 8 GPUs x 8 per GPU x 2 accumulation = global batch 128, peak lr 0.01"),
])
def test_dry_run_states_the_batch_layout(tmp_path, shards, extra, line):
    result = run_cli(["submit", "p4", "--gpus", "8", "--shards", str(shards), "--run-dir", str(tmp_path / "r"),
                      "--dry-run", "--", *extra])
    assert result.exit_code == 0, result.output
    assert line in result.stderr
    assert ("expected scaling efficiency" in result.stderr) == ("--batch-size" in extra)  # 8 per GPU is small


def test_dry_run_refuses_a_batch_that_does_not_split(tmp_path, shards):
    result = run_cli(["submit", "p4", "--gpus", "8", "--shards", str(shards), "--run-dir", str(tmp_path / "r"),
                      "--dry-run", "--", "--batch-size", "96", "--grad-accum", "5"])
    assert result.exit_code == 2
    assert ("--batch-size 96 does not split over 8 process(es) x 5 accumulation step(s): use --grad-accum 1 or 2 or "
            "3 or 4") in result.output


def test_submit_saves_script_and_command_not_secrets(tmp_path, shards, monkeypatch):
    bin_dir = fake_sbatch(tmp_path, 'echo "4242;cluster"')
    run_dir = tmp_path / "run"
    args = ["submit", "p3", "--gpus", "0", "--shards", str(shards), "--run-dir", str(run_dir), "--", "--epochs", "2"]
    monkeypatch.setattr(sys, "argv", ["demakeup", *args])  # what the command line records
    result = run_cli(args, f"{bin_dir}:{os.environ['PATH']}", WANDB_API_KEY="secret-key-123")
    assert result.exit_code == 0, result.output
    assert "job id:  4242" in result.stdout and f"log:     {run_dir}/slurm-4242.out" in result.stdout
    script = RunDir(run_dir).job_script
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", str(script)]
    record = json.loads(RunDir(run_dir).submissions_file.read_text())
    assert record[0]["job_id"] == "4242" and record[0]["command"] == ["demakeup", *args]
    for path in run_dir.iterdir():
        assert "secret-key-123" not in path.read_text()


def test_sbatch_refusal_shows_its_message(tmp_path, shards):
    bin_dir = fake_sbatch(tmp_path, 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1')
    run_dir = tmp_path / "run"
    result = run_cli(["submit", "p3", "--gpus", "0", "--shards", str(shards), "--run-dir", str(run_dir),
                      "--partition", "nope"], f"{bin_dir}:{os.environ['PATH']}")
    assert result.exit_code == 2
    assert "sbatch refused the job (exit 1): sbatch: error: invalid partition specified: nope" in result.stderr
    assert not run_dir.exists()  # nothing half-made left behind


def test_sbatch_missing(tmp_path, shards):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(["submit", "p3", "--shards", str(shards), "--run-dir", str(tmp_path / "r")], str(empty))
    assert result.exit_code == 2 and "sbatch not found on PATH" in result.stderr and "--local" in result.stderr


@pytest.mark.parametrize("setup, message", [
    ("no-shards", "no such folder"),
    ("no-manifest", "no manifest.json"),
    ("other-model", "belongs to model 'p1', not 'p3'"),
    ("has-checkpoint", "already holds a run (checkpoint step-00000004): continue it with --resume"),
    ("resume-missing", "no such run dir"),
])
def test_input_errors(tmp_path, shards, setup, message):
    bin_dir = fake_sbatch(tmp_path, "echo 1")
    run_dir = tmp_path / "run"
    args = ["submit", "p3", "--gpus", "0", "--shards", str(shards), "--run-dir", str(run_dir)]
    if setup == "no-shards":
        args[args.index(str(shards))] = str(tmp_path / "absent")
    elif setup == "no-manifest":
        (shards / "manifest.json").unlink()
    elif setup == "other-model":
        run_dir.mkdir()
        RunDir(run_dir).config_file.write_text("model: p1\n")
    elif setup == "has-checkpoint":
        (RunDir(run_dir).checkpoint(4)).mkdir(parents=True)
    else:
        args += ["--resume", "latest"]
    result = run_cli(args, f"{bin_dir}:{os.environ['PATH']}")
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "sbatch.args").exists()


def test_status_and_cancel_without_slurm(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "p3-x"
    (RunDir(run_dir).checkpoint(8)).mkdir(parents=True)
    (RunDir(run_dir).checkpoints_dir / "step-00000012.tmp").mkdir()
    RunDir(run_dir).status_file.write_text(json.dumps({
        "status": "running", "model": "p3", "epoch": 2, "step": 10, "total_steps": 40, "img_per_s": 123.4,
        "eta_s": 3725, "last_metrics": {"val/demakeup/psnr": 21.5, "train_loss": 0.25}, "best_val_psnr": 21.5,
        "updated": "2025-01-01T00:00:00", "restarts": 1}))
    RunDir(run_dir).submissions_file.write_text(json.dumps([{"job_id": "local-5", "command": []}]))
    for epoch, seconds in enumerate([40.0, 12.0, 14.0], start=1):
        RunDir(run_dir).append_metrics({"epoch": epoch, "step": 4 * epoch, "epoch_s": seconds})
    RunDir(run_dir).write_config(TrainConfig(model="p3", epochs=300))
    monkeypatch.chdir(tmp_path)
    result = run_cli(["status"])  # the newest run under ./runs
    assert result.exit_code == 0, result.output
    assert "running (STALE: no heartbeat for" in result.stdout  # last updated in 2025
    assert "- epoch 2, step 10/40, 123.4 img/s, ETA 01:02:05, restarts 1" in result.stdout
    assert "val/demakeup/psnr 21.5" in result.stdout and "checkpoints: step-00000008\n" in result.stdout
    assert "epoch time: 13.0 s per epoch (epochs 2..3; epoch 1: 40.0 s with start-up); 300 epochs at this pace: " \
           "1:05:00" in result.stdout
    result = run_cli(["cancel", str(run_dir)])
    assert result.exit_code == 0 and RunDir(run_dir).stop_file.exists() and "checkpoint and stop" in result.stdout
    result = run_cli(["status", "nonsense"])
    assert result.exit_code == 2 and "neither a run dir nor a Slurm job id" in result.stderr


@pytest.mark.parametrize("state, now, scancel_args, message", [
    ("RUNNING", False, "--batch --signal=TERM 31", "asked Slurm job 31 to checkpoint and stop"),
    ("RUNNING", True, "31", "cancelled Slurm job 31 (RUNNING)"),
    ("PENDING", False, "31", "cancelled Slurm job 31 (PENDING)"),
])
def test_cancel_slurm_job(tmp_path, monkeypatch, state, now, scancel_args, message):
    run_dir = tmp_path / "runs" / "p3-x"
    run_dir.mkdir(parents=True)
    RunDir(run_dir).submissions_file.write_text(json.dumps([{"job_id": "31", "command": []}]))
    bin_dir = fake_sbatch(tmp_path, "exit 1")
    for name, body in (("scontrol", f'echo "JobId=31 JobState={state} Reason=None Restarts=0"'),
                       ("scancel", f'echo "$@" > {tmp_path}/scancel.args')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.chdir(tmp_path)
    result = run_cli(["cancel", "31", *(["--now"] if now else [])], f"{bin_dir}:{os.environ['PATH']}")
    assert result.exit_code == 0, result.output
    assert message in result.stdout and not RunDir(run_dir).stop_file.exists()
    args = tmp_path / "scancel.args"
    assert (args.read_text().strip() if args.exists() else None) == scancel_args


def test_cancel_ended_slurm_job_does_nothing_and_says_so(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "p3-x"
    run_dir.mkdir(parents=True)
    RunDir(run_dir).submissions_file.write_text(json.dumps([{"job_id": "31", "command": []}]))
    bin_dir = fake_sbatch(tmp_path, "exit 1")
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "JobId=31 JobState=COMPLETED Reason=None Restarts=0"\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    result = run_cli(["cancel", "31"], f"{bin_dir}:{os.environ['PATH']}")
    assert result.exit_code == 2 and "has already ended (COMPLETED); nothing to stop" in result.stderr
    assert not RunDir(run_dir).stop_file.exists()


@pytest.mark.parametrize("status", ["finished", "failed", None])
def test_cancel_run_that_is_not_running_leaves_no_stop_file(tmp_path, status):
    run_dir = tmp_path / "p3-x"
    run_dir.mkdir()
    if status:
        RunDir(run_dir).status_file.write_text(json.dumps({"status": status}))
    result = run_cli(["cancel", str(run_dir)])
    assert result.exit_code == 2 and f"is not running ({status or 'not started'}); nothing to stop" in result.stderr
    assert list(run_dir.iterdir()) == ([RunDir(run_dir).status_file] if status else [])


def test_status_of_unknown_job_fails(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    result = run_cli(["status", "12345"], str(empty))
    assert result.exit_code == 2 and "job 12345: unknown to Slurm and to the runs under runs/" in result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--", "--eopchs", "5"], "No such option: --eopchs"),
    (["--", "--epochs", "five"], "Invalid value for '--epochs'"),
    (["--", "--set", "lr=fast"], "--set: lr: expected a number, got 'fast'"),
    (["--", "--set", "model_args.skips=false"], "p4 has no option(s) skips"),
    (["--config", "CONFIG"], "c.yaml: epochs: expected an integer, got 'many'"),
    (["--shards", "MISSING"], "no such folder; make one with `demakeup shard DATA`"),
])
def test_dry_run_refuses_what_the_job_would(tmp_path, shards, extra, message):
    (tmp_path / "c.yaml").write_text("epochs: many\n")
    extra = [{"CONFIG": str(tmp_path / "c.yaml"), "MISSING": str(tmp_path / "absent")}.get(a, a) for a in extra]
    args = ["submit", "p4", "--gpus", "8", "--shards", str(shards), "--run-dir", str(tmp_path / "r"), "--dry-run"]
    result = run_cli(args + extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not result.stdout.startswith("#!") and not (tmp_path / "r").exists()


def test_dry_run_accepts_valid_training_options(tmp_path, shards):
    result = run_cli(["submit", "p4", "--gpus", "8", "--shards", str(shards), "--run-dir", str(tmp_path / "r"),
                      "--dry-run", "--", "--epochs", "5", "--set", "model_args.residual=true"])
    assert result.exit_code == 0, result.output
    assert "--epochs 5 --set model_args.residual=true" in result.stdout


def test_deprecated_resume_run_dir_still_continues_the_run(tmp_path, shards):
    run_dir = tmp_path / "run"
    (RunDir(run_dir).checkpoint(4)).mkdir(parents=True)
    args = ["submit", "p3", "--gpus", "0", "--shards", str(shards), "--dry-run"]
    old = run_cli([*args, "--resume", str(run_dir)], os.environ["PATH"])
    new = run_cli([*args, "--run-dir", str(run_dir), "--resume", "latest"], os.environ["PATH"])
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    assert "is deprecated: use --run-dir" in old.stderr and "is deprecated" not in new.stderr
    assert old.stdout == new.stdout  # the same job script
    bad = run_cli([*args, "--resume", "lastest"], os.environ["PATH"])
    assert bad.exit_code == 2 and "use auto or latest with --run-dir RUN_DIR" in bad.stderr
