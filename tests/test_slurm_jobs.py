"""`demakeup submit` on a real Slurm (slurm-wlm + munge, started here as root by tests/slurm_cluster.py).

One node: four p3 CPU jobs run side by side on tiny shards (see the `jobs` fixture); the preempted one
requeues itself and ends with the undisturbed one's weights. Two nodes in two network namespaces: one
DDP group of two processes, one per node. Skipped only where Slurm is absent outside CI (CI=true fails).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from slurm_cluster import NODE_IFACE, SlurmCluster, missing_binaries

from demakeup_dist.rundir import RunDir

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
WAIT_S = 400  # a guard against a hung job, not a speed requirement
TRAIN = ["--", "--epochs", "2", "--batch-size", "4"]  # 16 samples: 4 steps per epoch


def require_slurm() -> None:
    why = None
    if missing_binaries():
        why = f"no {', '.join(missing_binaries())}: install slurm-wlm, munge, iproute2 (.ci/slurm-setup.sh)"
    elif os.geteuid() != 0:
        why = "the test cluster's daemons (munged, slurmctld, slurmd) must run as root"
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Slurm tests cannot run in CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """16 / 4 / 4 random 32x32 pairs (no HR: p3 does not use it), as shards."""
    import numpy as np
    from PIL import Image

    from demakeup_dist.data.shards import write_shards

    src, rng = tmp_path_factory.mktemp("data"), np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4), ("test", 4)):
        for i in range(count):
            clean = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            for folder, image in (("non-makeup", clean), ("makeup", clean // 2 + 64)):
                (src / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(src / split / folder / f"{i:03d}.png")
    out = tmp_path_factory.mktemp("shards") / "tiny"
    write_shards(src, out)
    return out


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory) -> Path:
    """configs/p3.yaml made quick and chatty: no loader workers, no wandb, status.json every step."""
    config = yaml.safe_load((ROOT / "configs" / "p3.yaml").read_text())
    config.update(num_workers=0, wandb="disabled", log_every=1)
    path = tmp_path_factory.mktemp("config") / "p3-fast.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def submit(cluster: SlurmCluster, run_dir: Path, shards: Path, config: Path, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launcher.main", "submit", "p3", "--gpus", "0", "--cpus-per-gpu", "1",
           "--shards", str(shards), "--config", str(config), "--run-dir", str(run_dir), "--signal-seconds", "30",
           *extra]
    return subprocess.run(cmd, env={**cluster.env, **(env or {})}, cwd=run_dir.parent, capture_output=True,
                          text=True, timeout=120)


def job_id(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"^job id:\s+(\d+)$", result.stdout, re.M).group(1)


def job_info(cluster: SlurmCluster, job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=cluster.env, capture_output=True, text=True)
    return dict(re.findall(r"\b(JobState|Restarts|ExitCode|Reason)=(\S+)", out.stdout))


def status_of(run_dir: Path) -> dict:
    try:
        return json.loads(RunDir(run_dir).status_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_jobs(cluster: SlurmCluster, jobs: dict[str, Path], on_poll=None) -> dict[str, dict[str, str]]:
    """Poll until every job (id -> run dir) has ended; `on_poll()` runs each round and may signal jobs
    or add new ones to `jobs`."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if on_poll:
            on_poll()
        info = {job: job_info(cluster, job) for job in jobs}
        if all(i.get("JobState") in DONE for i in info.values()):
            return info
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for d in jobs.values() for p in d.glob("slurm-*.out"))
    pytest.fail(f"jobs still not done after {WAIT_S} s: {info}\n{logs}\n{cluster.logs()}")


def log_of(run_dir: Path, job: str) -> str:
    return (run_dir / f"slurm-{job}.out").read_text(errors="replace")


def weights_equal(a: Path, b: Path) -> list[str]:
    """Names of tensors that differ between two safetensors files (empty: identical)."""
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys()
    return [k for k in ta if not (ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and (ta[k] == tb[k]).all())]


# -- one node ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_slurm()
    with SlurmCluster(tmp_path_factory.mktemp("slurm1"), nodes=1, cpus=4) as started:
        yield started


