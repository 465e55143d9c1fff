"""Image-text sources for SFT methods: folder, jsonl, Hugging Face dataset; prompt files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dsharp.data import (
    FolderSource,
    JsonlSource,
    TrainingData,
    open_image_text,
    read_prompt_file,
    to_tensor,
)


def _image(path, colour):
    Image.fromarray(np.full((40, 30, 3), colour, dtype=np.uint8)).save(path)


def test_folder_with_caption_files(tmp_path):
    _image(tmp_path / "a.png", (255, 0, 0))
    (tmp_path / "a.txt").write_text("a red thing\n")
    _image(tmp_path / "b.jpg", (0, 0, 255))
    (tmp_path / "b.txt").write_text("a blue thing")
    src = open_image_text(str(tmp_path), "auto", "train", "image", "text")
    assert isinstance(src, FolderSource) and len(src) == 2
    image, caption = src.get(0)
    assert caption == "a red thing" and image.getpixel((0, 0)) == (255, 0, 0)


def test_folder_missing_caption_is_an_error_naming_the_image(tmp_path):
    _image(tmp_path / "lonely.png", (1, 2, 3))
    with pytest.raises(FileNotFoundError, match="lonely.png"):
        FolderSource(tmp_path)


def test_jsonl_rows_relative_to_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    _image(tmp_path / "img" / "x.png", (0, 255, 0))
    rows = [{"image": "img/x.png", "text": "green"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    src = open_image_text(str(tmp_path / "data.jsonl"), "auto", "train", "image", "text")
    assert isinstance(src, JsonlSource)
    assert src.get(0)[1] == "green"


def test_jsonl_bad_row_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"image": "x.png"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:1"):
        JsonlSource(path)


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(np.full((8, 8, 3), c, dtype=np.uint8)) for c in (10, 200)]
    ds = datasets.Dataset.from_dict({"image": images, "caption": ["dark", "light"]})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    src = open_image_text(str(tmp_path / "ds"), "auto", "train", "image", "caption")
    assert len(src) == 2
    image, caption = src.get(1)
    assert caption == "light" and image.getpixel((0, 0)) == (200, 200, 200)


def test_hf_dataset_missing_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(ValueError, match="no column 'image'"):
        open_image_text(str(tmp_path / "ds"), "hf", "train", "image", "text")


def test_to_tensor_resizes_and_centre_crops():
    image = Image.fromarray(np.zeros((40, 80, 3), dtype=np.uint8))
    t = to_tensor(image, 16, 16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32


def test_prompt_file_crlf_comments_blanks(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"# header\r\na cat\r\n\r\n  a dog  \r\n")
    assert read_prompt_file(path) == ["a cat", "a dog"]


def test_prompt_file_drops_a_byte_order_mark_and_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_bytes("a red circle\r\n".encode("utf-8-sig"))  # as Windows Notepad saves it
    assert read_prompt_file(path) == ["a red circle"]
    path.write_bytes(b"a red \xff circle\n")
    with pytest.raises(ValueError, match=r"notepad\.txt: not UTF-8 text"):
        read_prompt_file(path)
    path.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompt_file(path)


class _Cfg:
    prompts = ["p0", "p1", "p2", "p3"]
    prompts_file = None
    generator = "none"
    empty_prompt_prob = 0.5
    caption_noise = 0.0
    balance = "prompt"
    dataset = None


def test_batches_are_a_pure_function_of_seed_step_process():
    data = TrainingData(_Cfg(), "prompts", 32, 32, seed=7)
    a = data.batch(4, step=3, process=0, micro=0)
    b = data.batch(4, step=3, process=0, micro=0)
    c = data.batch(4, step=3, process=1, micro=0)
    assert (a.prompts, a.cond_prompts) == (b.prompts, b.cond_prompts)
    assert (a.prompts, a.cond_prompts) != (c.prompts, c.cond_prompts)
    # each of seed, step, process and micro-step picks the draw (8 values: not all alike)
    at = {"seed": 7, "step": 3, "process": 0, "micro": 0}
    for name in at:
        drawn = set()
        for value in range(8):
            where = at | {name: value}
            data = TrainingData(_Cfg(), "prompts", 32, 32, seed=where.pop("seed"))
            batch = data.batch(4, **where)
            drawn.add((tuple(batch.prompts), tuple(batch.cond_prompts)))
        assert len(drawn) > 1, name
    # dropped prompts are blank for conditioning only; the reward still sees the prompt
    assert all(cp in ("", p) for p, cp in zip(a.prompts, a.cond_prompts, strict=True))


def test_shapes_prompt_source_follows_data_split():
    from dsharp.shapes import grammar_prompt_sets, prompt_sets

    class Shapes(_Cfg):
        prompts = None
        generator = "shapes"
        split = "train"

    class Grammar(Shapes):
        split = "grammar"

    train = TrainingData(Shapes(), "prompts", 32, 32, seed=0).prompts
    grammar = TrainingData(Grammar(), "prompts", 32, 32, seed=0).prompts
    assert train == [p for ps in prompt_sets("train").values() for p in ps]
    assert grammar == [p for ps in grammar_prompt_sets().values() for p in ps]
    images = TrainingData(Grammar(), "images", 32, 32, seed=0).batch(2, 0, 0, 0)
    assert set(images.prompts) <= set(grammar) and images.images.shape == (2, 3, 32, 32)


def test_category_balance_draws_each_category_equally_often():
    from dsharp.config import DataConfig
    from dsharp.shapes import grammar_prompt_sets

    category = {p: k for k, ps in grammar_prompt_sets().items() for p in ps}
    counts = {}
    for balance in ("prompt", "category"):
        cfg = DataConfig(generator="shapes", split="grammar", balance=balance)
        data = TrainingData(cfg, "prompts", 32, 32, seed=0)
        drawn = [p for step in range(100) for p in data.batch(10, step, 0, 0).prompts]
        counts[balance] = Counter(category[p] for p in drawn)
    # 12 of 817 grammar prompts are single-object: ~15 of 1000 uniform draws, ~200 balanced
    assert counts["prompt"]["single"] < 40
    assert all(150 < counts["category"][k] < 250 for k in grammar_prompt_sets())


def test_category_weights_set_how_often_each_category_is_drawn():
    from dsharp.config import DataConfig
    from dsharp.shapes import grammar_prompt_sets

    category = {p: k for k, ps in grammar_prompt_sets().items() for p in ps}
    weights = {"single": 3, "counting": 1.5, "color": 0.5}  # spatial, complex: never
    cfg = DataConfig(generator="shapes", split="grammar", balance=weights)
    assert cfg.balance == {"single": 3.0, "counting": 1.5, "color": 0.5}
    data = TrainingData(cfg, "prompts", 32, 32, seed=0)
    drawn = [p for step in range(100) for p in data.batch(10, step, 0, 0).prompts]
    counts = Counter(category[p] for p in drawn)
    assert set(counts) == {"single", "counting", "color"}
    # expected 600 / 300 / 100 of 1000
    assert 550 < counts["single"] < 650 and 250 < counts["counting"] < 350
    assert 70 < counts["color"] < 130


def test_equal_category_weights_draw_like_category_balance_in_proportion():
    from dsharp.config import DataConfig
    from dsharp.shapes import CATEGORIES, grammar_prompt_sets

    category = {p: k for k, ps in grammar_prompt_sets().items() for p in ps}
    cfg = DataConfig(generator="shapes", split="grammar", balance=dict.fromkeys(CATEGORIES, 2))
    data = TrainingData(cfg, "prompts", 32, 32, seed=0)
    drawn = [p for step in range(100) for p in data.batch(10, step, 0, 0).prompts]
    counts = Counter(category[p] for p in drawn)
    assert all(150 < counts[k] < 250 for k in CATEGORIES)


@pytest.mark.parametrize(
    ("balance", "reason"),
    [
        (
            {"singel": 1},
            "unknown category 'singel', did you mean 'single'? "
            "(known: color, complex, counting, single, spatial)",
        ),
        ({"single": -1}, "single: weight must be a number >= 0, got -1"),
        ({"single": "high"}, "single: weight must be a number >= 0, got 'high'"),
        ({"single": 0, "color": 0}, "at least one category needs a weight above 0"),
        ("colour", "expected 'prompt', 'category' or a mapping of category -> weight"),
        (3, "expected 'prompt', 'category' or a mapping of category -> weight, got 3"),
    ],
)
def test_bad_balance_is_a_clear_recipe_error(balance, reason):
    from dsharp.config import RecipeError, recipe_from_dict

    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    with pytest.raises(RecipeError, match="data.balance") as err:
        recipe_from_dict({**base, "data": {"generator": "shapes", "balance": balance}})
    assert reason in str(err.value)


def test_category_balance_needs_the_shapes_generator():
    from dsharp.config import RecipeError, recipe_from_dict

    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    with pytest.raises(RecipeError, match="balance"):
        recipe_from_dict({**base, "data": {"prompts": ["a red circle"], "balance": "category"}})
    with pytest.raises(RecipeError, match="balance"):
        recipe_from_dict({**base, "data": {"prompts": ["a red circle"], "balance": {"single": 1}}})
    with pytest.raises(RecipeError, match="balance"):
        recipe_from_dict({**base, "data": {"generator": "shapes", "balance": "colour"}})


def test_shapes_split_must_be_known():
    from dsharp.config import RecipeError, recipe_from_dict

    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    ok = recipe_from_dict({**base, "data": {"generator": "shapes", "split": "grammar"}})
    assert ok.data.split == "grammar"
    with pytest.raises(RecipeError, match=r"^data\.split: .*train, grammar \(got 'val'\)"):
        recipe_from_dict({**base, "data": {"generator": "shapes", "split": "val"}})


def _folder_with_metadata(folder, image_column: str):
    folder.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        _image(folder / f"{i}.png", colour)
    rows = [{image_column: f"{i}.png", "text": f"thing {i}"} for i in range(2)]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_folder_s_metadata_is_read_at_the_recipe_s_image_column(tmp_path):
    """data.image_column names the image column of a folder's metadata.jsonl too; left at
    its default, the column is imagefolder's `file_name`."""
    named = open_image_text(str(_folder_with_metadata(tmp_path / "a", "img")), "auto", "train",
                            "img", "text")  # fmt: skip
    assert len(named) == 2 and named.get(1)[0].getpixel((0, 0)) == (0, 0, 255)
    default = open_image_text(str(_folder_with_metadata(tmp_path / "b", "file_name")), "folder",
                              "train", "image", "text")  # fmt: skip
    assert default.get(0)[1] == "thing 0"


