"""Recipe schema, YAML loading, overrides, one-line errors, redaction and the recipes CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import (
    Recipe,
    RecipeError,
    load_recipe,
    read_prompts_file,
    recipe_from_dict,
    recipe_to_dict,
    recipe_to_yaml,
    save_recipe,
)
from dsharp.recipe_listing import schema_fields

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a red circle\r\n\r\n# a comment\r\n  two blue squares  \n\n")
    return path


@pytest.fixture
def recipe_file(tmp_path: Path, prompts_file: Path) -> Path:
    path = tmp_path / "mini_rlhf.yaml"
    path.write_text(
        f"""\
# dsharp train {path}
model:
  pretrained: dsharp-mini
  family: mini
method:
  name: rlhf_sharpening
  n: 4
rewards:
  - name: shapes
    weight: 2.0
    options: {{binary: true}}
data:
  prompts_file: {prompts_file}
train:
  lr: 1e-5          # YAML 1.1 would read this as a string
  max_steps: 20
  trackers: [tensorboard]
eval:               # all keys commented out: defaults
""",
        encoding="utf-8",
    )
    return path


def _error(path: Path, overrides: list[str]) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_recipe_loads_with_defaults_and_typed_values(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file)
    assert recipe.model.pretrained == "dsharp-mini"
    assert recipe.method.n == 4 and recipe.method.m == 3  # m from the defaults
    assert recipe.train.lr == pytest.approx(1e-5) and isinstance(recipe.train.lr, float)
    assert recipe.rewards[0].options == {"binary": True}
    assert recipe.output_dir == "runs/mini_rlhf"
    assert recipe.eval.seeds == 2
    assert recipe.data.load_prompts() == ["a red circle", "two blue squares"]


def test_an_output_dir_under_home_is_the_home_folder_for_every_command(
    recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dsharp train` made a folder literally named ~ where eval --recipe and studies wrote
    to the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe = load_recipe(recipe_file, ["output_dir=~/runs/{recipe_name}"])
    assert recipe.output_dir == str(tmp_path / "runs" / recipe_file.stem)
    assert recipe.resolved_output_dir("other") == tmp_path / "runs" / recipe_file.stem


def test_a_prompts_file_that_cannot_be_read_is_one_line(
    prompts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.read_text

    def read_text(self: Path, *args, **kwargs):
        if self == prompts_file:  # as chmod 000 does to anyone but root
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(
        ValueError, match=f"^{prompts_file}: cannot be read \\(Permission denied\\)$"
    ):
        read_prompts_file(prompts_file)


def test_prompts_file_reading_handles_crlf_comments_and_blanks(prompts_file: Path) -> None:
    assert read_prompts_file(prompts_file) == ["a red circle", "two blue squares"]


def test_overrides_parse_yaml_values_and_index_lists(recipe_file: Path) -> None:
    recipe = load_recipe(
        recipe_file,
        [
            "train.max_steps=7",
            "train.lr=3e-6",
            "model.gradient_checkpointing=true",
            "rewards.0.weight=0.5",
            "rewards.0.options.binary=false",
            "rewards.1.name=shapes",  # one past the end appends
            "train.trackers=[tensorboard, wandb]",
            "sample.steps=10",
            "output_dir=/tmp/elsewhere",
        ],
    )
    assert recipe.train.max_steps == 7
    assert recipe.train.lr == pytest.approx(3e-6)
    assert recipe.model.gradient_checkpointing is True
    assert recipe.rewards[0].weight == 0.5 and recipe.rewards[0].options == {"binary": False}
    assert [r.name for r in recipe.rewards] == ["shapes", "shapes"]
    assert recipe.train.trackers == ["tensorboard", "wandb"]
    assert recipe.sample.steps == 10
    assert recipe.output_dir == "/tmp/elsewhere"


def test_mixed_precision_no_works_unquoted_in_the_file_and_as_an_override(
    recipe_file: Path, tmp_path: Path
) -> None:
    """YAML 1.1 reads an unquoted ``no`` as false: the documented value was refused
    ("expected one of 'no', 'fp16', 'bf16', got False") unless quoted."""
    assert load_recipe(recipe_file, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    text = recipe_file.read_text(encoding="utf-8")
    written = tmp_path / "no.yaml"
    written.write_text(
        text.replace("  max_steps: 20\n", "  max_steps: 20\n  mixed_precision: no\n")
    )
    recipe = load_recipe(written)
    assert recipe.train.mixed_precision == "no"
    assert load_recipe(written, ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    saved = tmp_path / "saved.yaml"
    save_recipe(recipe, saved)
    assert load_recipe(saved).train.mixed_precision == "no"
    assert "got True" in _error(recipe_file, ["train.mixed_precision=yes"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("methd.n=3", "methd: unknown key, did you mean 'method'?"),
        ("method.nn=3", "method.nn: unknown key, did you mean 'n'?"),
        ("rewards.0.wieght=1", "rewards.0.wieght: unknown key, did you mean 'weight'?"),
        ("train.max_steps=abc", "train.max_steps: expected an integer, got 'abc'"),
        ("train.max_steps=2.5", "train.max_steps: expected an integer, got 2.5"),
        ("train.lr=yes", "train.lr: expected a number, got True (YAML reads yes, no, on and"),
        ("max_steps=2", "max_steps: unknown key, did you mean 'train.max_steps'?"),
        ("train.seed=-1", "train.seed: must be >= 0, got -1"),  # torch refused it after loading
        ("train.seed=4294967296", "train.seed: must be <= 4294967295, got 4294967296"),
        ("guidance=3", "did you mean 'method.guidance' or 'sample.guidance'?"),
        ("method.n=0", "method.n: must be >= 1, got 0"),
        ("method.eta=1.5", "method.eta: must be <= 1.0, got 1.5"),  # NaN steps above 1
        ("sample.eta=2", "sample.eta: must be <= 1.0, got 2"),
        ("method.target=consistant", "did you mean 'consistent'?"),
        ("data.prompts_file=/no/such/prompts.txt", "data.prompts_file: file not found:"),
        ("method.name=rlhf_sharpenin", "did you mean 'rlhf_sharpening'? (known: "),
        (
            "rewards.0.name=shapse",
            "rewards.0.name: unknown reward 'shapse', did you mean 'shapes'?",
        ),
        ("eval.bench=shapse", "eval.bench: unknown bench 'shapse', did you mean 'shapes'?"),
        ("eval.bench=t2i-compbench", "eval.bench: t2i-compbench is not scored after training"),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_file_and_field(
    recipe_file: Path, override: str, expected: str
) -> None:
    message = _error(recipe_file, [override])
    assert message.startswith(f"{recipe_file}: ")
    assert expected in message
    assert message.endswith(f"(from override {override!r})")


def test_misspelled_top_level_key_in_the_file_is_reported_before_missing_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("modle:\n  pretrained: dsharp-mini\n", encoding="utf-8")
    message = _error(path, [])
    assert message.startswith(f"{path}: modle: unknown key, did you mean 'model'?")


def test_override_errors_name_the_override(recipe_file: Path) -> None:
    assert "expected KEY=VALUE" in _error(recipe_file, ["train.max_steps"])
    assert "index 5 out of range (length 1)" in _error(recipe_file, ["rewards.5.weight=1"])
    assert "cannot set 'x' inside it" in _error(recipe_file, ["train.max_steps.x=1"])
    created = _error(recipe_file, ["train.seed.x=1"])  # seed is not in the file
    assert created.endswith(
        "train.seed: expected an integer, got {'x': 1} (from override 'train.seed.x=1')"
    )


def test_cross_section_requirements(tmp_path: Path) -> None:
    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    with pytest.raises(RecipeError, match=r"data\.prompts: method 'rlhf_sharpening' needs prompts"):
        recipe_from_dict(base)
    sft = {**base, "method": {"name": "sft_sharpening"}}
    with pytest.raises(RecipeError, match=r"data\.dataset: .*needs image-text data"):
        recipe_from_dict(sft)
    assert recipe_from_dict({**sft, "data": {"generator": "shapes"}}).data.generator == "shapes"
    no_rewards = {"model": base["model"], "data": {"prompts": ["a cat"]}}
    with pytest.raises(RecipeError, match=r"^rewards: .*needs at least one reward"):
        recipe_from_dict(no_rewards)
    missing = {**sft, "data": {"dataset": str(tmp_path / "nope.jsonl")}}
    with pytest.raises(RecipeError, match=r"data\.dataset: not found"):
        recipe_from_dict(missing)
    hub = recipe_from_dict({**sft, "data": {"dataset": "someone/pairs"}})
    assert hub.data.dataset == "someone/pairs"  # a hub id: no local file is required
    one_path = {**base, "data": {"prompts": ["a cat"]}, "method": {"n": 1}}
    with pytest.raises(RecipeError, match=r"^method\.n: .*'rlhf_sharpening' needs n >= 2"):
        recipe_from_dict(one_path)
    assert (
        recipe_from_dict(
            {**sft, "data": {"generator": "shapes"}, "method": {"name": "sft_sharpening", "n": 1}}
        ).method.n
        == 1
    )


def test_yaml_problems_are_one_line(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("model: {pretrained: a}\nmodel: {pretrained: b}\n", encoding="utf-8")
    assert _error(dup, []) == f"{dup}: line 2: invalid YAML: duplicate key 'model'"
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [\n  - a\n", encoding="utf-8")
    assert _error(broken, []).startswith(f"{broken}: line ")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n", encoding="utf-8")
    assert "expected a mapping at the top level" in _error(listing, [])
    assert _error(tmp_path / "absent.yaml", []) == f"{tmp_path / 'absent.yaml'}: file not found"


RECURSIVE = "a YAML anchor is used inside itself (the value would contain itself)"


@pytest.mark.parametrize("value", ["&a {x: *a}", "&a [*a]", "&a {x: [1, {y: *a}]}"])
def test_an_anchor_used_inside_itself_is_one_line_naming_the_key(
    tmp_path: Path, value: str
) -> None:
    """Before: "error: maximum recursion depth exceeded" for an override (the redaction of
    the setting recursed into the endless value), exit 1; "invalid YAML: found
    unconstructable recursive node" in a file, naming no key."""
    recipe = tmp_path / "rec.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\nrewards:\n  - name: mllm\n    options:\n"
        f"      extra_body: {value}\n",
        encoding="utf-8",
    )
    assert _error(recipe, []) == f"{recipe}: line 5: rewards.0.options.extra_body: {RECURSIVE}"
    plain = tmp_path / "plain.yaml"
    plain.write_text("model: {pretrained: dsharp-mini}\nrewards: [{name: mllm}]\n")
    override = f"rewards.0.options.extra_body={value}"
    assert _error(plain, [override]) == (
        f"{plain}: override {override!r}: value is not valid YAML: line 1: {RECURSIVE}"
    )
    for command in (["recipes", "validate"], ["train"]):
        result = CliRunner().invoke(app, [*command, str(plain), override])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and RECURSIVE in result.stderr, result.stderr