def demakeup(cluster: SlurmCluster, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.main", *args], env=cluster.env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def jobs(cluster, shards, fast_config, tmp_path_factory):
    """Four Slurm jobs side by side, and the same training run here with --local:
    A undisturbed; B gets USR1 mid-run (to the batch shell, as Slurm does before the time limit) and logs
    to wandb offline;
    C the same with --max-restarts 0, then is resubmitted with --resume; D is stopped by
    `demakeup cancel`; L is A without Slurm. Returns what the tests check."""
    runs = tmp_path_factory.mktemp("runs")
    # A run dir that would execute commands if any value were not quoted (sbatch, bash, srun, python).
    a = runs / "A $(touch pwned) `touch pwned2` 'q' \"dq\" %x"
    b, c, d, local = runs / "B", runs / "C", runs / "D", runs / "L"
    ids = {
        "A": job_id(submit(cluster, a, shards, fast_config, *TRAIN, env={"WANDB_API_KEY": "secret-key-123"})),
        "B": job_id(submit(cluster, b, shards, fast_config, *TRAIN, "--wandb", "offline")),
        "C": job_id(submit(cluster, c, shards, fast_config, "--max-restarts", "0", *TRAIN)),
        # D is cancelled mid-run: long enough that a poll slowed by a loaded machine still finds it running.
        "D": job_id(submit(cluster, d, shards, fast_config, "--", "--epochs", "50", "--batch-size", "4")),
    }
    waiting = {ids["A"]: a, ids["B"]: b, ids["C"]: c, ids["D"]: d}
    local_log = runs / "local-submit.out"
    with open(local_log, "w") as out:
        local_proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.main", "submit", "p3", "--local", "--gpus", "0", "--cpus-per-gpu", "1",
             "--shards", str(shards), "--config", str(fast_config), "--run-dir", str(local), *TRAIN],
            cwd=runs, stdout=out, stderr=subprocess.STDOUT)
    seen: dict[str, object] = {}

    def training(run: Path) -> bool:
        st = status_of(run)
        return st.get("status") == "running" and st.get("step", 0) >= 2

    def drive() -> None:
        for name, run in (("B", b), ("C", c)):
            if f"{name} signalled" not in seen and training(run):
                subprocess.run(["scancel", "--signal=USR1", "--batch", ids[name]], env=cluster.env, check=True)
                seen[f"{name} signalled"] = True
        if "D cancel" not in seen and training(d):
            seen["D cancel"] = demakeup(cluster, "cancel", ids["D"], cwd=runs)
        if "B signalled" in seen and "B pending" not in seen:
            info = job_info(cluster, ids["B"])
            if info.get("Restarts") == "1" and info.get("JobState") == "PENDING":
                seen["B pending"] = demakeup(cluster, "status", str(b), cwd=runs)
        if "C resumed" not in ids and job_info(cluster, ids["C"]).get("JobState") == "FAILED":
            ids["C resumed"] = job_id(submit(cluster, c, shards, fast_config, "--resume", "latest", *TRAIN))
            waiting[ids["C resumed"]] = c

    info = wait_jobs(cluster, waiting, drive)
    local_proc.wait(timeout=WAIT_S)
    return {"runs": runs, "ids": ids, "info": {name: info[job] for name, job in ids.items()}, "seen": seen,
            "a": a, "b": b, "c": c, "d": d, "local": local,
            "local_result": (local_proc.returncode, local_log.read_text(errors="replace"))}


