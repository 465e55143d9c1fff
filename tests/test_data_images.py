"""Greyscale images deeper than 8 bits reach training at the scale their file means: a float
TIFF in [0, 1] or [0, 255], a 32-bit integer TIFF of 8- or 16-bit values, a 16-bit one; pixels
of no known range are refused naming the row, not clipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsharp.data import JsonlSource
from dsharp.image_files import as_rgb


def _read(tmp_path: Path, pixels: np.ndarray, name: str = "x.tif") -> np.ndarray:
    """``pixels`` saved as ``name`` and read as training reads a ``.jsonl`` row: one channel."""
    Image.fromarray(pixels).save(tmp_path / name)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": name, "text": "a"}) + "\n")
    image, _ = JsonlSource(rows).get(0)
    assert image.mode == "RGB"
    rgb = np.asarray(image)
    assert (rgb == rgb[..., :1]).all()  # grey
    return rgb[..., 0]


def _row(*values: float, dtype=np.float32) -> np.ndarray:
    return np.array([values] * 2, dtype=dtype)


def test_a_float_tiff_in_0_1_is_scaled_to_8_bit(tmp_path):
    pixels = _row(0.0, 0.25, 0.5, 1.0)
    assert Image.fromarray(pixels).mode == "F"
    assert _read(tmp_path, pixels)[0].tolist() == [0, 64, 128, 255]


def test_a_float_tiff_in_0_255_keeps_its_values(tmp_path):
    assert _read(tmp_path, _row(0.0, 3.0, 128.0, 255.0))[0].tolist() == [0, 3, 128, 255]


def test_a_32_bit_integer_tiff_of_8_bit_values_keeps_them(tmp_path):
    pixels = _row(0, 10, 200, 255, dtype=np.int32)
    Image.fromarray(pixels).save(tmp_path / "probe.tif")
    probe = Image.open(tmp_path / "probe.tif")
    assert probe.mode == "I" and probe.tag_v2[258] in (32, (32,))
    assert _read(tmp_path, pixels)[0].tolist() == [0, 10, 200, 255]


def test_a_32_bit_integer_tiff_of_16_bit_values_is_scaled_as_16_bit(tmp_path):
    pixels = _row(0, 257, 32768, 65535, dtype=np.int32)
    assert _read(tmp_path, pixels)[0].tolist() == [0, 1, 128, 255]


def test_a_16_bit_tiff_is_scaled_by_its_bit_depth_whatever_its_values(tmp_path):
    pixels = _row(0, 100, 255, dtype=np.uint16)  # dark: 16-bit values under 256
    assert _read(tmp_path, pixels)[0].tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (_row(0.0, 0.5, 1000.0), "float pixels from 0 to 1000: no range to scale them by"),
        (_row(-1.0, 0.5), "float pixels from -1 to 0.5: no range to scale them by"),
        (_row(0.0, np.nan), "float pixels that are not numbers (NaN or infinite)"),
        (_row(-5, 100, dtype=np.int32), "integer pixels from -5 to 100: no range"),
        (_row(0, 70000, dtype=np.int32), "integer pixels from 0 to 70000: no range"),
    ],
)
def test_pixels_of_no_known_range_are_refused_naming_the_row(tmp_path, pixels, reason):
    with pytest.raises(ValueError) as err:
        _read(tmp_path, pixels)
    where = f"{tmp_path / 'rows.jsonl'}:1: cannot read image {tmp_path / 'x.tif'}: "
    assert str(err.value).startswith(where)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


def test_a_float_image_in_memory_in_0_1_comes_out_right():
    """A decoded image (a Hugging Face column, an array) has no file to ask: its values
    decide, as for a file."""
    image = as_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (128, 128, 128)


def test_a_hugging_face_float_image_is_scaled_or_refused_naming_its_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    from dsharp.data import open_image_text

    for name, value in (("unit", 0.5), ("wild", 1000.0)):
        image = Image.fromarray(np.full((4, 4), value, np.float32))
        ds = datasets.Dataset.from_dict({"image": [image], "text": ["a"]})
        ds.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / name))
    unit = open_image_text(str(tmp_path / "unit"), "auto", "train", "image", "text")
    assert unit.get(0)[0].getpixel((0, 0)) == (128, 128, 128)
    wild = open_image_text(str(tmp_path / "wild"), "auto", "train", "image", "text")
    with pytest.raises(
        ValueError, match=r"^dataset .*wild row 0: cannot read the image: float pix"
    ):
        wild.get(0)
