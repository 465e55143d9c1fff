"""Image folders as Hugging Face's ``imagefolder`` lays them out: a ``metadata.jsonl`` or
``metadata.csv`` names each image (subfolders too) and its caption; a row that cannot train
is refused in one line naming ``file:line`` before the model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dsharp.data import FolderSource, check_local_data, open_image_text


def _png(path: Path, colour: tuple[int, int, int] = (255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _folder(tmp_path: Path, csv_text: str) -> Path:
    folder = tmp_path / "ds"
    _png(folder / "a.png", (255, 0, 0))
    _png(folder / "train" / "b.png", (0, 0, 255))
    (folder / "metadata.csv").write_text(csv_text, encoding="utf-8", newline="")
    return folder


def test_a_metadata_csv_names_images_in_subfolders_and_their_captions(tmp_path):
    # a byte-order mark, CRLF lines, a quoted caption holding a comma, a quote and a line break
    text = '\ufefffile_name,text\r\na.png,"red, ""bright""\r\nsquare"\r\n\r\ntrain/b.png,blue\r\n'
    folder = _folder(tmp_path, text)
    source = open_image_text(str(folder), "auto", "train", "image", "text")
    assert isinstance(source, FolderSource) and len(source) == 2
    image, caption = source.get(0)
    assert caption == 'red, "bright"\r\nsquare' and image.getpixel((0, 0)) == (255, 0, 0)
    image, caption = source.get(1)
    assert caption == "blue" and image.getpixel((0, 0)) == (0, 0, 255)
    # each row is named at the line where it starts
    assert [item.where for item in source.items] == [
        f"{folder / 'metadata.csv'}:2",
        f"{folder / 'metadata.csv'}:5",
    ]


def test_a_metadata_csv_is_read_at_the_recipe_s_columns(tmp_path):
    folder = _folder(tmp_path, "img,caption,score\ntrain/b.png,blue,3\n")
    source = open_image_text(str(folder), "folder", "train", "img", "caption")
    assert source.get(0)[1] == "blue"


def test_metadata_replaces_txt_captions_and_lists_the_images_that_train(tmp_path):
    folder = _folder(tmp_path, "file_name,text\ntrain/b.png,from the metadata\n")
    (folder / "a.txt").write_text("from a side file")
    _png(folder / "unlisted.png")
    source = FolderSource(folder)
    assert [caption for _, caption, _ in source.items] == ["from the metadata"]


def test_a_folder_of_split_subfolders_is_refused_naming_the_one_to_give(tmp_path):
    # Hugging Face's layout of splits: the metadata is one level down, no images at the top
    folder = tmp_path / "ds"
    _png(folder / "train" / "b.png")
    (folder / "train" / "metadata.csv").write_text("file_name,text\nb.png,blue\n")
    (folder / "test").mkdir()
    (folder / "test" / "metadata.jsonl").write_text('{"file_name": "c.png", "text": "x"}\n')
    with pytest.raises(ValueError) as err:
        FolderSource(folder)
    assert str(err.value) == (
        f"{folder}: no images with captions found ({folder / 'train' / 'metadata.csv'} is in "
        f"a subfolder: give {folder / 'train'})"
    )
    assert FolderSource(folder / "train").items[0].caption == "blue"


def test_a_subfolder_s_metadata_beside_the_folder_s_own_captions_is_refused_naming_it(tmp_path):
    # imagefolder would add its rows, dsharp reads the top folder's alone: said, not guessed
    folder = _folder(tmp_path, "file_name,text\na.png,red\n")
    nested = folder / "train" / "metadata.jsonl"
    nested.write_text('{"file_name": "b.png", "text": "blue"}\n')
    with pytest.raises(ValueError) as err:
        FolderSource(folder)
    assert str(err.value) == (
        f"{nested}: a metadata file in a subfolder, not read beside {folder / 'metadata.csv'} "
        f"(imagefolder would add its rows): put its rows in metadata.csv (paths relative to "
        f"{folder}) or move {folder / 'train'} out of {folder}"
    )
    (folder / "metadata.csv").unlink()  # .txt captions at the top instead
    (folder / "a.txt").write_text("red")
    with pytest.raises(ValueError) as err:
        FolderSource(folder)
    assert str(err.value) == (
        f"{nested}: a metadata file in a subfolder, not read beside {folder}'s .txt captions "
        f"(imagefolder would read metadata files instead): give {folder / 'train'}, or move "
        f"it out of {folder}"
    )
    # a hidden or special folder's files are no data (imagefolder passes them over too)
    nested.rename(folder / "train" / "rows.jsonl")
    for hidden in (".ipynb_checkpoints", "__pycache__"):
        (folder / hidden).mkdir()
        (folder / hidden / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "x"}\n')
    assert [item.caption for item in FolderSource(folder).items] == ["red"]


def test_per_class_metadata_beside_the_file_that_joins_them_is_read_once_not_refused(tmp_path):
    """``ds/metadata.csv`` lists ``train/b.png`` and ``train/metadata.jsonl`` lists it too
    (per-class files left beside their union): no row goes unread, so the folder trains as it
    did before subfolders' metadata was checked, on the top file's rows; it was refused. A
    subfolder file that lists one image more is still refused."""
    folder = _folder(tmp_path, "file_name,text\na.png,red\ntrain/b.png,blue\n")
    nested = folder / "train" / "metadata.jsonl"
    nested.write_text('{"file_name": "b.png", "text": "blue", "score": 3}\n')
    assert [item.caption for item in FolderSource(folder).items] == ["red", "blue"]
    _png(folder / "train" / "c.png")
    rows = ['{"file_name": "b.png", "text": "blue"}', '{"file_name": "c.png", "text": "x"}']
    nested.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="a metadata file in a subfolder, not read beside"):
        FolderSource(folder)


def test_a_subfolder_s_metadata_giving_a_listed_image_another_caption_is_refused(tmp_path):
    """``train/metadata.jsonl`` lists ``b.png`` as the top file does, with another caption:
    dsharp would train on the top file's alone, ``imagefolder`` on both rows, so which one
    was meant is a guess (it trained on the top file's without a word)."""
    folder = _folder(tmp_path, "file_name,text\na.png,red\ntrain/b.png,blue\n")
    (folder / "train" / "metadata.jsonl").write_text('{"file_name": "b.png", "text": "navy"}\n')
    with pytest.raises(ValueError) as refused:
        FolderSource(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'train' / 'metadata.jsonl'}:1: ")
    assert "gives b.png another caption than" in message
    assert f"{folder / 'metadata.csv'}" in message and "\n" not in message
    (folder / "train" / "metadata.jsonl").write_text('{"file_name": "b.png", "text": " blue "}\n')
    assert [item.caption for item in FolderSource(folder).items] == ["red", "blue"]  # spacing


def test_both_metadata_files_are_refused(tmp_path):
    folder = _folder(tmp_path, "file_name,text\na.png,red\n")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "red"}\n')
    with pytest.raises(ValueError, match=r"ds: both metadata\.jsonl and metadata\.csv: keep one$"):
        FolderSource(folder)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("file_name,text\na.png,red\nmissing.png,x\n", 3, "image not found: missing.png"),
        ("file_name,caption\na.png,red\n", 1, "no column 'text' (it has 'file_name', 'caption')"),
        ("\nname,text\na.png,red\n", 2, "no column 'file_name' (it has 'name', 'text')"),
        ("file_name,text\na.png,red,extra\n", 2, "bad row (3 fields, the header on line 1 has 2)"),
        ("file_name,text\na.png\n", 2, "bad row (1 fields, the header on line 1 has 2)"),
        (
            'file_name,text\na.png,"red\ntrain/b.png,blue\n',
            2,
            "bad CSV row (unexpected end of data)",
        ),
        ('file_name,text\na.png,"red" square\n', 2, "bad CSV row (',' expected after '\"')"),
        ("file_name,text\na.png,\n", None, "every caption is empty"),
        ("file_name,text\n", None, "no rows"),
        (",text\n,red\n", 1, "no column 'file_name' (it has '', 'text')"),
        (
            "file_name,text\n,red\n",
            2,
            "image column 'file_name' holds a value (''), not a file path",
        ),
        (
            "file_name,text,text\na.png,red,rouge\n",
            1,
            "column 'text' is named twice (fields 2 and 3)",
        ),
    ],
)
def test_a_bad_metadata_csv_is_refused_naming_the_line(tmp_path, text, line, reason):
    folder = _folder(tmp_path, text)
    where = f"{folder / 'metadata.csv'}" + (f":{line}" if line else "")
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        FolderSource(folder)
    assert str(err.value) == f"{where}: {reason}"


