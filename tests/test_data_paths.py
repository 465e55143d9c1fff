"""Paths in image-text data as users write them: ``~`` is the home directory (in a row and
in ``data.dataset``), a relative row path is relative to the file that holds it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsharp.data import FolderSource, JsonlSource, open_image_text


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _rows(path: Path, *rows: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def test_a_tilde_row_is_the_home_directory_and_a_relative_row_the_file_s_folder(
    tmp_path, home, monkeypatch
):
    _png(home / "imgs" / "a.png", (255, 0, 0))
    _png(tmp_path / "data" / "b.png", (0, 0, 255))
    _png(tmp_path / "elsewhere" / "b.png", (0, 255, 0))  # a decoy beside the working directory
    monkeypatch.chdir(tmp_path / "elsewhere")
    path = _rows(
        tmp_path / "data" / "rows.jsonl",
        {"image": "~/imgs/a.png", "text": "red"},
        {"image": "b.png", "text": "blue"},
    )
    source = JsonlSource(path)
    assert source.items[0].path == home / "imgs" / "a.png"
    assert source.get(0)[0].getpixel((0, 0)) == (255, 0, 0)
    assert source.get(1)[0].getpixel((0, 0)) == (0, 0, 255)


def test_a_folder_s_metadata_row_may_start_with_a_tilde(tmp_path, home):
    _png(home / "shared" / "c.png", (0, 255, 0))
    folder = tmp_path / "ds"
    _rows(folder / "metadata.jsonl", {"file_name": "~/shared/c.png", "text": "green"})
    assert FolderSource(folder).get(0)[1] == "green"


def test_a_missing_tilde_row_is_named_as_written(tmp_path, home):
    path = _rows(tmp_path / "rows.jsonl", {"image": "~/imgs/none.png", "text": "x"})
    with pytest.raises(
        FileNotFoundError, match=r"rows\.jsonl:1: image not found: ~/imgs/none\.png$"
    ):
        JsonlSource(path)


def test_data_dataset_may_start_with_a_tilde_for_every_local_kind(home):
    _png(home / "folder" / "a.png", (255, 0, 0))
    (home / "folder" / "a.txt").write_text("red")
    _rows(home / "rows.jsonl", {"image": "folder/a.png", "text": "red"})
    for dataset in ("~/folder", "~/rows.jsonl"):
        image, caption = open_image_text(dataset, "auto", "train", "image", "text").get(0)
        assert caption == "red" and image.getpixel((0, 0)) == (255, 0, 0)


def test_a_saved_hugging_face_dataset_may_start_with_a_tilde(home, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a hub look-up would be the bug
    image = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    ds = datasets.Dataset.from_dict({"image": [image], "text": ["light"]})
    ds.cast_column("image", datasets.Image()).save_to_disk(str(home / "saved"))
    source = open_image_text("~/saved", "auto", "train", "image", "text")
    assert source.get(0)[0].getpixel((0, 0)) == (200, 200, 200)


def test_a_dataset_under_an_unknown_user_s_home_is_refused_naming_it():
    """``~nosuchuser/ds`` stopped the recipe with Python's 'Could not determine home
    directory' (exit 1), naming neither the field nor the path."""
    from dsharp.config import RecipeError, load_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "sft.yaml"
    with pytest.raises(RecipeError, match=r"data\.dataset: not found: ~nosuchuser-dsharp/ds"):
        load_recipe(recipe, ["data.dataset=~nosuchuser-dsharp/ds", "data.generator=none"])


def test_an_output_dir_under_an_unknown_user_s_home_is_refused_naming_it():
    """``output_dir=~nosuchuser/run`` ended train with Python's 'Could not determine home
    directory' (exit 1), naming neither the field nor the path; left unexpanded it would
    make a folder named ``~nosuchuser`` in the current one."""
    from dsharp.config import RecipeError, load_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "sft.yaml"
    with pytest.raises(RecipeError, match=r"output_dir: .*~nosuchuser-dsharp/run") as caught:
        load_recipe(recipe, ["output_dir=~nosuchuser-dsharp/run"])
    assert "\n" not in str(caught.value)


def test_a_prompts_file_under_an_unknown_user_s_home_says_so():
    """Its 'file not found' said relative paths are read from the current folder: true of
    the unexpanded ``~nosuchuser/p.txt``, but not what is wrong with it."""
    from dsharp.config import RecipeError, load_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "ddpo.yaml"
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, ["data.prompts_file=~nosuchuser-dsharp/p.txt"])
    message = str(caught.value)
    assert "data.prompts_file: file not found: ~nosuchuser-dsharp/p.txt" in message
    assert "(no home folder for ~nosuchuser-dsharp)" in message
    assert "current folder" not in message


def test_a_study_output_dir_or_pairs_file_under_an_unknown_user_s_home_is_refused(tmp_path):
    """Both ended in Python's 'Could not determine home directory' (a traceback for the
    study); a folder literally named ``~nosuchuser`` must not be made either."""
    from typer.testing import CliRunner

    from dsharp.cli import app

    root = Path(__file__).resolve().parents[1]
    study = root / "recipes" / "mini" / "table1.yaml"
    args = ["reproduce", str(study), "output_dir=~nosuchuser-dsharp/x", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "output_dir: no home folder for ~nosuchuser-dsharp" in result.stderr
    dpo = root / "recipes" / "paper" / "diffusion_dpo.yaml"
    args = ["train", str(dpo), "method.options.pairs=offline"]
    args += ["method.options.pairs_file=~nosuchuser-dsharp/p.jsonl"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "pairs_file: file not found: ~nosuchuser-dsharp/p.jsonl (no home folder" in result.stderr
    assert not list(Path.cwd().glob("~nosuchuser*"))
