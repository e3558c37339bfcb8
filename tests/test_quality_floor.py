"""Quality floor: the demo's recommended p3 removes makeup after a fixed, reduced CPU budget.

`demakeup demo` at a reduced scale (the demo's 64 px faces and recipe, fewer triplets and steps), p3 only:
its test PSNR must beat copying the input, and it must remove a share of the lipstick's error, each by a
margin set from the seed noise measured with `python tests/test_quality_floor.py OUT` (the same run for
seeds 25, 26, 27; docs/results.md). CPU fp32 training is deterministic for a seed, so on one machine this
cannot flake; the margins (mean - 3 std) leave room for another machine's rounding, not for a regression
of the recipe (a lever that stops working, a broken residual path, a synthesizer whose makeup cannot be
undone).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from demakeup_dist.demo import CPU_SCALE, run_demo
from demakeup_dist.regions import evaluate_regions, split_region_maps
from demakeup_dist.results import RunResults
from demakeup_dist.rundir import RunDir

# The demo's CPU scale with a quarter of its steps and half its data (a few minutes of CI's time).
FLOOR_SCALE = replace(CPU_SCALE, train=256, val=16, test=32, epochs=4, side_by_side=False)
# Measured for seeds 25, 26, 27 by this file's __main__ (docs/results.md section 6, "Quality floor test").
MEASURED_GAINS_DB = (1.453, 1.454, 1.452)  # mean 1.453, std 0.001: mean - 3 std = 1.450
MEASURED_LIPS_REMOVED = (0.506, 0.534, 0.523)  # mean 0.521, std 0.014: mean - 3 std = 0.479
# The floors round mean - 3 std down (0.05 dB of room for another machine's kernels, where the seed std
# alone would leave 0.003). The recipe before the PSNR loss (MSE x 100) gains +1.00 dB at this scale and
# fails the first; it removes 47.5% of the lips' error, just above the second (the lips are not where the
# PSNR loss wins: docs/results.md), which guards the residual path and the synthesizer's lipstick.
FLOOR_DB = 1.40
FLOOR_LIPS = 0.47


def floor_run(out: Path, seed: int = 25) -> tuple[float, float]:
    """The reduced demo (p3 only) into `out`: (test PSNR gain over identity in dB, share of the lips' makeup
    error removed)."""
    run_demo(out, FLOOR_SCALE, models=("p3",), workers=1, progress=False, seed=seed)
    run = RunDir(out / "runs" / "p3")
    test = RunResults.from_dict(run.read_results(), str(run.results_file)).evaluation
    maps = split_region_maps(out / "shards", out / "data")
    lips = evaluate_regions(run.path, "p3", out / "shards", maps)["lips"].removed
    return test.psnr - test.baselines["demakeup"].psnr, lips


@pytest.mark.slow
def test_reduced_demo_p3_removes_makeup_beyond_the_floor(tmp_path, one_thread):
    gain, lips = floor_run(tmp_path / "demo")
    assert gain > FLOOR_DB, (f"the recommended p3 gained {gain:+.3f} dB over identity, below the floor "
                             f"{FLOOR_DB:+.3f} dB (measured {MEASURED_GAINS_DB})")
    assert lips > FLOOR_LIPS, (f"the recommended p3 removed {lips:.1%} of the lips' makeup error, below the floor "
                               f"{FLOOR_LIPS:.1%} (measured {MEASURED_LIPS_REMOVED})")


if __name__ == "__main__":  # re-measure the seed noise: python tests/test_quality_floor.py OUT_DIR
    torch.set_num_threads(1)
    results = [floor_run(Path(sys.argv[1]) / f"seed-{seed}", seed) for seed in (25, 26, 27)]
    print("gains over identity (dB):", ", ".join(f"{g:.3f}" for g, _ in results))
    print("lips removed:", ", ".join(f"{lips:.3f}" for _, lips in results))