def test_a_split_of_data_without_splits_is_refused_in_one_line(tmp_path, monkeypatch):
    """data.split picks a split of a Hugging Face dataset (or the shapes prompts); of an image
    folder or a .jsonl file it would pick nothing, silently: refused."""
    from dsharp.config import RecipeError, recipe_from_dict

    monkeypatch.chdir(tmp_path)
    folder = _folder_with_metadata(tmp_path / "ds", "file_name")
    (tmp_path / "rows.jsonl").write_text('{"image": "ds/0.png", "text": "a"}\n')
    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    sft = {**base, "method": {"name": "sft_sharpening"}}
    why = "only used with a Hugging Face dataset or data.generator: shapes; "
    for recipe, unused in [
        ({**sft, "data": {"dataset": "ds"}}, "data.dataset ds is an image folder, read whole"),
        ({**sft, "data": {"dataset": str(folder), "dataset_type": "folder"}}, "image folder"),
        ({**sft, "data": {"dataset": "rows.jsonl"}}, "data.dataset rows.jsonl is a .jsonl file"),
    ]:
        assert recipe_from_dict(recipe).data.split == "train"  # the default: nothing to refuse
        data = {**recipe["data"], "split": "validation"}
        with pytest.raises(RecipeError, match=r"^data\.split: ") as err:
            recipe_from_dict({**recipe, "data": data})
        assert str(err.value).startswith(f"data.split: {why}"), str(err.value)
        assert unused in str(err.value)
        assert "\n" not in str(err.value)
    hub = recipe_from_dict({**sft, "data": {"dataset": "someone/images", "split": "validation"}})
    assert hub.data.split == "validation"
    # a prompt list keeps a recipe's split unused (quickstart's, with data.generator=none)
    prompts = {**base, "data": {"prompts": ["a red circle"], "split": "grammar"}}
    assert recipe_from_dict(prompts).data.split == "grammar"


