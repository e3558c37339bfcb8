"""Face mode: the detector against faces of known boxes, the training framing, and the blend (pixels outside
the blend regions untouched, no seam), on synthetic scenes and on a real photo that scikit-image ships."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from demakeup_dist.data.synth import render_sample, sample_rng
from demakeup_dist.data.synth_face import face_box, sample_face
from demakeup_dist.infer.blend import FEATHER
from demakeup_dist.infer.faces import DETECTOR_NAME, FRAMING, Face, FaceDetector, detector
from demakeup_dist.infer.predict import predict_files
from demakeup_dist.infer.runner import torch_runner

pytest.importorskip("cv2", reason="face mode needs the infer extra (scripts/bootstrap.sh installs it)")

TRAIN_SIZE = 64
# Synthesizer test faces (seed 25) that the Haar cascade finds at 224 px; it misses some (23 of 30).
VISIBLE = (0, 3, 7)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def background(height, width, seed=1):
    """A smooth, faceless backdrop."""
    coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def paste_face(scene, index, side, left, top):
    """Paste synthesizer face `index` scaled to `side` px at (left, top); returns its true outline box."""
    made_up = render_sample(sample_rng(25, "test", index), 224)["makeup"]
    scene[top:top + side, left:left + side] = np.asarray(Image.fromarray(made_up).resize((side, side), Image.LANCZOS))
    x0, y0, x1, y1 = face_box(sample_face(sample_rng(25, "test", index)), 224)
    k = side / 224
    return (x0 * k + left, y0 * k + top, x1 * k + left, y1 * k + top)


class Darken(torch.nn.Module):
    """de-makeup = x / 2, sr = nearest 4x of x / 2; records its input shapes."""

    def __init__(self, sr=False):
        super().__init__()
        self.tasks = ("demakeup", "sr") if sr else ("demakeup",)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        out = {"demakeup": x / 2}
        if "sr" in self.tasks:
            out["sr"] = F.interpolate(x / 2, scale_factor=4, mode="nearest")
        return out


class FixedFaces:
    """A detector stand-in that 'finds' given boxes."""

    name = "fixed"

    def __init__(self, *boxes):
        self.boxes = boxes

    def detect(self, photo):
        return [Face(box, 1.0) for box in self.boxes]


def outside_mask(shape, rects, scale=1):
    """True where a pixel of an (H, W) image lies outside every rect (x0, y0, x1, y1)."""
    out = np.ones(shape, bool)
    for x0, y0, x1, y1 in rects:
        out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = False
    return out


def run(tmp_path, photo, model, **kwargs):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    predict_files(torch_runner(model, image_size=TRAIN_SIZE), [tmp_path / "photo.png"], tmp_path / "out", **kwargs)
    record = json.loads((tmp_path / "out" / "photo_faces.json").read_text())
    return np.asarray(Image.open(tmp_path / "out" / "photo_demakeup.png")), record


@pytest.mark.parametrize("index, side, left, top", [(0, 100, 30, 40), (3, 180, 500, 300), (7, 360, 200, 100)])
def test_detector_finds_pasted_faces_at_their_true_box(index, side, left, top):
    scene = background(600, 800)
    truth = paste_face(scene, index, side, left, top)
    faces = FaceDetector().detect(scene)
    assert len(faces) == 1
    assert iou(faces[0].box, truth) >= 0.5


def test_framing_maps_a_training_face_back_to_the_whole_training_image():
    for index in VISIBLE:
        image = render_sample(sample_rng(25, "test", index), 224)["makeup"]
        (face,) = FaceDetector().detect(image)
        assert iou(FRAMING.crop(face.box), (0, 0, 224, 224)) >= 0.8  # faces vary in size by ~7% (std)


def test_two_faces_found_blended_and_outside_untouched(tmp_path):
    scene = background(400, 700)
    truths = [paste_face(scene, 0, 160, 40, 60), paste_face(scene, 7, 200, 420, 150)]
    model = Darken()
    out, record = run(tmp_path, scene, model, batch_size=4)
    assert record["mode"] == "faces" and record["detector"] == DETECTOR_NAME and len(record["faces"]) == 2
    for truth in truths:
        assert max(iou(face["box"], truth) for face in record["faces"]) >= 0.5
    assert model.shapes == [(2, 3, TRAIN_SIZE, TRAIN_SIZE)]  # both crops in one batch
    blends = [face["blend"] for face in record["faces"]]
    outside = outside_mask(scene.shape[:2], blends)
    np.testing.assert_array_equal(out[outside], scene[outside])
    for x0, y0, x1, y1 in (face["box"] for face in record["faces"]):  # faces darkened
        assert out[y0:y1, x0:x1].mean() < 0.6 * scene[y0:y1, x0:x1].mean()


def test_no_face_is_whole_image_mode(tmp_path):
    scene = background(300, 400)
    out, record = run(tmp_path, scene, Darken())
    assert record["mode"] == "whole-image" and record["faces"] == [] and record["detector"] == DETECTOR_NAME
    np.testing.assert_allclose(out.astype(int), (scene.astype(int) + 1) // 2, atol=1)


def test_real_photo_astronaut(tmp_path):
    skimage = pytest.importorskip("skimage")
    import skimage.data

    assert (Path(skimage.__file__).parent / "data" / "astronaut.png").is_file()  # in the wheel, not downloaded
    photo = skimage.data.astronaut()  # (512, 512, 3): one frontal face
    out, record = run(tmp_path, photo, Darken(sr=True))
    (face,) = record["faces"]
    assert iou(face["box"], (175, 55, 275, 170)) >= 0.5  # the face, annotated by eye: forehead to chin
    outside = outside_mask(photo.shape[:2], [face["blend"]])
    np.testing.assert_array_equal(out[outside], photo[outside])
    sr = np.asarray(Image.open(tmp_path / "out" / "photo_sr4x.png"))
    bicubic = np.asarray(Image.fromarray(photo).resize((2048, 2048), Image.BICUBIC))
    outside_sr = outside_mask(sr.shape[:2], [face["blend"]], scale=4)
    assert sr.shape == (2048, 2048, 3)
    np.testing.assert_array_equal(sr[outside_sr], bicubic[outside_sr])
    x0, y0, x1, y1 = face["box"]
    assert sr[4 * y0:4 * y1, 4 * x0:4 * x1].mean() < 0.6 * bicubic[4 * y0:4 * y1, 4 * x0:4 * x1].mean()


def test_blend_has_no_seam(tmp_path):
    """Invert a flat grey photo inside one face: 51 -> 204 must ramp, never step, across the blend border."""
    photo = np.full((240, 320, 3), 51, np.uint8)
    box = (100, 60, 160, 120)

    class Invert(Darken):
        def forward(self, x):
            return {"demakeup": 1 - x}

    Image.fromarray(photo).save(tmp_path / "grey.png")
    predict_files(torch_runner(Invert(), image_size=TRAIN_SIZE), [tmp_path / "grey.png"], tmp_path / "out",
                  face_detector=FixedFaces(box))
    out = np.asarray(Image.open(tmp_path / "out" / "grey_demakeup.png")).astype(int)[..., 0]
    (face,) = json.loads((tmp_path / "out" / "grey_faces.json").read_text())["faces"]
    x0, y0, x1, y1 = face["blend"]
    assert out[(y0 + y1) // 2, (x0 + x1) // 2] == 204  # full effect at the centre
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    ramp_px = FEATHER * (x1 - x0)
    assert steps <= 1.5 * 153 / ramp_px + 1  # smoothstep's steepest slope, plus rounding
    assert np.abs(out[y0:y1, x0] - out[y0:y1, x0 - 1]).max() <= 1  # across the left border: no step


def test_without_opencv_predict_says_how_to_get_face_mode(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    assert detector() is None
    assert "pip install 'demakeup[infer]'" in caplog.text
    scene = background(64, 64)
    _, record = run(tmp_path, scene, Darken())
    assert record["mode"] == "whole-image" and record["detector"] is None


def test_crops_of_consecutive_photos_share_a_batch(tmp_path):
    for name in ("a", "b", "c"):
        Image.fromarray(background(120, 160, seed=len(name))).save(tmp_path / f"{name}.png")
    model = Darken()
    done = predict_files(torch_runner(model, image_size=TRAIN_SIZE), [tmp_path], tmp_path / "out", batch_size=2,
                         face_detector=FixedFaces((40, 30, 90, 80)))
    assert model.shapes == [(2, 3, TRAIN_SIZE, TRAIN_SIZE), (1, 3, TRAIN_SIZE, TRAIN_SIZE)]
    assert [p.name for p in done.written if p.suffix == ".json"] == ["a_faces.json", "b_faces.json", "c_faces.json"]
    for name in ("a", "b", "c"):
        record = json.loads((tmp_path / "out" / f"{name}_faces.json").read_text())
        assert record["mode"] == "faces" and record["outputs"] == [f"{name}_demakeup.png"]
