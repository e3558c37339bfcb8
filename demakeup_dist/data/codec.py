"""Image bytes <-> RGB pixels, the same way for the packer, the verifier, the reader and `predict`.

`to_rgb` is the one definition of "the picture in a file": 8-bit RGB as a viewer displays it (EXIF
orientation applied, transparency composited on white, 16-bit and float pixels scaled to 8 bits),
so training and prediction see the same pixels for the same file.

Pixels are always writable ``numpy.uint8`` arrays of shape (H, W, 3), RGB. JPEGs decode with simplejpeg when
it is installed (libjpeg-turbo, about 25% faster than Pillow here and pixel-identical to it; a test
checks that); everything else, and any JPEG simplejpeg refuses, decodes with Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

try:
    import simplejpeg
except ImportError:  # optional speed-up; Pillow gives the same pixels
    simplejpeg = None

# Formats stored byte for byte when the image is already RGB; the tar extension names the format.
STORED_FORMATS = {"JPEG": "jpg", "PNG": "png"}


_ORIENTATION = 0x0112  # EXIF tag: how to rotate / mirror the stored pixels for display
_TRANSPARENT = ("RGBA", "RGBa", "LA", "La", "PA")
_DIRECT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")  # Pillow converts these to RGB exactly


class UnsupportedImage(ValueError):
    """Pixels that have no faithful 8-bit RGB reading (the message names the mode)."""


def is_plain_rgb(image: Image.Image) -> bool:
    """True when the stored pixels already are what `to_rgb` gives: the file can be kept byte for byte."""
    return (image.mode == "RGB" and "transparency" not in image.info
            and image.getexif().get(_ORIENTATION, 1) == 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture as displayed, in 8-bit RGB (see the module doc); UnsupportedImage for other pixels."""
    if is_plain_rgb(image):
        return image
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_uint8(image), "L")
    # "transparency" in info: a palette entry or one colour (PNG tRNS) is transparent.
    if image.mode in _TRANSPARENT or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    if image.mode not in _DIRECT:
        raise UnsupportedImage(f"pixel mode {image.mode} has no 8-bit RGB reading; convert it to RGB first")
    return image.convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Single-channel 16/32-bit integer or float pixels -> 8 bits. Integers are read as 16-bit (what
    PNG and TIFF store), floats as [0, 1]; Pillow's own conversion would clip them to white."""
    pixels = np.asarray(image)
    if image.mode == "F":
        if pixels.size and not (np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1):
            raise UnsupportedImage("pixel mode F (32-bit float) with values outside [0, 1]; "
                                   "convert it to 8 or 16 bits first")
        return np.round(pixels * 255).astype(np.uint8)
    pixels = pixels.astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise UnsupportedImage(f"pixel mode {image.mode} (32-bit integer) with values outside 0..65535; "
                               "convert it to 8 or 16 bits first")
    return ((pixels + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)


def open_rgb(data: bytes) -> Image.Image:
    """Decode any Pillow-readable image fully and read it as `to_rgb` does."""
    image = Image.open(io.BytesIO(data))  # no `with`: the image must stay usable, and BytesIO holds no OS file
    image.load()
    return to_rgb(image)


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
