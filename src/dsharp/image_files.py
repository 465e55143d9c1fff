"""Training images as the model should see them: upright, 8-bit RGB, whatever the file.

``Image.open(path).convert("RGB")`` alone trains on a silently wrong image for common files:
a phone JPEG's EXIF orientation is ignored (the photo lies on its side), a 16-bit PNG is
clipped at 255 (nearly white), and transparent pixels show whatever colour the file kept
under them. A file that cannot be decoded raises an error that does not always name it
("image file is truncated"), so the reader names the file and the dataset row.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Modes of more than 8 bits per channel that ``convert("RGB")`` clips instead of scaling.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
#: Where a transparent pixel is composited onto: white, as image viewers show it.
BACKGROUND = (255, 255, 255)


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright (its EXIF orientation applied), as 8-bit RGB, transparency
    composited onto white."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in _WIDE_MODES:  # 16-bit greyscale: scale 0..65535 to 0..255
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