def test_redaction_and_atomic_save_round_trip(recipe_file: Path, tmp_path: Path) -> None:
    secret_opts = [
        "rewards.0.options={api_key: sk-live-123, auth_token: tok, max_tokens: 64, "
        "headers: {Authorization: Bearer xyz}, model: gpt}",
    ]
    recipe = load_recipe(recipe_file, secret_opts)
    options = recipe_to_dict(recipe)["rewards"][0]["options"]
    assert options["api_key"] == "<redacted>" and options["auth_token"] == "<redacted>"
    assert options["headers"] == {"Authorization": "<redacted>"}
    assert options["max_tokens"] == 64 and options["model"] == "gpt"  # not secrets
    assert recipe_to_dict(recipe, redact=False)["rewards"][0]["options"]["api_key"] == "sk-live-123"
    assert recipe.rewards[0].options["api_key"] == "sk-live-123"  # the recipe itself untouched

    out = save_recipe(recipe, tmp_path / "run" / "recipe.yaml")
    text = out.read_text(encoding="utf-8")
    assert "sk-live-123" not in text and "Bearer" not in text
    assert [p.name for p in out.parent.iterdir()] == ["recipe.yaml"]  # no temp file left
    again = load_recipe(out)
    assert again.model_dump() | {"rewards": None} == recipe.model_dump() | {"rewards": None}


