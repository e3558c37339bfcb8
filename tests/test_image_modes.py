"""Every pixel format Pillow opens reaches training and prediction as the same 8-bit RGB picture:
high bit depths scaled (not clipped), transparency on white, EXIF orientation applied."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.scan import check_dataset
from demakeup_dist.data.shards import DatasetProblems, write_shards
from demakeup_dist.infer.photos import load_photo

S = 16
_RNG = np.random.default_rng(0)
GRAY = _RNG.integers(0, 256, (S, S), dtype=np.uint8)
RGB = _RNG.integers(0, 256, (S, S, 3), dtype=np.uint8)
ALPHA = np.where(_RNG.random((S, S)) < 0.5, 0, 255).astype(np.uint8)  # fully transparent or opaque
WHITE = np.full((S, S, 3), 255, np.uint8)


def _on_white(rgb: np.ndarray) -> np.ndarray:
    return np.where(ALPHA[..., None] == 255, rgb, WHITE)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _case(mode: str) -> tuple[Image.Image, str, np.ndarray]:
    """(image in `mode`, format to save it in, the RGB pixels training and predict must see)."""
    palette = Image.fromarray(RGB).quantize(16)
    if mode == "1":
        bits = GRAY > 127
        return Image.fromarray(bits), "PNG", _gray3(np.where(bits, 255, 0).astype(np.uint8))
    if mode == "L":
        return Image.fromarray(GRAY), "PNG", _gray3(GRAY)
    if mode == "LA":
        return Image.fromarray(np.dstack([GRAY, ALPHA]), "LA"), "PNG", _on_white(_gray3(GRAY))
    if mode == "P":
        return palette, "PNG", np.asarray(palette.convert("RGB"))
    if mode == "PA":
        pa = palette.convert("PA")
        pa.putalpha(Image.fromarray(ALPHA))
        return pa, "TIFF", _on_white(np.asarray(palette.convert("RGB")))
    if mode in ("I", "I;16"):
        wide = (np.arange(S * S).reshape(S, S) * 257).astype(np.uint16)  # the full 16-bit range
        image = Image.fromarray(wide.astype(np.int32), "I") if mode == "I" else Image.fromarray(wide)
        return image, "TIFF" if mode == "I" else "PNG", _gray3(((wide.astype(int) + 128) // 257).astype(np.uint8))
    if mode == "F":
        unit = GRAY.astype(np.float32) / 255
        return Image.fromarray(unit, "F"), "TIFF", _gray3(GRAY)
    if mode == "RGB":
        return Image.fromarray(RGB), "PNG", RGB
    if mode == "RGBA":
        return Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), "PNG", _on_white(RGB)
    if mode in ("CMYK", "YCbCr"):
        image = Image.fromarray(RGB).convert(mode)
        return image, "TIFF", np.asarray(image.convert("RGB"))
    raise AssertionError(mode)


def _dataset_with(make_dataset, tmp_path: Path, makeup: Image.Image, fmt: str) -> Path:
    root = make_dataset(tmp_path, n=1, size=S, names=[".png"])
    path = root / "train" / "makeup" / "000.png"
    makeup.save(path, format=fmt)  # the content decides, not the extension
    return root


def _stored_makeup(shards: Path) -> np.ndarray:
    with tarfile.open(shards / "train-000000.tar") as tar:
        member = next(m for m in tar.getmembers() if ".makeup." in m.name)
        return decode_rgb(tar.extractfile(member).read(), member.name.rsplit(".", 1)[-1])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "I", "I;16", "F", "RGB", "RGBA", "CMYK", "YCbCr"])
def test_every_mode_trains_and_predicts_as_the_same_rgb(make_dataset, tmp_path, mode):
    image, fmt, expected = _case(mode)
    root = _dataset_with(make_dataset, tmp_path, image, fmt)
    assert Image.open(root / "train/makeup/000.png").mode == mode
    write_shards(root, tmp_path / "shards", workers=1, progress=False)
    np.testing.assert_array_equal(_stored_makeup(tmp_path / "shards"), expected)
    np.testing.assert_array_equal(load_photo(root / "train/makeup/000.png"), expected)


def test_16_bit_gray_from_the_issue_is_scaled_not_whitened(make_dataset, tmp_path):
    wide = (np.arange(1024).reshape(32, 32) * 60).astype(np.uint16)
    root = make_dataset(tmp_path, n=1, size=32, names=[".png"])
    Image.fromarray(wide).save(root / "train/makeup/000.png")
    write_shards(root, tmp_path / "shards", workers=1, progress=False)
    stored = _stored_makeup(tmp_path / "shards")
    assert (stored == 255).mean() < 0.01
    np.testing.assert_array_equal(stored[..., 0], (wide.astype(int) + 128) // 257)


def test_exif_rotated_jpeg_is_stored_as_displayed(make_dataset, tmp_path):
    stored = np.zeros((S, S, 3), np.uint8)
    stored[:, : S // 2] = [255, 0, 0]  # left half red: orientation 6 shows it on top
    exif = Image.Exif()
    exif[0x0112] = 6
    root = make_dataset(tmp_path, n=1, size=S, names=[".jpg"])
    Image.fromarray(stored).save(root / "train/makeup/000.jpg", exif=exif, quality=100)
    write_shards(root, tmp_path / "shards", workers=1, progress=False)
    trained = _stored_makeup(tmp_path / "shards")
    np.testing.assert_array_equal(trained, load_photo(root / "train/makeup/000.jpg"))
    assert trained[: S // 2, :, 0].mean() > 200 and trained[S // 2:, :, 0].mean() < 50


def test_float_pixels_outside_unit_range_are_refused_by_mode(make_dataset, tmp_path):
    root = _dataset_with(make_dataset, tmp_path, Image.fromarray(GRAY.astype(np.float32), "F"), "TIFF")
    with pytest.raises(DatasetProblems, match=r"train/makeup/000.png: unsupported: pixel mode F \(32-bit float\)"):
        write_shards(root, tmp_path / "shards", workers=1, progress=False)
    with pytest.raises(ValueError, match="pixel mode F"):
        load_photo(root / "train/makeup/000.png")


def test_predict_takes_a_photo_over_16_megapixels(tmp_path):
    """Predict once refused photos over 4096x4096; whole-image mode now runs them in tiles."""
    Image.new("L", (4097, 4097), 7).save(tmp_path / "huge.png")
    photo = load_photo(tmp_path / "huge.png")
    assert photo.shape == (4097, 4097, 3) and (photo == 7).all()


def _problems(root: Path) -> dict[str, str]:
    return {p.file: p.reason for p in check_dataset(root, workers=1, progress=False).problems}


def test_hidden_image_is_recorded_as_skipped(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=1, size=S)
    Image.fromarray(RGB).save(root / "train/makeup/.hidden.png")
    manifest = write_shards(root, tmp_path / "shards", workers=1, progress=False)
    skipped = manifest["splits"]["train"]["skipped"]
    assert [s["file"] for s in skipped] == ["train/makeup/.hidden.png"]
    assert "hidden file" in skipped[0]["reason"]


def test_non_utf8_file_name_is_named_and_skippable(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=2, size=S)
    bad = b"caf\xe9.png"  # Latin-1, not UTF-8
    for folder in ("makeup", "non-makeup", "high_r"):
        source = root / "train" / folder / "000.jpg"
        source.rename(Path(bytes(root / "train" / folder).decode()) / bad.decode("utf-8", "surrogateescape"))
    assert _problems(root)["train/makeup/caf\\xe9.png"].startswith("the file name is not valid UTF-8")
    manifest = write_shards(root, tmp_path / "shards", skip_bad=True, workers=1, progress=False)
    assert manifest["splits"]["train"]["samples"] == 1
    assert "train/makeup/caf\\xe9.png" in [s["file"] for s in manifest["splits"]["train"]["skipped"]]


def test_broken_symlink_is_reported_as_such(make_dataset, tmp_path):
    root = make_dataset(tmp_path, n=1, size=S)
    (root / "train/makeup/000.jpg").unlink()
    (root / "train/makeup/000.jpg").symlink_to(tmp_path / "gone.jpg")
    assert _problems(root)["train/makeup/000.jpg"] == f"broken symbolic link (to {tmp_path / 'gone.jpg'})"
