"""The data feed: the resident and the streaming paths give the same batches; checks before training."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_dataset

from demakeup_dist.atomic import temporary_name
from demakeup_dist.data import feed as feed_module
from demakeup_dist.data import resident
from demakeup_dist.data.feed import DataFeed, choose_cache
from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.shardset import ShardSet


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """13 train / 5 val / 3 test triplets of 8x8 (HR 32x32), 3 per shard."""
    tmp = tmp_path_factory.mktemp("feed")
    root = build_dataset(tmp, n={"train": 13, "val": 5, "test": 3}, size=8)
    write_shards(root, tmp / "shards", workers=1, progress=False, samples_per_shard=3)
    return tmp / "shards"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Resident stores go to a folder of the test's own, so it can check that none is left behind."""
    folder = tmp_path / "store"
    folder.mkdir()
    monkeypatch.setattr(feed_module, "store_dir", lambda need: folder)
    return folder


def make(shards, cache, **kwargs):
    args = dict(with_hr=True, batch_size=2, device="cpu", cache=cache, num_workers=0, progress=False) | kwargs
    return DataFeed(shards, **args)


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["name"] == y["name"]
        for role in ("makeup", "non_makeup", "hr"):
            assert x[role].dtype == y[role].dtype == torch.uint8
            assert torch.equal(x[role], y[role]), role


@pytest.mark.parametrize("world_size", [1, 2])
def test_resident_and_streaming_give_identical_batches(shards, store, world_size):
    for rank in range(world_size):
        streaming = make(shards, "off", rank=rank, world_size=world_size)
        cached = make(shards, "host", rank=rank, world_size=world_size)
        assert (streaming.placement, cached.placement) == ("off", "host")
        for seed, epoch, start in ((3, 0, 0), (3, 1, 0), (4, 2, 1)):
            assert_same(list(streaming.train(seed=seed, epoch=epoch, start_step=start)),
                        list(cached.train(seed=seed, epoch=epoch, start_step=start)))
        for split in ("val", "test"):
            assert_same(list(streaming.eval(split)), list(cached.eval(split)))
    assert list(store.iterdir()) == []  # the stores are unlinked once mapped


def test_resident_flips_like_streaming_and_flips_some(shards, store):
    batches = list(make(shards, "host").train(seed=3, epoch=0))
    plain = {name: image for b in make(shards, "host").eval("train") for name, image in zip(b["name"], b["hr"])}
    flipped = [not torch.equal(img, plain[name]) for b in batches for name, img in zip(b["name"], b["hr"])]
    assert all(torch.equal(img, plain[name]) or torch.equal(img, plain[name].flip(-1))
               for b in batches for name, img in zip(b["name"], b["hr"]))
    assert 0 < sum(flipped) < len(flipped)


def test_streaming_reads_only_its_share_of_the_bytes(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    train_bytes = sum(s["bytes"] for s in manifest["splits"]["train"]["shards"])
    samples = manifest["splits"]["train"]["samples"]
    per_rank = []
    for rank in range(2):
        batches = list(make(shards, "off", batch_size=1, rank=rank, world_size=2).train(seed=0, epoch=0))
        share = train_bytes * len(batches) / samples
        read = sum(b["read_bytes"] for b in batches)
        assert 0 < read <= 1.2 * share
        per_rank.append(read)
    index = ShardSet.open(shards).member_index("train")
    # Together the ranks read exactly the members of the 12 samples they train on (13 // 2 * 2), no more.
    assert sum(per_rank) <= int(index.sizes.sum())


def test_auto_choice_follows_the_memory_there_is(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(feed_module, "host_available", lambda: 10 * 2**30)
    assert choose_cache("auto", 2**30, cpu)[0] == "host"
    placement, why = choose_cache("auto", 6 * 2**30, cpu)
    assert placement == "off" and "streaming" in why
    assert choose_cache("device", 6 * 2**30, cpu)[0] == "host"  # a CPU's device memory is the host's
    assert choose_cache("off", 1, cpu)[0] == "off"
    with pytest.raises(ValueError, match="--data-cache 'gpu': choose one of auto, device, host, off"):
        choose_cache("gpu", 1, cpu)


def test_a_corrupted_shard_is_refused_before_training(tmp_path, store):
    root = build_dataset(tmp_path, n={"train": 4, "val": 2, "test": 2}, size=8)
    write_shards(root, tmp_path / "s", workers=1, progress=False, samples_per_shard=2)
    victim = tmp_path / "s" / "train-000001.tar"
    data = bytearray(victim.read_bytes())
    data[2000] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"train-000001\.tar differs from its sha256.*demakeup verify"):
        make(tmp_path / "s", "off")
    assert list(store.iterdir()) == []


def test_empty_val_split_is_refused_up_front(tmp_path):
    root = build_dataset(tmp_path, n={"train": 4, "val": 0, "test": 2}, size=8)
    write_shards(root, tmp_path / "s", workers=1, progress=False, skip_bad=True)  # records the empty split
    with pytest.raises(ValueError, match="the val split of .* is empty"):
        make(tmp_path / "s", "off")


def test_a_failed_decode_leaves_no_store(shards, store, monkeypatch):
    def broken(job):
        raise OSError("disk gone")

    monkeypatch.setattr(resident, "_decode_shard", broken)
    with pytest.raises(OSError, match="disk gone"):
        make(shards, "host")
    assert list(store.iterdir()) == []


def test_bench_data_reports_bytes_read_per_rank(shards):
    from demakeup_dist.data.bench_data import bench_data

    result = bench_data(shards, batch_size=2, world_size=2)
    ranks = result["bytes_read_per_rank_per_epoch"]
    assert ranks["world_size"] == 2 and len(ranks["bytes"]) == 2
    assert 0 < ranks["max_over_share"] <= 1.2
    assert set(result["read_samples_per_s_per_worker"]) == {"without_hr", "with_hr"}


def test_deferred_hr_decoding_gives_the_same_batches(shards):
    """The nvJPEG plumbing, with a CPU stand-in for the decoder: workers pass the HR JPEG bytes on,
    the feed decodes them into their rows (flipped as planned); PNG members stay with the workers."""
    from demakeup_dist.data.codec import decode_rgb

    calls = []

    def cpu_decoder(data):
        calls.append(len(data))
        return [torch.from_numpy(decode_rgb(t.numpy().tobytes(), "jpg")).permute(2, 0, 1) for t in data]

    plain, deferred = make(shards, "off"), make(shards, "off", hr_decoder=cpu_decoder)
    assert "HR JPEGs decoded on the GPU" in deferred.describe()
    assert "HR decoded by the CPU workers (no CUDA device)" in plain.describe()
    assert_same(list(plain.train(seed=3, epoch=1)), list(deferred.train(seed=3, epoch=1)))
    assert_same(list(plain.eval("val")), list(deferred.eval("val")))
    assert calls and sum(calls) < 13 + 5  # the fixture alternates JPEG and PNG: only the JPEGs deferred


def test_a_killed_runs_leftover_store_is_removed(shards, store):
    leftover = temporary_name(store / "demakeup-0123456789ab-run1-n0-train-hr.u8")
    leftover.write_bytes(b"half a store")
    other_run = store / "demakeup-0123456789ab-run2-n0-train-hr.u8"
    other_run.write_bytes(b"someone else's")
    make(shards, "host", token="run1")
    assert not leftover.exists() and other_run.exists()
