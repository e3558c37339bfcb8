"""Pairing and validation of a dataset in the course layout (demakeup_dist.data.scan)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_image

from demakeup_dist.data.scan import check_dataset


def check(root: Path, **kwargs):
    return check_dataset(root, workers=1, progress=False, **kwargs)


def problems_of(dataset) -> dict[str, str]:
    return {p.file: p.reason for p in dataset.problems}


def test_clean_dataset_pairs_every_triplet(make_dataset, tmp_path):
    dataset = check(make_dataset(tmp_path, n={"train": 4, "val": 2, "test": 1}, size=8))
    assert dataset.problems == []
    assert dataset.size == 8
    train = dataset.splits[0]
    assert [t.name for t, _ in train.triplets] == ["000.jpg", "001.png", "002.jpg", "003.png"]
    assert [len(s.triplets) for s in dataset.splits] == [4, 2, 1]
    _, infos = train.triplets[1]
    assert infos["hr"].size == (32, 32) and infos["makeup"].ext == "png" and not infos["makeup"].convert


def test_names_with_spaces_and_non_ascii_pair(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=2, size=8, names=[" café à la crème.JPEG", " 顔 写真.png"])
    dataset = check(root)
    assert dataset.problems == []
    assert [t.name for t, _ in dataset.splits[0].triplets] == ["000 café à la crème.JPEG", "001 顔 写真.png"]


def test_missing_partner_names_both_present_files(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=3, size=8)
    (root / "train/non-makeup/001.png").unlink()
    problems = problems_of(check(root))
    reason = "missing partner: no train/non-makeup/001.png"
    assert problems == {"train/makeup/001.png": reason, "train/high_r/001.png": reason}


def test_truncated_jpeg_and_text_file_named_jpg(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=3, size=32)
    jpeg = root / "train/makeup/000.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (root / "val/high_r/002.jpg").write_text("not a picture")
    problems = problems_of(check(root))
    assert set(problems) == {"train/makeup/000.jpg", "val/high_r/002.jpg"}
    assert problems["train/makeup/000.jpg"].startswith("undecodable") and "truncated" in problems["train/makeup/000.jpg"].lower()
    assert problems["val/high_r/002.jpg"].startswith("not an image")


def test_unsupported_extension_is_not_an_image(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=1, size=8)
    (root / "test/makeup/notes.txt").write_text("hello")
    (root / "test/makeup/.DS_Store").write_bytes(b"\0")  # hidden files are not data
    assert problems_of(check(root)) == {"test/makeup/notes.txt": "not an image (extension '.txt'; expected "
                                                                ".jpg, .jpeg or .png)"}


def test_wrong_sizes_name_the_file_and_the_expected_size(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=3, size=8)
    write_image(root / "train/non-makeup/001.png", 10, seed=5)
    write_image(root / "val/high_r/000.jpg", 24, seed=6)  # 3x instead of 4x
    dataset = check(root)
    problems = problems_of(dataset)
    assert problems["train/non-makeup/001.png"].startswith("wrong size: 10x10, expected 8x8")
    assert problems["val/high_r/000.jpg"] == "wrong size: 24x24, expected 32x32 (4x the input)"
    skipped = {p.file: p.reason for p in dataset.splits[0].skipped}
    assert skipped["train/makeup/001.png"] == "skipped with its bad partner train/non-makeup/001.png"


def test_pinned_size_rejects_other_sizes(make_dataset, tmp_path):
    dataset = check(make_dataset(tmp_path, n=1, size=8), size=16)
    assert dataset.size == 16
    assert problems_of(dataset)["train/makeup/000.jpg"] == "wrong size: 8x8, expected 16x16"


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_non_rgb_images_are_converted_not_rejected(make_dataset, tmp_path, mode):
    root = make_dataset(tmp_path, n=2, size=8)
    name = "000.jpg" if mode in ("L", "CMYK") else "001.png"
    write_image(root / "train/makeup" / name, 8, seed=7, mode=mode)
    dataset = check(root)
    assert dataset.problems == []
    infos = dict((t.name, i) for t, i in dataset.splits[0].triplets)[name]
    assert infos["makeup"].convert and infos["makeup"].ext == "png"
    assert not infos["non_makeup"].convert


def test_empty_split_is_a_problem(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n={"train": 2, "val": 0, "test": 1}, size=8)
    assert list(problems_of(check(root))) == ["val/"]
    assert "empty split" in problems_of(check(root))["val/"]


def test_hr_image_folder_name_and_missing_hr(make_dataset, tmp_path):
    dataset = check(make_dataset(tmp_path, n=2, size=8, hr_folder="hr_image"))
    assert dataset.problems == [] and all(s.hr_folder == "hr_image" for s in dataset.splits)
    no_hr = check(make_dataset(tmp_path / "b", n=2, size=8, hr_folder=None))
    assert no_hr.problems == [] and all(s.hr_folder is None for s in no_hr.splits)
    assert set(no_hr.splits[0].triplets[0][0].files) == {"makeup", "non_makeup"}


def test_both_hr_folder_names_is_an_error(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=1, size=8)
    (root / "train/hr_image").mkdir()
    with pytest.raises(ValueError, match="both high_r/ and hr_image/"):
        check(root)


def test_not_a_dataset_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check(tmp_path / "nope")
    with pytest.raises(ValueError, match="no train/, val/ or test/"):
        check(tmp_path)


def test_parallel_validation_gives_the_same_result(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=6, size=8)
    (root / "train/makeup/003.png").write_text("broken")
    serial = check(root)
    parallel = check_dataset(root, workers=2, progress=False)
    assert parallel.problems == serial.problems
    assert [[t.name for t, _ in s.triplets] for s in parallel.splits] == [[t.name for t, _ in s.triplets]
                                                                          for s in serial.splits]
