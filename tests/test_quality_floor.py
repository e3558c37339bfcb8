"""Quality floor: the recommended p3 beats copying the input after a fixed tiny CPU budget.

CPU fp32 training is deterministic for a seed, so on one machine this test cannot flake; the margin
is set from the seed noise measured with `python tests/test_quality_floor.py` (the same run for
seeds 1, 2, 3; docs/results.md), so that another machine's rounding differences stay inside it
while a regression of the recipe (a lever that stops working, a broken residual path) does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import synth_dataset
from demakeup_dist.experiment import RECOMMENDED_DIR
from demakeup_dist.results import RunResults
from demakeup_dist.train.config import load_config
from demakeup_dist.train.loop import train

# Gains over identity (dB) of floor_gain(seed) for seeds 1, 2, 3 (docs/results.md section 5, "lr2e-3";
# seed 1 reproduced bit for bit by this function): mean 0.209, std 0.036. The floor is mean - 3 std.
# For scale: the brief's lr 1e-2 gains 0.12-0.14 dB here (passes), L1 0.02 (fails), the brief's
# non-residual p3 stays several dB below identity (fails).
MEASURED_GAINS = (0.177, 0.202, 0.248)
FLOOR_DB = 0.10


def floor_gain(root: Path, seed: int = 1) -> float:
    """Train the recommended p3 exactly as docs/results.md section 5 (32 px, 256 / 32 / 64 triplets, 3 epochs
    of batch 8: 96 steps) and return its test PSNR minus the identity baseline's.

    96 steps: after 32 steps (on 64 triplets) the recommended p3 was still level with identity
    (-0.016, +0.018, -0.023 dB for three seeds), too close for a floor.
    """
    if not (root / "shards").is_dir():
        data = synth_dataset(root / "data", train=256, val=32, test=64, size=32, workers=1, progress=False)
        write_shards(data, root / "shards", workers=1, progress=False)
    config = load_config("p3", RECOMMENDED_DIR / "p3.yaml", epochs=3, batch_size=8, wandb="disabled",
                         num_workers=0, seed=seed)
    test = RunResults.from_dict(train(config, root / "shards", root / f"run-{seed}")).evaluation
    return test.psnr - test.baselines["demakeup"].psnr


@pytest.mark.slow
def test_recommended_p3_beats_identity_by_the_floor(tmp_path, one_thread):
    gain = floor_gain(tmp_path)
    assert gain > FLOOR_DB, (f"the recommended p3 gained {gain:+.3f} dB over identity, below the floor "
                             f"{FLOOR_DB:+.3f} dB (measured {MEASURED_GAINS})")


if __name__ == "__main__":  # re-measure the seed noise: python tests/test_quality_floor.py OUT_DIR
    torch.set_num_threads(1)
    gains = [floor_gain(Path(sys.argv[1]), seed) for seed in (1, 2, 3)]
    print("gains over identity (dB):", ", ".join(f"{g:.3f}" for g in gains))
