"""One rank of tests/test_loader_ddp.py, started by `accelerate launch`: a training epoch and a val pass.

Usage: ddp_loader_worker.py SHARDS OUT_DIR BATCH_SIZE. Writes OUT_DIR/rank{R}.json with the names this
rank saw. Every training step does an all-reduce, as DDP does: unequal step counts would hang it.
"""

import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from demakeup_dist.data.loader import eval_batches, steps_per_epoch, train_batches


def main(shards: str, out_dir: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    steps = steps_per_epoch(shards, global_batch=batch_size * world, world_size=world)
    train = []
    for batch in train_batches(shards, batch_size=batch_size, with_hr=True, seed=7, epoch=1, rank=rank,
                               world_size=world, num_workers=2, uint8=True):
        train.append(batch["name"])
        accelerator.reduce(torch.ones(1), reduction="sum")
    val = [name for batch in eval_batches(shards, "val", batch_size=batch_size, with_hr=False, rank=rank,
                                          world_size=world, num_workers=1) for name in batch["name"]]
    result = {"world": world, "steps": steps, "train": train, "val": val}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    os._exit(0)  # skips interpreter teardown, where gloo is known to abort the process


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
