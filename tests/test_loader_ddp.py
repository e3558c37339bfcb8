"""The reader under real DDP: 2 CPU processes started by `accelerate launch` over gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from demakeup_dist.data.shards import write_shards

WORKER = Path(__file__).with_name("ddp_loader_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_read_disjoint_parts_with_equal_steps(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 13, "val": 5, "test": 1}, size=8)
    shards = tmp_path / "shards"
    write_shards(root, shards, workers=1, progress=False, samples_per_shard=3)
    # Without ACCELERATE_USE_CPU, --multi_gpu on a GPU-less machine silently runs two world-size-1 jobs.
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(WORKER), str(shards), str(tmp_path), "2"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [len(r["train"]) for r in ranks] == [r["steps"] for r in ranks] == [3, 3]  # 13 // (2 x 2)
    train = [set(sum(r["train"], [])) for r in ranks]
    assert not train[0] & train[1]
    assert len(train[0] | train[1]) == 12  # all 13 but the one dropped remainder
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == ["000.jpg", "001.png", "002.jpg", "003.png", "004.jpg"]
