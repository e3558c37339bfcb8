"""Find faces in a photo and frame each one as the training images frame theirs.

Detector: OpenCV's frontal-face Haar cascade, whose model file ships inside the opencv-python-headless
wheel (< 5: OpenCV 5 dropped `CascadeClassifier` and its files), so nothing is downloaded at run time.
It is the optional extra ``demakeup[infer]``; without it `detector()` says how to install it.

Framing (`FRAMING`): where the detector's box lies in a training image, measured by
``python scripts/measure_framing.py`` on the synthesizer's 224 px faces (23 of 30 detected): the box
is a square whose side is 0.558 of the image (std 0.040), centred at x = 0.497, y = 0.544 of it (std
0.016, 0.014). A face in a photo is cropped so that its box sits there, then resized to the
training size: the network sees the face as large as during training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'demakeup[infer]' (OpenCV's bundled face detector) for face mode"
DETECTOR_NAME = "opencv-haar-frontalface-default"
DETECT_SIDE = 1024  # px: photos are searched at most this large (the Haar search is ~ pixel count)
MIN_FACE = 24  # px at the search size: the cascade's window
NMS_IOU = 0.3  # detections of one face overlapping more than this are merged into the best-scored one


@dataclass(frozen=True)
class Framing:
    """The detector's face box inside a training image, as fractions of the image side."""

    box_side: float
    centre_x: float
    centre_y: float

    def crop(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The square (x0, y0, x1, y1), x1 / y1 exclusive, that frames `box` like a training image
        (it may reach past the photo's border)."""
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0) / self.box_side
        left = round((x0 + x1) / 2 - self.centre_x * side)
        top = round((y0 + y1) / 2 - self.centre_y * side)
        side = round(side)
        return left, top, left + side, top + side


FRAMING = Framing(box_side=0.558, centre_x=0.497, centre_y=0.544)


@dataclass(frozen=True)
class Face:
    """A detected face: its box in photo pixels (x0, y0, x1, y1; x1, y1 exclusive) and the detector's
    confidence (the cascade's last-stage weight; larger is surer)."""

    box: tuple[int, int, int, int]
    score: float


class FaceDetector:
    """The Haar cascade, loaded once. ImportError with `INSTALL_HINT` when OpenCV is missing."""

    name = DETECTOR_NAME

    def __init__(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise ImportError(f"face mode needs OpenCV: {INSTALL_HINT}") from exc
        if not hasattr(cv2, "CascadeClassifier"):
            raise ImportError(f"OpenCV {cv2.__version__} has no Haar cascades (removed in 5.0): "
                              "pip install 'opencv-python-headless<5'")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise ImportError(f"OpenCV {cv2.__version__} ships no frontal-face cascade: {INSTALL_HINT}")

    def detect(self, photo: np.ndarray) -> list[Face]:
        """Faces in uint8 ``(H, W, 3)`` RGB `photo`, best score first, overlapping detections merged."""
        cv2 = self._cv2
        height, width = photo.shape[:2]
        shrink = min(1.0, DETECT_SIDE / max(height, width))
        gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        if shrink < 1:
            gray = cv2.resize(gray, (round(width * shrink), round(height * shrink)), interpolation=cv2.INTER_AREA)
        boxes, _, scores = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE), outputRejectLevels=True)
        if len(boxes) == 0:
            return []
        rank = [float(s - min(scores)) + 1 for s in scores]  # NMSBoxes takes scores >= 0 only
        keep = cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], rank, 0.0, NMS_IOU)
        faces = []
        for i in np.asarray(keep).reshape(-1):
            x, y, w, h = (float(v) / shrink for v in boxes[i])
            box = (max(0, round(x)), max(0, round(y)), min(width, round(x + w)), min(height, round(y + h)))
            faces.append(Face(box, round(float(scores[i]), 3)))
        return sorted(faces, key=lambda f: -f.score)


def detector() -> FaceDetector | None:
    """The face detector, or None (after one line saying how to get it) when OpenCV is missing."""
    try:
        return FaceDetector()
    except ImportError as exc:
        log.warning("%s; predicting whole images instead", exc)
        return None
