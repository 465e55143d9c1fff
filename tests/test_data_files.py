"""Messy image-text data: every image reaches training upright and as 8-bit RGB, and a row
that cannot be trained on is refused in one line naming the file and the row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsharp.data import FolderSource, JsonlSource, open_image_text


def _jsonl(folder: Path, *rows: object) -> Path:
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _png(path: Path, colour=(200, 30, 30), size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_a_jpeg_s_exif_orientation_is_applied(tmp_path):
    # stored 32 wide x 16 high, left half black; orientation 6: shown rotated 90 degrees
    # clockwise, so 16 wide x 32 high with the black half on top
    stored = np.full((16, 32, 3), 255, np.uint8)
    stored[:, :16] = 0
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    got, _ = JsonlSource(_jsonl(tmp_path, {"image": "phone.jpg", "text": "a"})).get(0)
    assert got.size == (16, 32)
    pixels = np.asarray(got).mean(axis=(1, 2))
    assert pixels[:12].max() < 40 and pixels[-12:].min() > 215


def test_a_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    got, _ = JsonlSource(_jsonl(tmp_path, {"image": "deep.png", "text": "a"})).get(0)
    assert got.mode == "RGB" and np.asarray(got).tolist()[0][0] == [128, 128, 128]


def test_transparent_pixels_are_white_whatever_colour_the_file_kept(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 255  # green under full transparency
    rgba[:4, :, 3] = 255  # top half opaque green
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255, 255, 0, 0])
    palette.save(tmp_path / "icon.png", transparency=0)
    source = JsonlSource(
        _jsonl(tmp_path, {"image": "logo.png", "text": "a"}, {"image": "icon.png", "text": "b"})
    )
    logo = np.asarray(source.get(0)[0])
    assert logo[0, 0].tolist() == [0, 255, 0] and logo[7, 0].tolist() == [255, 255, 255]
    assert np.asarray(source.get(1)[0])[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA"])
def test_other_modes_arrive_as_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    Image.new("RGB", (8, 8), (255, 255, 255)).convert(mode).save(tmp_path / f"x{suffix}")
    got, _ = JsonlSource(_jsonl(tmp_path, {"image": f"x{suffix}", "text": "a"})).get(0)
    assert got.mode == "RGB" and np.asarray(got).min() > 240


def test_a_damaged_image_is_named_with_its_row_when_drawn(tmp_path):
    raw = (_png(tmp_path / "ok.png", size=(64, 64))).read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    path = _jsonl(
        tmp_path,
        {"image": "ok.png", "text": "a"},
        {"image": "cut.png", "text": "b"},
        {"image": "junk.png", "text": "c"},
    )
    source = JsonlSource(path)
    assert source.get(0)[0].size == (64, 64)
    for index, name in ((1, "cut.png"), (2, "junk.png")):
        with pytest.raises(ValueError) as err:
            source.get(index)
        message = str(err.value)
        assert message.startswith(f"{path}:{index + 1}: cannot read image "), message
        assert name in message and "\n" not in message


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"image": "x.png", "text": None}, "caption column 'text' holds null"),
        ({"image": "x.png", "text": 5}, "caption column 'text' holds a number"),
        ({"image": "x.png", "text": ["a", "b"]}, "caption column 'text' holds a list"),
        ({"image": 5, "text": "a"}, "image column 'image' holds a number"),
        ({"image": None, "text": "a"}, "image column 'image' holds null"),
        (["x.png", "a"], "bad row (expected a JSON object, got a list)"),
        ({"image": "empty.png", "text": "a"}, "image file is empty (0 bytes): empty.png"),
        ({"image": "sub", "text": "a"}, "image is not a file: sub"),
    ],
)
def test_a_row_that_cannot_train_is_refused_naming_the_row(tmp_path, row, reason):
    _png(tmp_path / "x.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    path = _jsonl(tmp_path, {"image": "x.png", "text": "fine"}, row)
    with pytest.raises(ValueError) as err:
        JsonlSource(path)
    assert str(err.value).startswith(f"{path}:2: {reason}"), str(err.value)


def test_text_that_is_not_utf8_names_the_file_and_a_byte_order_mark_is_dropped(tmp_path):
    _png(tmp_path / "x.png")
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"image": "x.png", "text": "ok"}\n{"image": "x.png", "text": "caf\xe9"}\n'
    )
    with pytest.raises(ValueError, match=rf"^{path}:2: not UTF-8 text"):
        JsonlSource(path)
    path.write_bytes(b'\xef\xbb\xbf{"image": "x.png", "text": "ok"}\n')
    assert JsonlSource(path).get(0)[1] == "ok"
    folder = tmp_path / "folder"
    _png(folder / "a.png")
    (folder / "a.txt").write_bytes(b"\xef\xbb\xbfa red circle\n")
    assert FolderSource(folder).get(0)[1] == "a red circle"
    (folder / "a.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=rf"^{folder / 'a.txt'}: not UTF-8 text"):
        FolderSource(folder)


def test_captions_all_empty_are_refused_one_empty_is_kept(tmp_path):
    _png(tmp_path / "x.png")
    path = _jsonl(tmp_path, {"image": "x.png", "text": ""}, {"image": "x.png", "text": "a"})
    assert [JsonlSource(path).get(i)[1] for i in (0, 1)] == ["", "a"]
    path = _jsonl(tmp_path, {"image": "x.png", "text": ""}, {"image": "x.png", "text": " "})
    with pytest.raises(ValueError, match=rf"^{path}: every caption is empty"):
        JsonlSource(path)


def test_a_path_written_relative_to_the_working_directory_is_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "img" / "x.png")
    (tmp_path / "meta").mkdir()
    path = _jsonl(tmp_path / "meta", {"image": "img/x.png", "text": "a"})
    with pytest.raises(FileNotFoundError) as err:
        JsonlSource(path)
    assert str(err.value) == (
        f"{path}:1: image not found: img/x.png (image paths are relative to {path.parent}, "
        "not to the working directory)"
    )


def test_spaces_unicode_symlinks_and_odd_sizes_train(tmp_path):
    _png(tmp_path / "with space é.png", size=(120, 40))
    (tmp_path / "link.png").symlink_to("with space é.png")
    _png(tmp_path / "tiny.png", size=(8, 8))
    source = open_image_text(
        str(
            _jsonl(
                tmp_path,
                {"image": "with space é.png", "text": "a"},
                {"image": "link.png", "text": "b"},
                {"image": "tiny.png", "text": "c"},
            )
        ),
        "auto",
        "train",
        "image",
        "text",
    )
    assert [source.get(i)[0].size for i in range(3)] == [(120, 40), (120, 40), (8, 8)]


def test_train_refuses_a_bad_row_before_the_model_loads(tmp_path, monkeypatch, model_must_not_load):
    from typer.testing import CliRunner

    from dsharp.cli import app

    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "x.png")
    _jsonl(tmp_path, {"image": "x.png", "text": "a"}, {"image": "gone.png", "text": "b"})
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "sft_sharpening.yaml"
    args = [str(recipe), "data.generator=none", "data.dataset=data.jsonl", "output_dir=run"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"recipe error: {recipe}: data.dataset: data.jsonl:2: image not found: gone.png\n"
    )
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["recipes", "validate", *args])
    assert "data.jsonl:2: image not found: gone.png" in result.stderr


def test_a_hugging_face_row_that_cannot_train_is_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    good = _png(tmp_path / "x.png").read_bytes()
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(deep)
    rows = {
        "image": [
            {"bytes": good, "path": None},
            {"bytes": good[: len(good) // 2], "path": None},
            {"bytes": deep.read_bytes(), "path": None},
            {"bytes": good, "path": None},
        ],
        "caption": ["a", "b", "c", None],
    }
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    source = open_image_text(str(tmp_path / "ds"), "auto", "train", "image", "caption")
    assert source.get(0)[1] == "a"
    assert np.asarray(source.get(2)[0]).tolist()[0][0] == [128, 128, 128]
    with pytest.raises(ValueError, match=rf"^dataset {tmp_path / 'ds'} row 1: cannot read"):
        source.get(1)
    with pytest.raises(ValueError) as err:
        source.get(3)
    assert str(err.value) == (
        f"dataset {tmp_path / 'ds'} row 3: caption column 'caption' holds null, not text"
    )


def test_the_rows_checked_before_loading_are_indexed_once(tmp_path, monkeypatch):
    import dsharp.data

    _png(tmp_path / "x.png")
    path = str(_jsonl(tmp_path, {"image": "x.png", "text": "a"}))
    opened = []
    real = dsharp.data.JsonlSource
    monkeypatch.setattr(dsharp.data, "JsonlSource", lambda *a: opened.append(a) or real(*a))
    for _ in range(2):  # `dsharp train` checks its inputs twice before the model loads
        dsharp.data.check_local_data(path, "auto", "image", "text")
    source = open_image_text(path, "auto", "train", "image", "text")
    assert len(opened) == 1 and source.get(0)[1] == "a"
    open_image_text(path, "auto", "train", "image", "text")  # taken: a later open reads anew
    assert len(opened) == 2


@pytest.mark.parametrize(
    ("recipe", "overrides", "checked"),
    [
        (
            "rlhf_sharpening",
            ["data.generator=none", "data.prompts=[a red circle]"],
            False,
        ),  # samples from prompts: data.dataset is never read
        ("sft_sharpening", ["data.generator=none"], True),
    ],
)
def test_a_dataset_is_checked_only_for_a_method_that_reads_it(
    tmp_path, monkeypatch, recipe, overrides, checked
):
    from dsharp.preflight import check_inputs
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_io import load_recipe

    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path, {"image": "gone.png", "text": "a"})
    path = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / f"{recipe}.yaml"
    loaded = load_recipe(path, [*overrides, "data.dataset=data.jsonl", "output_dir=run"])
    if checked:
        with pytest.raises(RecipeError, match="data.jsonl:1: image not found: gone.png"):
            check_inputs(loaded)
    else:
        check_inputs(loaded)  # trained before the row checks: still trains


def test_a_hugging_face_image_column_of_encoded_files_is_read(tmp_path):
    # a parquet dataset's image struct not typed as an Image feature, Image(decode=False),
    # or a bytes column: the encoded file is there, as with a decoded Image column
    datasets = pytest.importorskip("datasets")
    good = _png(tmp_path / "x.png", colour=(10, 20, 30)).read_bytes()
    columns = {
        "struct": [{"bytes": good, "path": "x.png"}, {"bytes": good[:40], "path": None}],
        "bytes": [good, good[:40]],
        "path_only": [{"bytes": None, "path": str(tmp_path / "x.png")}] * 2,
    }
    for name, images in columns.items():
        ds = datasets.Dataset.from_dict({"image": images, "text": ["a", "b"]})
        ds.save_to_disk(str(tmp_path / name))
        source = open_image_text(str(tmp_path / name), "auto", "train", "image", "text")
        image, caption = source.get(0)
        assert caption == "a" and image.getpixel((0, 0)) == (10, 20, 30), name
    with pytest.raises(ValueError, match=r"row 1: cannot read image \(40 bytes\): not an image"):
        open_image_text(str(tmp_path / "bytes"), "auto", "train", "image", "text").get(1)


def test_jsonl_lines_end_only_where_json_lines_can(tmp_path):
    # a caption holding U+2028 (json.dumps(..., ensure_ascii=False) writes it raw) is one
    # row; a file whose lines end in a lone CR (classic Mac) still has one row per line
    from dsharp.methods.dpo import PairSource

    _png(tmp_path / "x.png")
    text = "one\u2028two"
    row = {"image": "x.png", "text": text, "prompt": text, "image_w": "x.png", "image_l": "x.png"}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [item.caption for item in JsonlSource(path).items] == [text]
    assert [prompt for prompt, _, _ in PairSource(path).rows] == [text]
    path.write_bytes(b'{"image": "x.png", "text": "a"}\r{"image": "x.png", "text": "b"}\r')
    assert [item.caption for item in JsonlSource(path).items] == ["a", "b"]


def test_a_folder_skips_files_of_other_kinds_beside_its_captioned_images(tmp_path: Path) -> None:
    """A stray preview.gif (or .tif) without a caption is no part of the data, as before:
    reading those kinds too refused the folder for the stray file's missing caption."""
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")
    (folder / "a.txt").write_text("a red square")
    Image.new("RGB", (8, 8), "blue").save(folder / "preview.gif")
    Image.new("RGB", (8, 8), "blue").save(folder / "scan.tif")
    source = FolderSource(folder)
    assert len(source) == 1 and source.get(0)[1] == "a red square"
