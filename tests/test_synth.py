"""Synthetic dataset: layout, sizes, determinism, makeup placement, HR detail, bad input."""

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from demakeup_dist.data import synth
from demakeup_dist.data.synth import area_downsample, render_sample, sample_rng, synth_dataset
from launcher import synth_cli

FOLDERS = ("makeup", "non-makeup", "high_r")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR with max value 1.0 of two uint8 images (the training metric)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")


def samples(n: int, size: int) -> list[dict[str, np.ndarray]]:
    return [render_sample(sample_rng(7, "train", i), size) for i in range(n)]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.mark.parametrize("size", [32, 64])
def test_render_sample_shapes_and_exact_downsample(size):
    s = render_sample(np.random.default_rng(0), size)
    assert s["makeup"].shape == s["non_makeup"].shape == (size, size, 3)
    assert s["hr"].shape == (4 * size, 4 * size, 3)
    assert all(v.dtype == np.uint8 for v in s.values())
    np.testing.assert_array_equal(area_downsample(s["hr"]), s["makeup"])
    assert not np.array_equal(s["makeup"], s["non_makeup"])


def test_makeup_changes_the_face_not_the_background():
    inside, outside = [], []
    for s in samples(6, 64):
        diff = np.abs(s["makeup"].astype(float) - s["non_makeup"].astype(float)).mean(axis=-1)
        box = np.zeros(diff.shape, bool)
        box[16:48, 16:48] = True  # the face fills the centre of the frame
        inside.append(diff[box].mean())
        outside.append(diff[~box].mean())
    assert np.mean(inside) > 4 * np.mean(outside)
    assert min(inside) > 0.5  # every face wears visible makeup


def test_identity_psnr_leaves_room_to_learn():
    values = [psnr(s["makeup"], s["non_makeup"]) for s in samples(8, 64)]
    assert 18 < np.mean(values) < 40, values


def test_hr_holds_detail_that_bicubic_upsampling_misses():
    for s in samples(3, 32):
        up = np.asarray(Image.fromarray(s["makeup"]).resize((128, 128), Image.BICUBIC))
        assert 20 < psnr(up, s["hr"]) < 45  # close, but far from identical


def test_dataset_layout_names_and_sizes(tmp_path):
    out = synth_dataset(tmp_path / "data", train=3, val=2, test=1, size=32, workers=1, progress=False)
    assert out == tmp_path / "data"
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        names = [sorted(p.name for p in (out / split / f).iterdir()) for f in FOLDERS]
        assert names[0] == names[1] == names[2] == [f"{i:06d}.jpg" for i in range(n)]
        for folder, side in zip(FOLDERS, (32, 32, 128)):
            with Image.open(out / split / folder / "000000.jpg") as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (side, side))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left
    hr = np.asarray(Image.open(out / "train/high_r/000001.jpg"))
    # both sides went through JPEG, which costs a few dB at 32 px; a wrong image scores ~15 dB
    assert psnr(area_downsample(hr), np.asarray(Image.open(out / "train/makeup/000001.jpg"))) > 32


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    kw = dict(train=3, val=1, test=1, size=32, progress=False)
    one = files(synth_dataset(tmp_path / "a", seed=3, workers=1, **kw))
    two = files(synth_dataset(tmp_path / "b", seed=3, workers=2, **kw))
    other = files(synth_dataset(tmp_path / "c", seed=4, workers=1, **kw))
    assert len(one) == 15 and one == two
    assert one.keys() == other.keys()
    assert all(one[k] != other[k] for k in one)


@pytest.mark.parametrize("size", [0, 48, 100, -32])
def test_size_not_multiple_of_32_is_refused(tmp_path, size):
    with pytest.raises(ValueError, match="multiple of 32"):
        synth_dataset(tmp_path / "data", train=1, val=0, test=0, size=size, workers=1, progress=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        render_sample(np.random.default_rng(0), size)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("counts", [dict(train=-1, val=1, test=1), dict(train=0, val=0, test=0)])
def test_bad_counts_are_refused(tmp_path, counts):
    with pytest.raises(ValueError, match="counts"):
        synth_dataset(tmp_path / "data", size=32, workers=1, progress=False, **counts)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        synth_dataset(out, train=1, val=0, test=0, size=32, workers=1, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    synth_dataset(out, train=1, val=0, test=0, size=32, workers=1, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "train/makeup/000000.jpg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_output_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "data"
    out.write_text("not a folder")
    with pytest.raises(FileExistsError, match="not a folder"):
        synth_dataset(out, train=1, val=0, test=0, size=32, workers=1, progress=False, overwrite=True)


def test_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "data").mkdir()
    synth_dataset(tmp_path / "data", train=1, val=0, test=0, size=32, workers=1, progress=False)
    assert (tmp_path / "data/train/high_r/000000.jpg").exists()


def test_failure_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def fail_on_second(rng, size):
        calls.append(size)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return render_sample(rng, size)

    monkeypatch.setattr(synth, "render_sample", fail_on_second)
    with pytest.raises(RuntimeError, match="boom"):
        synth_dataset(tmp_path / "data", train=3, val=0, test=0, size=32, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `synth` a subcommand, as in the real `demakeup` app
    synth_cli.register(app)
    return app


def test_cli_writes_dataset_and_reports_bad_size(tmp_path):
    runner = CliRunner()
    args = ["synth", str(tmp_path / "data"), "--train", "2", "--val", "1", "--test", "1", "--workers", "1"]
    ok = runner.invoke(cli(), [*args, "--size", "32"])
    assert ok.exit_code == 0, ok.output
    assert "wrote 4 triplets" in ok.output
    assert len(list((tmp_path / "data").rglob("*.jpg"))) == 12
    again = runner.invoke(cli(), [*args, "--size", "32"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(cli(), [*args, "--size", "50", "--overwrite"])
    assert bad.exit_code == 2 and "multiple of 32" in bad.output
