"""The predict pixel pipeline in whole-image mode, checked exactly with fake models whose outputs are
known per pixel (they never find a face: random pixels, and no training size recorded)."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from demakeup_dist.infer.photos import load_photo
from demakeup_dist.infer.predict import predict_files
from demakeup_dist.infer.runner import crop_back, pad_to_multiple


class Invert(torch.nn.Module):
    """de-makeup = 1 - x; remembers the input shapes it saw."""

    tasks = ("demakeup",)

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        assert not self.training and not torch.is_grad_enabled()
        return {"demakeup": 1 - x}


class InvertAndUpsample(Invert):
    """p4-like: also sr = nearest 4x upsampling of x."""

    tasks = ("demakeup", "sr")

    def forward(self, x):
        return {**super().forward(x), "sr": F.interpolate(x, scale_factor=4, mode="nearest")}


def _random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read(path):
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------- load_photo


def test_load_photo_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red channel under the alpha
    rgba[0, :, 3] = 255  # opaque top row
    rgba[1, :, 3] = 0  # fully transparent row
    rgba[2:, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = load_photo(tmp_path / "a.png")
    assert got.shape == (4, 5, 3) and got.dtype == np.uint8
    assert (got[0] == [200, 0, 0]).all()
    assert (got[1] == [255, 255, 255]).all()
    assert np.allclose(got[2].astype(int), [228, 127, 127], atol=1)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1"])
def test_load_photo_converts_other_modes_to_rgb(tmp_path, mode):
    Image.fromarray(_random_rgb(6, 7)).convert(mode).save(tmp_path / "x.tiff")
    got = load_photo(tmp_path / "x.tiff")
    assert got.shape == (6, 7, 3) and got.dtype == np.uint8
    if mode in ("L", "1"):
        assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_load_photo_16bit_gray_is_scaled_not_clipped(tmp_path):
    gray16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g.png")
    assert load_photo(tmp_path / "g.png")[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("orientation, top_color", [(6, "red"), (8, "blue")])
def test_load_photo_applies_exif_rotation(tmp_path, orientation, top_color):
    """Stored 40 wide x 20 high, left half red; orientation 6 (rotate 90 CW to display) puts the
    left half on top, 8 (90 CCW) at the bottom."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = [255, 0, 0]
    stored[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    got = load_photo(tmp_path / "r.jpg")
    assert got.shape == (40, 20, 3)
    top, bottom = got[5:15].mean(axis=(0, 1)), got[25:35].mean(axis=(0, 1))
    red_on_top = top[0] > 200 and top[2] < 50 and bottom[2] > 200
    assert red_on_top == (top_color == "red")


def test_load_photo_not_an_image_names_the_file(tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not a picture")
    with pytest.raises(ValueError, match=r"holiday\.jpg: not a readable image"):
        load_photo(fake)


def test_load_photo_truncated_jpeg_is_not_readable(tmp_path):
    Image.fromarray(_random_rgb(64, 64)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable image"):
        load_photo(tmp_path / "t.jpg")


def test_load_photo_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_photo(tmp_path / "nope.png")


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("h, w", [(37, 50), (64, 32), (5, 70), (1, 1)])
def test_pad_to_multiple_and_crop_back_roundtrip(h, w):
    x = torch.rand(1, 3, h, w)
    padded, size = pad_to_multiple(x)
    assert size == (h, w)
    assert padded.shape[-2] % 32 == 0 and padded.shape[-1] % 32 == 0
    assert padded.shape[-2] - h < 32 and padded.shape[-1] - w < 32
    assert torch.equal(crop_back(padded, size), x)


def test_pad_reflects_when_possible():
    x = torch.arange(30.0).view(1, 1, 1, 30).expand(1, 1, 30, 30)
    padded, _ = pad_to_multiple(x)
    assert padded[0, 0, 0, 30].item() == 28.0 and padded[0, 0, 0, 31].item() == 27.0


def test_pad_to_multiple_rejects_bad_m():
    with pytest.raises(ValueError, match="m must be"):
        pad_to_multiple(torch.rand(1, 3, 8, 8), m=0)


# ---------------------------------------------------------------- predict_files


def test_predict_odd_size_exact_pixels(tmp_path):
    src = _random_rgb(37, 50)
    Image.fromarray(src).save(tmp_path / "face.png")
    model = Invert()
    written = predict_files(model, [tmp_path / "face.png"], tmp_path / "out").written
    assert written == [tmp_path / "out" / "face_demakeup.png", tmp_path / "out" / "face_faces.json"]
    assert model.shapes == [(1, 3, 64, 64)]
    np.testing.assert_array_equal(_read(written[0]), 255 - src)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_demakeup.png", "face_faces.json"]  # no temp


def test_predict_rounds_half_up_like_every_picture(tmp_path):
    class Constant(torch.nn.Module):
        def forward(self, x):
            return {"demakeup": torch.full_like(x, 2.5 / 255)}  # 2.5 levels: round() would write 2

    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "face.png")
    written = predict_files(Constant(), [tmp_path / "face.png"], tmp_path / "out").written
    assert (_read(written[0]) == 3).all()


def test_predict_rgba_and_grayscale_inputs(tmp_path):
    gray = _random_rgb(33, 40)[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    rgba = np.dstack([_random_rgb(20, 21, seed=1), np.full((20, 21), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = tmp_path / "out"
    predict_files(Invert(), [tmp_path / "gray.png", tmp_path / "rgba.png"], out)
    np.testing.assert_array_equal(_read(out / "gray_demakeup.png"), 255 - np.dstack([gray] * 3))
    np.testing.assert_array_equal(_read(out / "rgba_demakeup.png"), 255 - rgba[..., :3])


def test_predict_exif_rotated_output_in_displayed_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_random_rgb(20, 40)).save(tmp_path / "rot.jpg", exif=exif)
    predict_files(Invert(), [tmp_path / "rot.jpg"], tmp_path / "out")
    assert Image.open(tmp_path / "out" / "rot_demakeup.png").size == (20, 40)  # (width, height) as displayed


def test_predict_p4_writes_both_outputs_at_4x(tmp_path):
    src = _random_rgb(37, 50)
    Image.fromarray(src).save(tmp_path / "face.jpg", quality=100)
    decoded = load_photo(tmp_path / "face.jpg")
    written = predict_files(InvertAndUpsample(), [tmp_path / "face.jpg"], tmp_path / "out").written
    assert [p.name for p in written] == ["face_demakeup.png", "face_sr4x.png", "face_faces.json"]
    np.testing.assert_array_equal(_read(written[0]), 255 - decoded)
    sr = _read(written[1])
    assert sr.shape == (148, 200, 3)
    np.testing.assert_array_equal(sr, decoded.repeat(4, axis=0).repeat(4, axis=1))


def test_predict_tasks_override_and_unknown(tmp_path):
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "a.png")
    written = predict_files(InvertAndUpsample(), [tmp_path / "a.png"], tmp_path / "o", tasks=["sr"]).written
    assert [p.name for p in written] == ["a_sr4x.png", "a_faces.json"]
    with pytest.raises(ValueError, match="not the requested task 'sr'"):
        predict_files(Invert(), [tmp_path / "a.png"], tmp_path / "o", tasks=["sr"])
    with pytest.raises(ValueError, match="unknown task"):
        predict_files(Invert(), [tmp_path / "a.png"], tmp_path / "o", tasks=["colorize"])


def test_predict_directory_sorted_and_non_images_reported(tmp_path, caplog):
    src = tmp_path / "photos"
    src.mkdir()
    for name, (h, w) in {"b.png": (30, 30), "a.png": (20, 25), "c.png": (40, 40)}.items():
        Image.fromarray(_random_rgb(h, w)).save(src / name)
    (src / "notes.txt").write_text("hello")
    model = Invert()
    with caplog.at_level(logging.WARNING):
        written = predict_files(model, [src], tmp_path / "out", batch_size=4).written
    assert [p.name for p in written if p.suffix == ".png"] == ["a_demakeup.png", "b_demakeup.png", "c_demakeup.png"]
    assert "notes.txt" in caplog.text
    assert model.shapes == [(1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 64, 64)]
    assert _read(tmp_path / "out" / "b_demakeup.png").shape == (30, 30, 3)


def test_predict_bad_files_fail_before_anything_is_written(tmp_path):
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "good.png")
    (tmp_path / "fake.jpg").write_text("text, not JPEG")
    (tmp_path / "also.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError) as err:
        predict_files(Invert(), [tmp_path], tmp_path / "out")
    assert "fake.jpg: not a readable image" in str(err.value)
    assert "also.png: not a readable image" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_predict_same_stem_collision_and_missing_input(tmp_path):
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "x.png")
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="same name stem 'x'"):
        predict_files(Invert(), [tmp_path / "x.png", tmp_path / "x.jpg"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predict_files(Invert(), [tmp_path / "missing.png"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files found"):
        predict_files(Invert(), [tmp_path / "empty"], tmp_path / "out")


def test_predict_rejects_model_with_wrong_output_shape(tmp_path):
    class Shrinks(torch.nn.Module):
        def forward(self, x):
            return {"demakeup": x[..., :-1]}

    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="model output 'demakeup' has shape"):
        predict_files(Shrinks(), [tmp_path / "a.png"], tmp_path / "out")


def test_predict_skip_bad_names_each_unreadable_file_and_goes_on(tmp_path, caplog):
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "good.png")
    (tmp_path / "fake.jpg").write_text("text, not JPEG")
    (tmp_path / "also.png").write_bytes(b"\x89PNG broken")
    with caplog.at_level(logging.WARNING):
        done = predict_files(Invert(), [tmp_path], tmp_path / "out", skip_bad=True)
    assert [p.name for p in done.written] == ["good_demakeup.png", "good_faces.json"]
    assert len(done.skipped) == 2 and "fake.jpg: not a readable image" in caplog.text and "also.png" in caplog.text


def test_predict_skip_bad_still_refuses_name_clashes(tmp_path):
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "x.png")
    Image.fromarray(_random_rgb(8, 8)).save(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="same name stem 'x'"):
        predict_files(Invert(), [tmp_path], tmp_path / "out", skip_bad=True)
    assert not (tmp_path / "out").exists()


def test_predict_whole_image_record(tmp_path):
    Image.fromarray(_random_rgb(20, 30)).save(tmp_path / "a.png")
    predict_files(Invert(), [tmp_path / "a.png"], tmp_path / "out", tile=64, overlap=16)
    record = json.loads((tmp_path / "out" / "a_faces.json").read_text())
    assert record["mode"] == "whole-image" and record["faces"] == [] and record["size"] == [30, 20]
    assert (record["tile"], record["overlap"], record["outputs"]) == (64, 16, ["a_demakeup.png"])
