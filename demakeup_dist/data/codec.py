"""Image bytes <-> RGB pixels, the same way for the packer, the verifier and the reader.

Pixels are always writable ``numpy.uint8`` arrays of shape (H, W, 3), RGB. JPEGs decode with simplejpeg when
it is installed (libjpeg-turbo, about 25% faster than Pillow here and pixel-identical to it; a test
checks that); everything else, and any JPEG simplejpeg refuses, decodes with Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # optional speed-up; Pillow gives the same pixels
    simplejpeg = None

# Formats stored byte for byte when the image is already RGB; the tar extension names the format.
STORED_FORMATS = {"JPEG": "jpg", "PNG": "png"}


def open_rgb(data: bytes) -> Image.Image:
    """Decode any Pillow-readable image fully and convert it to RGB (grayscale, RGBA, CMYK, palette...)."""
    image = Image.open(io.BytesIO(data))  # no `with`: the image must stay usable, and BytesIO holds no OS file
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG bytes of `image` (used for images that needed an RGB conversion)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_rgb(data: bytes, ext: str) -> np.ndarray:
    """Pixels (H, W, 3) uint8 RGB of stored image bytes; `ext` is the tar extension ("jpg" or "png")."""
    if ext == "jpg" and simplejpeg is not None:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # a JPEG variant libjpeg-turbo's fast path refuses: Pillow still reads it
            pass
    return np.array(open_rgb(data))  # np.array, not asarray: torch.from_numpy wants a writable array