def test_validate_and_train_refuse_a_folder_s_split_or_missing_column_before_loading(
    tmp_path, monkeypatch, model_must_not_load
):
    from pathlib import Path

    from typer.testing import CliRunner

    from dsharp.cli import app

    monkeypatch.chdir(tmp_path)
    _folder_with_metadata(tmp_path / "ds", "img")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "sft_sharpening.yaml"
    data = ["data.generator=none", "data.dataset=ds"]
    split = [*data, "data.image_column=img", "data.split=validation"]
    for command in (["recipes", "validate"], ["train"]):
        result = CliRunner().invoke(app, [*command, str(recipe), *split, "output_dir=run"])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert "data.split: only used with a Hugging Face dataset" in result.stderr
    # the folder's rows have no `file_name`: the default column is missing, said at once
    result = CliRunner().invoke(app, ["train", str(recipe), *data, "output_dir=run"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"recipe error: {recipe}: data.image_column: {Path('ds') / 'metadata.jsonl'}:1 has no "
        "column 'file_name' (it has 'img', 'text')"
    )
    assert not (tmp_path / "run").exists()


def test_a_split_of_one_saved_dataset_is_refused_and_of_a_saved_dict_is_kept(tmp_path):
    """datasets' save_to_disk of one Dataset has no splits (it is read whole); of a
    DatasetDict, data.split picks one."""
    datasets = pytest.importorskip("datasets")
    from dsharp.config import RecipeError, recipe_from_dict

    one = datasets.Dataset.from_dict({"image": ["x.png"], "text": ["a"]})
    one.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"validation": one}).save_to_disk(str(tmp_path / "dict"))
    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    base["method"] = {"name": "sft_sharpening"}

    def data(name: str) -> dict:
        return {**base, "data": {"dataset": str(tmp_path / name), "split": "validation"}}

    with pytest.raises(RecipeError, match="is one saved dataset without splits, read whole"):
        recipe_from_dict(data("one"))
    assert recipe_from_dict(data("dict")).data.split == "validation"
