"""Where the makeup is (the synthesizer's region maps) and how much of it a network removed, per region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import REGIONS, read_synth_info, render_sample, sample_rng, synth_dataset
from demakeup_dist.regions import (RegionError, region_errors, region_maps, showcase_rows, split_region_maps,
                                  synthetic_source, table)


def region_mean(sample: dict, code: int) -> float:
    """Mean |makeup - non_makeup| (0-255) over the pixels of region `code`."""
    diff = np.abs(sample["makeup"].astype(float) - sample["non_makeup"]).mean(-1)
    return float(diff[sample["regions"] == code].mean())


def test_region_maps_do_not_change_the_pixels_and_sit_where_the_makeup_is():
    background, lips, eyes = [], [], []
    for i in range(6):
        plain = render_sample(sample_rng(7, "test", i), 64)
        mapped = render_sample(sample_rng(7, "test", i), 64, regions=True)
        assert all(np.array_equal(plain[k], mapped[k]) for k in plain)
        labels = mapped["regions"]
        assert labels.shape == (64, 64) and labels.dtype == np.uint8 and labels.max() < len(REGIONS)
        assert (labels == 0).mean() > 0.3  # the backdrop and hair around the face
        background.append(region_mean(mapped, REGIONS.index("background")))
        for name, found in (("lips", lips), ("eyes", eyes)):
            if (labels == REGIONS.index(name)).any():
                found.append(region_mean(mapped, REGIONS.index(name)))
    assert lips and eyes  # most looks wear both
    assert min(lips) > 5 * max(background) and min(eyes) > 5 * max(background)


def test_region_errors_are_exact_for_known_outputs():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    maps = np.zeros((2, 8, 8), np.uint8)
    maps[:, :4] = REGIONS.index("lips")
    copied = region_errors(x, y, x, maps)  # the identity: nothing removed
    assert copied["lips"].removed == pytest.approx(0) and copied["lips"].gain_db == pytest.approx(0)
    assert copied["lips"].pixels == 64 and copied["background"].pixels == 64
    assert copied["lips"].makeup == pytest.approx(float((x - y)[..., :4, :].pow(2).sum()))
    halfway = region_errors(x, y, (x + y) / 2, maps)  # a quarter of the squared error is left
    assert halfway["lips"].removed == pytest.approx(0.75)
    assert halfway["lips"].gain_db == pytest.approx(10 * math.log10(4))
    assert math.isnan(halfway["eyes"].removed)  # no eye pixels: nothing to remove


def test_table_reads_removed_percent_and_db_per_region():
    lips = RegionError(10, 4.0, 1.0)
    errors = {name: RegionError(10, 1.0, 1.0) for name in REGIONS}
    text = table({"p3": [{**errors, "lips": lips}], "p1": [errors]})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert list(rows) == list(reversed(REGIONS))
    assert "+75 % (+6.02 dB)" in rows["lips"] and "+0 % (+0.00 dB)" in rows["lips"]
    assert "%" not in rows["background"].split("|", 4)[4]  # background: its dB change only


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions")
    data = synth_dataset(root / "data", train=2, val=1, test=6, size=32, seed=11, workers=1, progress=False)
    write_shards(data, root / "shards", workers=1, progress=False)
    return data, root / "shards"


def test_synth_records_itself_and_the_shards_find_it(synthetic, tmp_path, make_dataset):
    data, shards = synthetic
    assert read_synth_info(data) == {"generator": "demakeup synth", "version": 2, "seed": 11, "size": 32,
                                     "counts": {"train": 2, "val": 1, "test": 6}}
    assert synthetic_source(shards) == data
    other = make_dataset(tmp_path, n=2, size=32)
    assert read_synth_info(other) is None
    write_shards(other, tmp_path / "other", workers=1, progress=False)
    assert synthetic_source(tmp_path / "other") is None


def test_region_maps_refuse_a_dataset_that_is_not_what_synth_json_says(synthetic):
    data, _ = synthetic
    stored = np.stack([render_sample(sample_rng(11, "test", i), 32)["makeup"] for i in (0, 1)])
    maps = region_maps(data, "test", ["000000.jpg", "000001.jpg"], stored)
    assert maps.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="test sample 000001.jpg is not the one synth.json"):
        region_maps(data, "test", ["000000.jpg", "000001.jpg"], stored[[0, 0]])


def test_showcase_rows_pick_the_strongest_makeup_of_each_region(synthetic):
    data, shards = synthetic
    names, labels = showcase_rows(shards, split_region_maps(shards, data), rows=3)
    assert len(set(names)) == 3 and labels == ["strong lipstick", "strong eye makeup", "strong blush / contour"]
    lips = {}
    for i in range(6):
        s = render_sample(sample_rng(11, "test", i), 32, regions=True)
        d = ((s["makeup"].astype(float) - s["non_makeup"]) ** 2).sum(-1)
        lips[f"{i:06d}.jpg"] = d[s["regions"] == REGIONS.index("lips")].sum()
    assert names[0] == max(lips, key=lips.get)