def test_a_spreadsheet_s_empty_rows_are_skipped_as_blank_lines(tmp_path):
    # Excel writes the rows of once-used cells as bare commas
    text = "file_name,text,\r\na.png,red,\r\n,,\r\ntrain/b.png,blue,\r\n , ,\r\n,,\r\n"
    source = FolderSource(_folder(tmp_path, text))
    assert [(item.caption, item.where.rsplit(":", 1)[1]) for item in source.items] == [
        ("red", "2"),
        ("blue", "4"),
    ]


def test_a_metadata_csv_that_is_not_utf8_names_the_line(tmp_path):
    folder = _folder(tmp_path, "")
    (folder / "metadata.csv").write_bytes(b"file_name,text\na.png,caf\xe9\n")
    with pytest.raises(ValueError, match=r"metadata\.csv:2: not UTF-8 text"):
        FolderSource(folder)


def test_a_metadata_csv_edited_after_the_check_is_read_again(tmp_path):
    folder = _folder(tmp_path, "file_name,text\na.png,red\n")
    check_local_data(str(folder), "auto", "image", "text")
    (folder / "metadata.csv").write_text("file_name,text\na.png,a red square\n")
    assert open_image_text(str(folder), "auto", "train", "image", "text").get(0)[1] == (
        "a red square"
    )


def test_train_refuses_a_bad_metadata_csv_row_before_loading(
    tmp_path, monkeypatch, model_must_not_load
):
    from typer.testing import CliRunner

    from dsharp.cli import app

    monkeypatch.chdir(tmp_path)
    _folder(tmp_path, "file_name,text\na.png,red\ntrain/c.png,gone\n")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "sft_sharpening.yaml"
    args = [str(recipe), "data.generator=none", "data.dataset=ds", "output_dir=run"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"recipe error: {recipe}: data.dataset: {Path('ds') / 'metadata.csv'}:3: "
        "image not found: train/c.png"
    )
    assert not (tmp_path / "run").exists()
