"""Training images as the model should see them: upright, 8-bit RGB, whatever the file.

``Image.open(path).convert("RGB")`` alone trains on a silently wrong image for common files:
a phone JPEG's EXIF orientation is ignored (the photo lies on its side), a 16-bit PNG is
clipped at 255 (nearly white), a float TIFF is clipped to black, and transparent pixels
show whatever colour the file kept under them. A file that cannot be decoded raises an
error that does not always name it ("image file is truncated"), so the reader names the
file and the dataset row.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: 16-bit greyscale modes: 0..65535 is full scale.
_MODES_16 = {"I;16", "I;16B", "I;16L", "I;16N"}
#: Where a transparent pixel is composited onto: white, as image viewers show it.
BACKGROUND = (255, 255, 255)
#: Float pixels this far outside [0, 1] (or [0, 255]) are rounding, not another range.
_SLACK = 1 / 512


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright (its EXIF orientation applied), as 8-bit RGB, transparency
    composited onto white, greyscale of more than 8 bits scaled by :func:`wide_to_8bit`."""
    bits = bits_per_sample(image)  # before turning: a turned copy forgets its file
    image = ImageOps.exif_transpose(image) or image
    if image.mode in _MODES_16 or image.mode in ("I", "F"):
        image = wide_to_8bit(image, bits)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def wide_to_8bit(image: Image.Image, bits: int | None = None) -> Image.Image:
    """A greyscale image of 16-bit, 32-bit integer (``I``) or float (``F``) pixels as 8-bit
    ``L``, full scale taken from what the file says (``bits``, see :func:`bits_per_sample`)
    where it says it (``convert`` clips instead: a 16-bit PNG comes out white, a float
    TIFF black):

    - ``I;16*`` modes, a PNG (16 bits at most) and a TIFF of 8 or 16 bits per sample: their
      bit depth's full scale;
    - other ``I`` images (a 32-bit TIFF, whose 2**32 full scale would make any real image
      black): the first of 0..255 and 0..65535 that holds every pixel;
    - ``F`` (float) images: [0, 1] when every pixel is in it, else [0, 255];
    - anything else (negative values, integers above 65535, a float above 255, NaN) has no
      range to assume: a ``ValueError`` saying so, for the reader to name the file.

    A 32-bit or float image of low values is therefore read at the smaller range (a float
    image whose pixels are all <= 1 as [0, 1]): the file gives nothing else to go by."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    kind = "float" if image.mode == "F" else "integer"
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{kind} pixels that are not numbers (NaN or infinite)")
    full = _full_scale(image.mode, bits, low, high)
    if full is None:
        raise ValueError(
            f"{kind} pixels from {low:g} to {high:g}: no range to scale them by "
            "(expected 0..255 or 0..65535, or [0, 1] for floats); save it as 8 or 16 bit"
        )
    scaled = np.clip(np.rint(pixels * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def _full_scale(mode: str, bits: int | None, low: float, high: float) -> float | None:
    """The pixel value that is white (see :func:`wide_to_8bit`), or None."""
    if mode in _MODES_16:
        return 65535.0
    if mode == "F":
        if low >= -_SLACK and high <= 1 + _SLACK:
            return 1.0
        return 255.0 if low >= -_SLACK and high <= 255 + _SLACK else None
    if low < 0:  # a signed image's negative pixels: no black to put them at
        return None
    if bits in (8, 16):
        return 2.0**bits - 1
    return 255.0 if high <= 255 else 65535.0 if high <= 65535 else None


def bits_per_sample(image: Image.Image) -> int | None:
    """The bit depth the file declares: a PNG's ``I`` image is 16-bit (PNG has no deeper
    greyscale), a TIFF says in its BitsPerSample tag; None where unknown."""
    if image.format == "PNG" and image.mode.startswith("I"):
        return 16
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) else None


def read_rgb(path: object, where: str, shown: str | None = None) -> Image.Image:
    """The image file ``path`` (or a file object) decoded by :func:`as_rgb`; a ``ValueError``
    naming ``where`` (the dataset row) and the file (``shown``, if given) when it cannot be
    read or decoded."""
    try:
        with Image.open(path) as image:  # type: ignore[arg-type]
            image.load()
            return as_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):  # its message repeats the path
            reason = "not an image Pillow can decode (empty, damaged or of another format)"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ValueError(f"{where}: cannot read image {shown or path}: {reason}") from None
