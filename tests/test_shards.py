"""Packing into webdataset shards, the manifest, verification and the CLI (real tar files, tiny images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
import webdataset as wds
from conftest import write_image
from typer.testing import CliRunner

from demakeup_dist import __version__
from demakeup_dist.data import shards
from demakeup_dist.data.codec import decode_rgb, open_rgb
from demakeup_dist.data.shards import DatasetProblems, load_manifest, write_shards
from demakeup_dist.data.verify import verify_shards
from launcher import data_cli

FOLDERS = {"makeup": "makeup", "non_makeup": "non-makeup", "hr": "high_r"}


def pack(src: Path, out: Path, **kwargs) -> dict:
    return write_shards(src, out, workers=1, progress=False, **kwargs)


def read_split(out: Path, manifest: dict, split: str) -> list[dict]:
    urls = [{"url": str(out / s["name"])} for s in manifest["splits"][split]["shards"]]
    return list(wds.tarfile_samples(urls))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_round_trip_is_pixel_exact_and_keeps_original_bytes(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 5, "val": 2, "test": 1}, size=8, names=[" a b.jpg", " é 顔.png"])
    write_image(root / "train/makeup/001 é 顔.png", 8, seed=3, mode="RGBA")
    write_image(root / "train/high_r/002 a b.jpg", 32, seed=4, mode="L")
    out = tmp_path / "out"
    manifest = pack(root, out, samples_per_shard=2)
    assert [s["name"] for s in manifest["splits"]["train"]["shards"]] == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    samples = read_split(out, manifest, "train")
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002", "000003", "000004"]
    for sample in samples:
        name = sample["name.txt"].decode("utf-8")
        for role, folder in FOLDERS.items():
            source = (root / "train" / folder / name).read_bytes()
            (member,) = [k for k in sample if k.startswith(role + ".")]
            assert np.array_equal(decode_rgb(sample[member], member[-3:]), np.asarray(open_rgb(source)))
            converted = (name, role) in {("001 é 顔.png", "makeup"), ("002 a b.jpg", "hr")}
            assert member == (f"{role}.png" if converted else f"{role}.{'jpg' if name.endswith('jpg') else 'png'}")
            assert (sample[member] == source) != converted  # RGB JPEG/PNG byte for byte, others re-encoded


def test_manifest_records_sizes_counts_and_checksums(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 3, "val": 2, "test": 2}, size=8)
    manifest = pack(root, tmp_path / "out")
    assert load_manifest(tmp_path / "out") == manifest
    assert manifest["tool_version"] == __version__ and manifest["source"] == str(root.resolve())
    assert (manifest["image_size"], manifest["hr_size"], manifest["has_hr"]) == (8, 32, True)
    train = manifest["splits"]["train"]
    assert train["samples"] == 3 and train["skipped"] == [] and train["hr_folder"] == "high_r"
    (shard,) = train["shards"]
    assert shard["samples"] == 3 and shard["bytes"] == (tmp_path / "out" / shard["name"]).stat().st_size
    assert len(shard["sha256"]) == 64


def test_shard_bytes_do_not_depend_on_workers(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=5, size=8)
    one = pack(root, tmp_path / "one", samples_per_shard=2)
    two = write_shards(root, tmp_path / "two", workers=2, progress=False, samples_per_shard=2)
    assert one["splits"] == two["splits"]


def test_dataset_without_hr(make_dataset, tmp_path):
    manifest = pack(make_dataset(tmp_path, n=2, size=8, hr_folder=None), tmp_path / "out")
    assert (manifest["has_hr"], manifest["hr_size"]) == (False, None)
    sample = read_split(tmp_path / "out", manifest, "val")[0]
    assert {k for k in sample if not k.startswith("__")} == {"makeup.jpg", "non_makeup.jpg", "name.txt"}


def test_bad_dataset_is_refused_and_nothing_is_left(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=3, size=8)
    (root / "train/makeup/001.png").write_text("oops")
    (root / "test/high_r/000.jpg").unlink()
    with pytest.raises(DatasetProblems) as error:
        pack(root, tmp_path / "out")
    message = str(error.value)
    assert "train/makeup/001.png: not an image" in message
    assert "test/makeup/000.jpg: missing partner: no test/high_r/000.jpg" in message
    assert "--skip-bad" in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_skip_bad_packs_the_rest_and_records_every_skipped_file(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 3, "val": 0, "test": 2}, size=8)
    write_image(root / "train/non-makeup/002.jpg", 9, seed=1)
    manifest = pack(root, tmp_path / "out", skip_bad=True)
    train = manifest["splits"]["train"]
    assert train["samples"] == 2
    assert {s["name.txt"] for s in read_split(tmp_path / "out", manifest, "train")} == {b"000.jpg", b"001.png"}
    skipped = {s["file"]: s["reason"] for s in train["skipped"]}
    assert skipped["train/non-makeup/002.jpg"].startswith("wrong size: 9x9, expected 8x8")
    assert set(skipped) == {"train/non-makeup/002.jpg", "train/makeup/002.jpg", "train/high_r/002.jpg"}
    val = manifest["splits"]["val"]
    assert val["samples"] == 0 and val["shards"] == [] and "empty split" in val["skipped"][0]["reason"]


def test_empty_train_is_refused_even_with_skip_bad(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 1, "val": 1, "test": 1}, size=8)
    (root / "train/makeup/000.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="no valid triplet left"):
        pack(root, tmp_path / "out", skip_bad=True)
    assert leftovers(tmp_path) == []


def test_existing_output_needs_overwrite_and_foreign_folders_are_never_replaced(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=2, size=8)
    out = tmp_path / "out"
    pack(root, out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        pack(root, out)
    (out / "stale.tar").write_bytes(b"")
    pack(root, out, overwrite=True)
    assert not (out / "stale.tar").exists() and leftovers(tmp_path) == []
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a shard set"):
        pack(root, foreign, overwrite=True)
    assert (foreign / "keep.jpg").exists()
    (tmp_path / "empty").mkdir()
    pack(root, tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").exists()


def test_interrupted_write_leaves_no_complete_looking_set(make_dataset, tmp_path, monkeypatch):
    root = make_dataset(tmp_path, n=4, size=8)
    out = tmp_path / "out"
    pack(root, out, samples_per_shard=1)
    before = load_manifest(out)
    real = shards._write_shard
    calls = []

    def interrupted(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(shards, "_write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack(root, out, samples_per_shard=1, overwrite=True)
    assert load_manifest(out) == before and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        pack(root, tmp_path / "new", samples_per_shard=1)
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


def test_verify_passes_then_catches_a_flipped_byte(make_dataset, tmp_path):
    out = tmp_path / "out"
    pack(make_dataset(tmp_path, n=4, size=8), out, samples_per_shard=2)
    assert verify_shards(out, workers=1, progress=False)["samples"] == {"train": 4, "val": 4, "test": 4}
    shard = out / "val-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="val-000001.tar: sha256 differs") as error:
        verify_shards(out, workers=2, progress=False)
    assert "train-" not in str(error.value)


def test_verify_catches_missing_and_unlisted_shards(make_dataset, tmp_path):
    out = tmp_path / "out"
    pack(make_dataset(tmp_path, n=2, size=8), out)
    (out / "test-000000.tar").rename(out / "test-000009.tar")
    with pytest.raises(ValueError) as error:
        verify_shards(out, workers=1, progress=False)
    assert "test-000000.tar: missing" in str(error.value)
    assert "test-000009.tar: not listed in manifest.json" in str(error.value)


def test_load_manifest_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no manifest.json in .*run `demakeup shard SRC --out"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="damaged"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a demakeup-shards"):
        load_manifest(tmp_path)


def cli() -> typer.Typer:
    app = typer.Typer()
    data_cli.register(app)
    return app


def test_cli_shard_and_verify_exit_codes(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=2, size=8)
    out = tmp_path / "out"
    runner = CliRunner()
    ok = runner.invoke(cli(), ["shard", str(root), "--out", str(out), "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert "train: 2 triplets in 1 shard(s)" in ok.output
    assert runner.invoke(cli(), ["verify", str(out), "--workers", "1"]).exit_code == 0
    (root / "val/non-makeup/001.png").write_bytes(b"garbage")
    bad = runner.invoke(cli(), ["shard", str(root), "--out", str(tmp_path / "bad"), "--workers", "1"])
    assert bad.exit_code != 0 and "val/non-makeup/001.png: not an image" in bad.output
    missing = runner.invoke(cli(), ["verify", str(tmp_path / "bad")])
    assert missing.exit_code != 0 and "no manifest.json" in missing.output
