"""Inference on real photos (`demakeup predict`, `demakeup export`), one responsibility per module:

photos   decode inputs as training does, find them in folders, write outputs whole or not at all
runner   one call convention for a network (PyTorch or ONNX): pad to 32, run, crop back
faces    detect faces (OpenCV's bundled Haar cascade) and the training images' framing of them
blend    cut a framed face at the training size, paste the prediction back with a feathered edge
tiles    whole-image inference in overlapping, blended tiles (bounded memory at any photo size)
predict  the per-photo flow: face mode or whole-image mode, NAME_faces.json
export   the network as ONNX, and a runner of such a file

Imports nothing, so that the CLI can read the tiling defaults without loading torch.
"""

TILE = 512
"""Whole-image tile side (px): 8x the demo's training size; tiled-vs-untiled measured in README.md."""
OVERLAP = 64