def test_a_missing_relative_file_says_where_it_was_looked_for(
    recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = _error(recipe_file, ["data.prompts_file=prompts/none.txt"])
    assert (
        f"data.prompts_file: file not found: prompts/none.txt (relative paths are read from "
        f"the current folder, {tmp_path}) (from override" in message
    )
    message = _error(recipe_file, [f"data.prompts_file={tmp_path / 'none.txt'}"])
    assert f"file not found: {tmp_path / 'none.txt'} (from override" in message  # no hint


def test_prompt_file_reader_names_a_missing_file_or_a_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"none\.txt: no such file$"):
        read_prompts_file(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="a folder, not a prompt file"):
        read_prompts_file(tmp_path)


def test_saved_recipe_reloads_without_its_files(recipe_file: Path, prompts_file: Path) -> None:
    text = recipe_to_yaml(load_recipe(recipe_file))
    assert text.startswith("# ")
    saved = recipe_file.with_name("saved.yaml")
    saved.write_text(text, encoding="utf-8")
    prompts_file.unlink()
    with pytest.raises(RecipeError, match=r"data\.prompts_file: file not found"):
        load_recipe(saved)
    again = load_recipe(saved, validate_files=False)
    assert again.data.prompts_file == prompts_file
    assert again.output_dir == "runs/mini_rlhf"  # fixed when first loaded


