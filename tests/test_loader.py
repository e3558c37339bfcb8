"""The reader (demakeup_dist.data.loader) on real tar shards, in one process."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import build_dataset
from PIL import Image

from demakeup_dist.data import codec, loader
from demakeup_dist.data.codec import open_rgb
from demakeup_dist.data.loader import eval_batches, steps_per_epoch, to_float, train_batches
from demakeup_dist.data.shards import write_shards

FOLDERS = {"makeup": "makeup", "non_makeup": "non-makeup", "hr": "high_r"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(source root, shard dir): 13 train / 5 val / 3 test triplets of 8x8 (HR 32x32), 3 per shard."""
    tmp = tmp_path_factory.mktemp("loader")
    root = build_dataset(tmp, n={"train": 13, "val": 5, "test": 3}, size=8)
    write_shards(root, tmp / "shards", workers=1, progress=False, samples_per_shard=3)
    return root, tmp / "shards"


@pytest.fixture(params=["default", "tiny"])
def windows(request, monkeypatch):
    """Run a test with the real shuffle window (one window here) and with a tiny one (many, odd sizes)."""
    if request.param == "tiny":
        monkeypatch.setattr(loader, "SHUFFLE_WINDOW", 5)


def source(root, split: str, role: str, name: str) -> np.ndarray:
    """(3, H, W) uint8 pixels of a source file."""
    pixels = np.asarray(open_rgb((root / split / FOLDERS[role] / name).read_bytes()))
    return pixels.transpose(2, 0, 1)


def names(batches) -> list[list[str]]:
    return [b["name"] for b in batches]


def epoch(shards, **kwargs) -> list[dict]:
    args = dict(batch_size=2, with_hr=True, seed=3, epoch=0, num_workers=0, uint8=True) | kwargs
    return list(train_batches(shards, **args))


def test_batch_contract_float_and_uint8(data):
    _, shards = data
    (first, *_) = eval_batches(shards, "val", batch_size=2, with_hr=True, num_workers=0)
    assert first["makeup"].shape == first["non_makeup"].shape == (2, 3, 8, 8)
    assert first["hr"].shape == (2, 3, 32, 32) and first["name"] == ["000.jpg", "001.png"]
    assert first["makeup"].dtype == torch.float32 and first["makeup"].is_contiguous()
    assert 0 <= first["hr"].min() and first["hr"].max() <= 1
    (raw, *_) = eval_batches(shards, "val", batch_size=2, with_hr=False, num_workers=0, uint8=True)
    assert raw["makeup"].dtype == torch.uint8 and "hr" not in raw
    assert torch.equal(to_float(raw, "cpu")["makeup"], first["makeup"])  # the two paths agree exactly
    assert to_float(raw, "cpu")["name"] == raw["name"]


def test_eval_pixels_equal_the_source_files(data):
    root, shards = data
    for batch in eval_batches(shards, "test", batch_size=2, with_hr=True, num_workers=0, uint8=True):
        for i, name in enumerate(batch["name"]):
            for role in FOLDERS:
                assert np.array_equal(batch[role][i].numpy(), source(root, "test", role, name))


def test_train_flip_is_the_same_for_every_image_of_a_sample(data):
    root, shards = data
    flips = []
    for seed in range(3):
        for batch in epoch(shards, seed=seed, batch_size=4):
            for i, name in enumerate(batch["name"]):
                flipped = set()
                for role in FOLDERS:
                    image, original = batch[role][i].numpy(), source(root, "train", role, name)
                    assert np.array_equal(image, original) or np.array_equal(image, original[:, :, ::-1])
                    flipped.add(not np.array_equal(image, original))
                assert len(flipped) == 1, f"{name}: images flipped differently"
                flips.append(flipped.pop())
    assert 0 < sum(flips) < len(flips)


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_order_is_a_function_of_seed_and_epoch_not_of_workers(data, windows):
    _, shards = data
    reference = names(epoch(shards))
    assert len(set(sum(reference, []))) == 12  # 6 steps x 2, no sample twice
    assert names(epoch(shards, num_workers=2)) == reference
    assert names(epoch(shards, num_workers=3)) == reference
    assert names(epoch(shards, epoch=1)) != reference
    assert names(epoch(shards, seed=4)) != reference
    a, b = epoch(shards), epoch(shards, num_workers=2)
    assert all(torch.equal(x["hr"], y["hr"]) for x, y in zip(a, b))


