"""Quality floor: the recommended p3 beats copying the input after a fixed tiny CPU budget.

CPU fp32 training is deterministic for a seed, so on one machine this test cannot flake; the margin
is set from the seed noise measured with `python tests/test_quality_floor.py` (the same run for
seeds 25, 26, 27; docs/results.md), so that another machine's rounding differences stay inside it
while a regression of the recipe (a lever that stops working, a broken residual path) does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import synth_dataset
from demakeup_dist.demo import RECOMMENDED_DIR
from demakeup_dist.train.config import load_config
from demakeup_dist.train.loop import train

# Measured gains over identity (dB) of floor_gain() for seeds 25, 26, 27: see docs/results.md.
MEASURED_GAINS = (None,)
FLOOR_DB = None


def floor_gain(root: Path, seed: int = 25) -> float:
    """Train the recommended p3 (32 px, 128 triplets, 6 epochs of batch 8: 96 steps); test PSNR - identity.

    96 steps: at 32 steps the recommended p3 is still level with identity (measured -0.02 .. +0.02 dB).
    """
    if not (root / "shards").is_dir():
        data = synth_dataset(root / "data", train=128, val=16, test=32, size=32, seed=7, workers=1, progress=False)
        write_shards(data, root / "shards", samples_per_shard=32, workers=1, progress=False)
    config = load_config("p3", RECOMMENDED_DIR / "p3.yaml", epochs=6, batch_size=8, wandb="disabled",
                         num_workers=0, seed=seed)
    results = train(config, root / "shards", root / f"run-{seed}")
    return results["psnr"] - results["identity_psnr"]


def test_recommended_p3_beats_identity_by_the_floor(tmp_path, one_thread):
    gain = floor_gain(tmp_path)
    assert gain > FLOOR_DB, (f"the recommended p3 gained {gain:+.3f} dB over identity, below the floor "
                             f"{FLOOR_DB:+.3f} dB (measured {MEASURED_GAINS})")


if __name__ == "__main__":  # re-measure the seed noise: python tests/test_quality_floor.py OUT_DIR
    torch.set_num_threads(1)
    gains = [floor_gain(Path(sys.argv[1]), seed) for seed in (25, 26, 27)]
    print("gains over identity (dB):", ", ".join(f"{g:.3f}" for g in gains))