def test_every_field_is_described_and_documented() -> None:
    readme = (REPO / "recipes" / "README.md").read_text(encoding="utf-8")
    for dotted, description in schema_fields():
        assert description, f"{dotted} has no description"
        if dotted.startswith("eval.rewards.N."):
            continue  # the same RewardSpec as rewards.N
        assert f"`{dotted}`" in readme, f"recipes/README.md does not document {dotted}"


def test_recipe_model_forbids_unknown_keys_everywhere() -> None:
    import dsharp.config as config

    sections = [
        getattr(config, name)
        for name in (
            "ModelConfig",
            "MethodConfig",
            "RewardSpec",
            "DataConfig",
            "TrainConfig",
            "SampleConfig",
            "EvalConfig",
            "Recipe",
        )
    ]
    assert Recipe in sections
    for model in sections:
        assert model.model_config["extra"] == "forbid", model.__name__
    with pytest.raises(RecipeError, match=r"^sample\.stesp: unknown key, did you mean 'steps'"):
        recipe_from_dict({"model": {"pretrained": "x"}, "sample": {"stesp": 3}})


def test_cli_validate_exit_codes_and_single_line(recipe_file: Path) -> None:
    from dsharp.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["recipes", "validate", str(recipe_file), "train.max_steps=5"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == f"ok: {recipe_file} (rlhf_sharpening, dsharp-mini)"

    bad = runner.invoke(app, ["recipes", "validate", str(recipe_file), "train.max_stesp=5"])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert lines == [
        f"{recipe_file}: train.max_stesp: unknown key, did you mean 'max_steps'? "
        "(from override 'train.max_stesp=5')"
    ]


def test_a_flow_mapping_without_a_space_after_the_colon_is_explained(recipe_file: Path) -> None:
    from dsharp.cli import app

    bad = CliRunner().invoke(app, ["recipes", "validate", str(recipe_file), "train={max_steps:5}"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == (
        f"{recipe_file}: train.max_steps:5: unknown key, did you mean 'max_steps'? (YAML reads "
        "'key:value' as one key; write 'key: value') (from override 'train={max_steps:5}')"
    )


def test_cli_list_reads_method_model_and_command(recipe_file: Path) -> None:
    from dsharp.cli import app

    result = CliRunner().invoke(app, ["recipes", "list", str(recipe_file.parent), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == [
        {
            "file": str(recipe_file),
            "method": "rlhf_sharpening",
            "sampler": None,
            "model": "dsharp-mini",
            "command": f"dsharp train {recipe_file}",
            "error": None,
        }
    ]


def test_cli_list_marks_a_yaml_file_that_is_no_mapping(tmp_path: Path) -> None:
    """It was listed as a recipe of the default method, with another file's command below."""
    from dsharp.cli import app

    (tmp_path / "a_list.yaml").write_text("# dsharp train a_list.yaml\n- 1\n- 2\n")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    result = CliRunner().invoke(app, ["recipes", "list", str(tmp_path), "--json"])
    rows = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert rows["a_list.yaml"]["error"] == "not a recipe (a YAML list, not a mapping)"
    assert rows["empty.yaml"]["error"] == "not a recipe (empty)"


def test_cli_list_commands_run_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe's first-line command names it as seen from the checkout; listed from
    elsewhere, the command names the file as seen from where the user is."""
    from dsharp.cli import app

    folder = tmp_path / "checkout" / "recipes" / "mini"
    folder.mkdir(parents=True)
    recipe = folder / "quick.yaml"
    recipe.write_text(
        "# dsharp train recipes/mini/quick.yaml train.max_steps=2\n"
        "model: {pretrained: dsharp-mini}\nmethod: {name: rlhf_sharpening}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    listing = CliRunner().invoke(app, ["recipes", "list", str(folder.parent), "--json"])
    assert listing.exit_code == 0, listing.output
    (row,) = json.loads(listing.stdout)
    assert row["command"] == f"dsharp train {recipe} train.max_steps=2"

    monkeypatch.chdir(tmp_path / "checkout")
    listing = CliRunner().invoke(app, ["recipes", "list", "recipes", "--json"])
    (row,) = json.loads(listing.stdout)
    assert row["command"] == "dsharp train recipes/mini/quick.yaml train.max_steps=2"

    table = CliRunner().invoke(app, ["recipes", "list", "recipes"], env={"COLUMNS": "300"})
    assert table.exit_code == 0, table.output
    assert "recipes in recipes" in table.output
    caption = "run one as its command with RECIPE = recipes/RECIPE, e.g. dsharp train "
    assert caption + "recipes/mini/quick.yaml train.max_steps=2" in table.output
    (line,) = [x for x in table.output.splitlines() if "quick.yaml" in x and "e.g." not in x]
    # the first column holds the path below the listed folder; the command, the rest, with
    # the overrides after RECIPE where they go
    assert "mini/quick.yaml" in line and "recipes/mini" not in line
    assert "dsharp train RECIPE train.max_steps=2" in " ".join(line.replace("│", " ").split())


def test_an_inference_time_recipe_is_listed_and_validated_as_its_sampler():
    """`dsharp eval --recipe` recipes have no method section: they are not training the
    default method, so list and validate name their sampler."""
    from dsharp.cli import app

    root = Path(__file__).resolve().parents[1]
    listing = CliRunner().invoke(app, ["recipes", "list", str(root / "recipes"), "--json"])
    rows = {Path(row["file"]).name: row for row in json.loads(listing.stdout)}
    assert (rows["demon.yaml"]["method"], rows["demon.yaml"]["sampler"]) == (None, "demon")
    assert rows["inference_scaling.yaml"]["sampler"] == "inference_scaling"
    assert (rows["quickstart.yaml"]["method"], rows["quickstart.yaml"]["sampler"]) == (
        "rlhf_sharpening",
        None,
    )
    table = CliRunner().invoke(
        app, ["recipes", "list", str(root / "recipes")], env={"COLUMNS": "200"}
    )
    (line,) = [x for x in table.stdout.splitlines() if x.startswith("mini/demon.yaml ")]
    assert "demon (sampler)" in line


def test_a_runs_folder_lists_saved_recipes_without_a_command_and_untrained_rows_as_samplers(
    tmp_path: Path,
) -> None:
    """`recipes list RUNS` showed each saved recipe's header comment ("The validated recipe
    of this run, ...") as its command, and a study's inference_scaling row, scored without
    training, as its base recipe's rlhf_sharpening; validate said the same. They read as
    `dsharp runs` reads them now."""
    from dsharp.cli import app

    root = Path(__file__).resolve().parents[1]
    searched = tmp_path / "study" / "is-n-2"  # a study's `train: false` row
    recipe = load_recipe(root / "recipes" / "quickstart.yaml", ["sample.method=inference_scaling"])
    save_recipe(recipe, searched / "recipe.yaml")
    row_eval = {"overall": 0.5, "sample": {"method": "inference_scaling"}, "model": "dsharp-mini"}
    (searched / "eval.json").write_text(json.dumps(row_eval))
    base = tmp_path / "study" / "base"  # the untrained model, plain DDIM
    save_recipe(load_recipe(root / "recipes" / "quickstart.yaml"), base / "recipe.yaml")
    (base / "eval.json").write_text(json.dumps(row_eval | {"sample": {"method": "default"}}))
    trained = tmp_path / "study" / "n-2"  # trained: its method ran, whatever it sampled with
    save_recipe(recipe, trained / "recipe.yaml")
    (trained / "metrics.jsonl").write_text('{"step": 1, "loss": 0.1}\n')
    (trained / "eval.json").write_text(json.dumps(row_eval))

    listing = CliRunner().invoke(app, ["recipes", "list", str(tmp_path), "--json"])
    assert listing.exit_code == 0, listing.output
    rows = {Path(r["file"]).parent.name: r for r in json.loads(listing.stdout)}
    assert {name: (r["method"], r["sampler"], r["command"]) for name, r in rows.items()} == {
        "is-n-2": (None, "inference_scaling", ""),
        "base": (None, "default", ""),
        "n-2": ("rlhf_sharpening", "inference_scaling", ""),
    }
    table = CliRunner().invoke(app, ["recipes", "list", str(tmp_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "validated recipe" not in table.stdout
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if "/recipe.yaml" in line}
    assert lines["study/is-n-2/recipe.yaml"].split()[1:3] == ["inference_scaling", "(sampler)"]
    assert lines["study/base/recipe.yaml"].split()[1:3] == ["default", "(sampler)"]
    assert lines["study/n-2/recipe.yaml"].split()[1] == "rlhf_sharpening"
    validate = CliRunner().invoke(app, ["recipes", "validate", str(searched / "recipe.yaml")])
    assert validate.exit_code == 0, validate.output
    assert validate.stdout.strip().endswith("(inference_scaling (sampler), dsharp-mini)")


def test_the_recipe_listing_keeps_every_row_on_one_line_at_any_width():
    """Names are never folded inside a word: each recipe's row holds its path, method, model
    and command whole, however narrow the terminal (the terminal wraps, as for pip list)."""
    from dsharp.cli import app

    root = Path(__file__).resolve().parents[1]
    listing = CliRunner().invoke(app, ["recipes", "list", str(root / "recipes"), "--json"])
    table = CliRunner().invoke(
        app, ["recipes", "list", str(root / "recipes")], env={"COLUMNS": "40"}
    )
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    for row in json.loads(listing.stdout):
        name = str(Path(row["file"]).relative_to(root / "recipes"))
        (line,) = [x for x in lines if x.startswith(name + " ")]
        assert " ".join(row["command"].split()[:2]) in line, line  # dsharp train, ...
        for cell in (row["model"], row["method"] or f"{row['sampler']} (sampler)"):
            assert cell in line, (cell, line)
    validate = CliRunner().invoke(
        app, ["recipes", "validate", str(root / "recipes/mini/demon.yaml")]
    )
    assert validate.stdout.strip().endswith("(demon (sampler), dsharp-mini)")


def test_misspelled_key_fails_without_loading_torch_or_plugins(recipe_file: Path) -> None:
    """The structural check runs before the plugin registry, so a typo fails fast
    (measured about 0.2 s for the whole CLI; this checks the cause, not the clock)."""
    code = (
        "import sys\n"
        "from dsharp.config import load_recipe, RecipeError\n"
        "try:\n"
        f"    load_recipe({str(recipe_file)!r}, ['method.nn=3'])\n"
        "except RecipeError as e:\n"
        "    print(e)\n"
        "print('torch' in sys.modules, 'dsharp.rewards.plugins' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    message, flags = done.stdout.strip().splitlines()
    assert message.endswith(
        "method.nn: unknown key, did you mean 'n'? (from override 'method.nn=3')"
    )
    assert flags == "False False"

    cli = subprocess.run(
        [sys.executable, "-m", "dsharp.cli", "recipes", "validate", str(recipe_file), "methd.n=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [
        f"{recipe_file}: methd: unknown key, did you mean 'method'? (from override 'methd.n=1')"
    ]


def test_importing_config_does_not_import_torch() -> None:
    code = "import sys, dsharp.config; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_yaml_fixture_is_plain_yaml(recipe_file: Path) -> None:
    """The recipe loader only adds YAML 1.2 floats and duplicate-key checks to safe_load."""
    plain = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    assert plain["train"]["lr"] == "1e-5"  # what plain PyYAML does; load_recipe gives 1e-05
    assert load_recipe(recipe_file).train.lr == 1e-5


def test_sample_method_names_match_the_inference_registry() -> None:
    from dsharp.config import SAMPLE_METHOD_NAMES
    from dsharp.inference import SAMPLE_METHODS

    assert set(SAMPLE_METHOD_NAMES) == set(SAMPLE_METHODS)


def test_unknown_sample_method_is_a_recipe_error(tmp_path: Path) -> None:
    from dsharp.config import RecipeError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {pretrained: x}\nrewards: [{name: shapes}]\ndata: {generator: shapes}\n"
        "sample: {method: demonn}\n"
    )
    with pytest.raises(RecipeError, match=r"sample.method: .*demonn.*did you mean 'demon'"):
        load_recipe(path)


def test_an_empty_training_timestep_range_is_refused_at_load() -> None:
    # timesteps are drawn from [timestep_min, timestep_max): equal ends draw none, which the
    # method refused only after the model had loaded
    base = {"model": {"pretrained": "x"}, "method": {"name": "finetune"}}
    base["data"] = {"generator": "shapes"}
    with pytest.raises(RecipeError, match=r"^method\.timestep_max: must be > timestep_min \(500"):
        recipe_from_dict(base, overrides=["method.timestep_min=500", "method.timestep_max=500"])
    recipe = recipe_from_dict(
        base, overrides=["method.timestep_min=500", "method.timestep_max=501"]
    )
    assert (recipe.method.timestep_min, recipe.method.timestep_max) == (500, 501)


def test_an_override_changes_one_use_of_a_yaml_anchor_not_all(tmp_path):
    """A recipe that reuses its training reward for evaluation through an alias: an override
    of the evaluation's copy left the training reward changed too, silently."""
    from dsharp.config import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        "rewards:\n  - &grader {name: shapes, weight: 1.0, options: {}}\n"
        "eval:\n  prompts: [a red circle]\n  rewards: [*grader]\n"
    )
    cfg = load_recipe(recipe, ["eval.rewards.0.weight=2.0"])
    assert cfg.eval.rewards[0].weight == 2.0
    assert cfg.rewards[0].weight == 1.0


@pytest.mark.parametrize("module", ["dsharp.recipe_io", "dsharp.recipe_data", "dsharp.config"])
def test_each_recipe_module_imports_first_and_config_still_gives_load_save(module: str) -> None:
    """recipe_io imports the schema, and config gives the load/save names lazily: whichever
    module a fresh interpreter imports first, there is no import cycle."""
    code = (
        f"import {module}\n"
        "from dsharp.config import load_recipe, recipe_from_dict, recipe_to_dict, "
        "recipe_to_yaml, save_recipe\n"
        "from dsharp import recipe_io\n"
        "print(load_recipe is recipe_io.load_recipe, save_recipe is recipe_io.save_recipe)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True True"


def test_a_merge_key_loads_as_in_plain_yaml_and_a_duplicate_key_beside_it_still_fails() -> None:
    """Before: ``<<: *base`` failed the whole recipe with "could not determine a constructor
    for the tag 'tag:yaml.org,2002:merge'" (the duplicate-key check built every key)."""
    from dsharp.recipe_yaml import RecipeError, parse_yaml

    text = "base: &b {lr: 1e-5, seed: 1}\ntrain:\n  <<: *b\n  seed: 2\n"
    assert parse_yaml(text) == {"base": {"lr": 1e-5, "seed": 1}, "train": {"lr": 1e-5, "seed": 2}}
    with pytest.raises(RecipeError, match="duplicate key 'seed'"):
        parse_yaml("base: &b {lr: 1}\ntrain:\n  <<: *b\n  seed: 2\n  seed: 3\n")