def test_resume_from_start_step_gives_the_tail_of_the_epoch(data, windows):
    _, shards = data
    full = epoch(shards, epoch=2)
    tail = epoch(shards, epoch=2, start_step=4, num_workers=2)
    assert names(tail) == names(full)[4:]
    assert all(torch.equal(x["makeup"], y["makeup"]) for x, y in zip(tail, full[4:]))
    assert epoch(shards, start_step=6) == []
    with pytest.raises(ValueError, match="outside"):
        epoch(shards, start_step=7)


def test_steps_per_epoch(data):
    _, shards = data
    assert steps_per_epoch(shards, global_batch=4, world_size=2) == 3  # 13 // 4, remainder dropped
    assert len(epoch(shards, batch_size=4)) == 3
    with pytest.raises(ValueError, match="fewer than one global batch"):
        steps_per_epoch(shards, global_batch=14, world_size=1)
    with pytest.raises(ValueError, match="multiple"):
        steps_per_epoch(shards, global_batch=5, world_size=2)


@pytest.mark.parametrize("world_size", [2, 3, 6])  # 6 ranks > 5 shards
def test_ranks_split_an_epoch_disjointly_with_equal_steps(data, world_size, windows):
    _, shards = data
    per_rank = [epoch(shards, batch_size=1, rank=r, world_size=world_size, num_workers=1)
                for r in range(world_size)]
    steps = 13 // world_size
    assert [len(b) for b in per_rank] == [steps] * world_size
    seen = [n for batches in per_rank for n in sum(names(batches), [])]
    assert len(seen) == len(set(seen)) == steps * world_size


def test_global_batches_do_not_depend_on_world_size(data, windows):
    _, shards = data
    single = names(epoch(shards, batch_size=4))
    pair = [names(epoch(shards, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert [sorted(b) for b in single] == [sorted(a + b) for a, b in zip(*pair)]


@pytest.mark.parametrize("world_size", [1, 2, 7])
def test_eval_reads_every_sample_once_across_ranks(data, world_size, windows):
    _, shards = data
    per_rank = [names(eval_batches(shards, "val", batch_size=2, with_hr=False, rank=r, world_size=world_size,
                                   num_workers=2)) for r in range(world_size)]
    seen = sorted(n for batches in per_rank for batch in batches for n in batch)
    assert seen == ["000.jpg", "001.png", "002.jpg", "003.png", "004.jpg"]
    for rank, batches in enumerate(per_rank):  # no padding: the last batch of a rank may be smaller
        count = len(range(rank, 5, world_size))
        assert [len(b) for b in batches] == [2] * (count // 2) + [count % 2] * (count % 2)


def test_hr_requested_from_shards_without_hr(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=2, size=8, hr_folder=None)
    write_shards(root, tmp_path / "s", workers=1, progress=False)
    with pytest.raises(ValueError, match="hold no HR images"):
        train_batches(tmp_path / "s", batch_size=1, with_hr=True, seed=0, epoch=0)
    assert len(list(train_batches(tmp_path / "s", batch_size=1, with_hr=False, seed=0, epoch=0))) == 2


def test_simplejpeg_and_pillow_decode_identically():
    if codec.simplejpeg is None:
        pytest.skip("simplejpeg not installed: Pillow decodes everything")
    rng = np.random.default_rng(0)
    for subsampling in (0, 2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(
            buffer, "JPEG", quality=90, subsampling=subsampling)
        data = buffer.getvalue()
        assert np.array_equal(codec.decode_rgb(data, "jpg"), np.asarray(open_rgb(data)))
