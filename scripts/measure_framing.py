"""Measure where the face detector's box lies in training images (predict's face-mode framing).

    python scripts/measure_framing.py [--count 30] [--size 224]

Renders the synthesizer's faces (the layout `demakeup synth` writes), runs predict's detector on each
made-up image and prints the box side and centre as fractions of the image (mean and std over the
detected faces), beside the synthesizer's own face outline box. The means are demakeup_dist/infer/
faces.py's FRAMING. Real course images (224 x 224 aligned faces) would be measured the same way on
their makeup/ folder; they are not shipped here.
"""

from __future__ import annotations

import argparse

import numpy as np

from demakeup_dist.data.synth import render_sample, sample_rng
from demakeup_dist.data.synth_face import face_box, sample_face
from demakeup_dist.infer.faces import FaceDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    detect = FaceDetector().detect
    found, outline = [], []
    for i in range(args.count):
        sample = render_sample(sample_rng(25, "test", i), args.size)
        x0, y0, x1, y1 = face_box(sample_face(sample_rng(25, "test", i)), args.size)
        outline.append([(x1 - x0) / args.size, (y1 - y0) / args.size])
        faces = detect(sample["makeup"])
        if faces:
            bx0, by0, bx1, by1 = faces[0].box
            found.append([(bx1 - bx0) / args.size, (bx0 + bx1) / 2 / args.size, (by0 + by1) / 2 / args.size])
    f, o = np.array(found), np.array(outline)
    print(f"detected {len(f)} of {args.count} faces at {args.size} px")
    print(f"detector box side {f[:, 0].mean():.3f} (std {f[:, 0].std():.3f}), centre x {f[:, 1].mean():.3f} "
          f"(std {f[:, 1].std():.3f}), y {f[:, 2].mean():.3f} (std {f[:, 2].std():.3f}) of the image")
    print(f"synthesizer outline box: width {o[:, 0].mean():.3f}, height {o[:, 1].mean():.3f} of the image")


if __name__ == "__main__":
    main()