def test_job_runs_to_completion_with_its_files(jobs):
    a, job = jobs["a"], jobs["ids"]["A"]
    assert jobs["info"]["A"]["JobState"] == "COMPLETED", log_of(a, job)
    assert status_of(a)["status"] == "finished" and status_of(a)["step"] == 8
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "best.safetensors", "results.json",
                 "train.log", "job.sbatch", "submissions.json", "checkpoints/step-00000008"):
        assert (a / name).exists(), name
    assert yaml.safe_load(RunDir(a).config_file.read_text())["model"] == "p3"
    assert len(RunDir(a).metrics_file.read_text().splitlines()) == 2  # one evaluation per epoch
    log = log_of(a, job)
    assert f"demakeup: job {job} restart 0 on localhost" in log and "status finished" in log
    assert "requeue" not in log
    assert not list(jobs["runs"].glob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    for path in [p for p in a.rglob("*") if p.is_file()]:
        assert b"secret-key-123" not in path.read_bytes(), path


def test_preempted_job_requeues_and_ends_like_an_uninterrupted_one(jobs):
    a, b = jobs["a"], jobs["b"]
    job = jobs["ids"]["B"]
    log = log_of(b, job)
    assert "B signalled" in jobs["seen"], "B was never seen training at step >= 2"
    assert jobs["info"]["B"]["JobState"] == "COMPLETED" and jobs["info"]["B"]["Restarts"] == "1", log
    assert "USR1 (preemption or time limit): asking the training to checkpoint and stop" in log
    assert "status preempted" in log and f"requeueing job {job} (restart 1 of at most 10)" in log
    assert f"demakeup: job {job} restart 1 on localhost" in log
    assert log.splitlines()[-1].startswith("demakeup: training ended with exit code 0, status finished")
    assert status_of(b)["status"] == "finished" and status_of(b)["restarts"] >= 1
    assert not weights_equal(RunDir(a).final_weights, RunDir(b).final_weights)
    assert not weights_equal(RunDir(a).best_weights, RunDir(b).best_weights)
    assert not RunDir(b).stop_file.exists()


def test_requeued_job_continues_its_wandb_run(jobs):
    """wandb cannot resume an offline run in place: each start writes its own offline-run-* folder, all
    under the run's one id, and prints the command that uploads it."""
    b, log = jobs["b"], log_of(jobs["b"], jobs["ids"]["B"])
    run_id = RunDir(b).wandb_id_file.read_text().strip()
    segments = sorted(p.name for p in (b / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(name.endswith(f"-{run_id}") for name in segments), segments
    synced = re.findall(r"upload it with: wandb sync (\S+)", log)
    assert [Path(p).name for p in synced] == segments
    # steps continue: the restart logs (to wandb as to the log) from the checkpoint's step on, not from 0
    before, after = log.split(f"demakeup: job {jobs['ids']['B']} restart 1 on")
    steps = [[int(m) for m in re.findall(r"epoch \d/2 step (\d+)/8", part)] for part in (before, after)]
    assert steps[0] and steps[1][0] > steps[0][-1] and steps[1] == list(range(steps[1][0], 9)), steps


def test_status_while_waiting_to_restart(jobs):
    pending = jobs["seen"].get("B pending")
    assert pending is not None and pending.returncode == 0, pending
    # the reason (BeginTime: the credential expiry wait) may not be set yet right after the requeue
    assert re.search(rf"slurm job {jobs['ids']['B']}: PENDING( \(\w+\))?, 1 restart\(s\)", pending.stdout)
    assert re.search(r"training: preempted - epoch \d, step \d/8", pending.stdout), pending.stdout
    assert "checkpoints: step-" in pending.stdout


def test_max_restarts_stops_requeueing(jobs):
    c = jobs["c"]
    log = log_of(c, jobs["ids"]["C"])
    assert jobs["info"]["C"]["JobState"] == "FAILED" and jobs["info"]["C"]["ExitCode"] == "3:0", log
    assert jobs["info"]["C"]["Restarts"] == "0"
    assert "not requeueing: already restarted 0 times (--max-restarts 0)" in log
    assert "status preempted" in log.splitlines()[-2]


def test_resume_submission_continues_the_run(jobs):
    c, job = jobs["c"], jobs["ids"]["C resumed"]
    assert jobs["info"]["C resumed"]["JobState"] == "COMPLETED", log_of(c, job)
    assert status_of(c)["status"] == "finished" and status_of(c)["step"] == 8
    assert re.search(r"resumed from .*/C/checkpoints/step-\d{8}", RunDir(c).log_file.read_text())
    assert [r["job_id"] for r in json.loads(RunDir(c).submissions_file.read_text())] == [jobs["ids"]["C"], job]
    assert not weights_equal(RunDir(jobs["a"]).final_weights, RunDir(c).final_weights)


def test_cancel_checkpoints_and_does_not_requeue(jobs):
    d = jobs["d"]
    cancel = jobs["seen"].get("D cancel")
    assert cancel is not None and cancel.returncode == 0, cancel
    assert f"asked Slurm job {jobs['ids']['D']} to checkpoint and stop" in cancel.stdout
    assert "demakeup: TERM: asking the training to checkpoint and stop" in log_of(d, jobs["ids"]["D"])
    assert jobs["info"]["D"]["JobState"] == "COMPLETED" and jobs["info"]["D"]["Restarts"] == "0"
    assert status_of(d)["status"] == "stopped" and RunDir(d).checkpoints()
    assert "requeue" not in log_of(d, jobs["ids"]["D"])


def test_local_run_matches_the_slurm_job(jobs):
    code, out = jobs["local_result"]
    local = jobs["local"]
    assert code == 0, out
    assert "local job ended with exit code 0" in out and status_of(local)["status"] == "finished"
    (log,) = local.glob("slurm-local-*.out")
    assert "status finished" in log.read_text()
    assert not weights_equal(RunDir(jobs["a"]).final_weights, RunDir(local).final_weights)


def test_status_command_reports_slurm_and_training(jobs, cluster):
    b = jobs["b"]
    out = demakeup(cluster, "status", jobs["ids"]["B"], cwd=jobs["runs"].parent)
    assert out.returncode == 0, out.stderr
    assert f"slurm job {jobs['ids']['B']}: COMPLETED, 1 restart(s)" in out.stdout
    assert f"run dir:  {b}" in out.stdout and "training: finished - epoch 2, step 8/8" in out.stdout
    assert "checkpoints: step-" in out.stdout


def test_partition_rejected_by_sbatch(cluster, shards, fast_config, tmp_path):
    result = submit(cluster, tmp_path / "run", shards, fast_config, "--partition", "nope")
    assert result.returncode == 2
    assert "sbatch refused the job" in result.stderr and "invalid partition" in result.stderr.lower()
    assert not (tmp_path / "run").exists()


# -- two nodes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster2(tmp_path_factory):
    require_slurm()
    with SlurmCluster(tmp_path_factory.mktemp("slurm2"), nodes=2, cpus=2) as started:
        yield started


def test_two_nodes_form_one_ddp_group(cluster2, shards, fast_config, tmp_path, jobs):
    run_dir, spy = tmp_path / "run", tmp_path / "spy"
    spy.mkdir()
    env = {
        # This machine's hostname resolves to 127.0.0.1, where gloo would listen; name the node interface.
        "GLOO_SOCKET_IFNAME": NODE_IFACE,
        "PYTHONPATH": str(Path(__file__).parent / "slurm_spy"),
        "DEMAKEUP_SPY_DIR": str(spy),
    }
    job = job_id(submit(cluster2, run_dir, shards, fast_config, "--nodes", "2", *TRAIN, env=env))
    info = wait_jobs(cluster2, {job: run_dir})[job]
    log = log_of(run_dir, job)
    assert info["JobState"] == "COMPLETED", log + cluster2.logs()
    head = re.escape(cluster2.nodes[0].addr)
    assert re.search(rf"demakeup: job {job} restart 0 on n\[1-2\], head {head}:\d+", log)
    assert "on 2 process(es)" in RunDir(run_dir).log_file.read_text()
    assert sorted(p.name for p in spy.iterdir()) == ["rank-0.safetensors", "rank-1.safetensors"]
    assert not weights_equal(spy / "rank-0.safetensors", spy / "rank-1.safetensors")
    assert not weights_equal(spy / "rank-0.safetensors", RunDir(run_dir).final_weights)
    assert status_of(run_dir)["status"] == "finished" and status_of(run_dir)["step"] == 8
    # The same global batches as job A's single process: the same weights up to float summation order.
    one, two = load_file(RunDir(jobs["a"]).final_weights), load_file(RunDir(run_dir).final_weights)
    assert all(torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-4) for k in one)
