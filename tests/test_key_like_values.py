"""A key pasted under an option whose name says nothing secret (``train.optimizer=sk-...``)
is never echoed or saved, and an ordinary value that merely is long or has digits in it
(``max_tokens: 512``, a hub id, a model's dated name) is shown as typed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dsharp.config import load_recipe, recipe_to_yaml
from dsharp.recipe_errors import RecipeError
from dsharp.redaction import REDACTED, looks_like_key, redact_options, shown_setting

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-SECRETcanary-1234567890abcdef"  # as OpenAI's keys look
GENERIC = "Zq8SECRETcanary1234567890XYZ"  # as Mistral's or Cohere's: no prefix


@pytest.mark.parametrize(
    "setting",
    [
        "method.options.max_tokens: 512",  # ":" typed for "=" under a name with "token" in it
        "model.pretrained: runwayml/stable-diffusion-v1-5",
        "rewards.0.options.model: gpt-4o-2024-08-06",
    ],
)
def test_a_malformed_override_with_no_key_in_it_is_echoed_as_typed(setting: str):
    with pytest.raises(RecipeError, match="expected KEY=VALUE") as error:
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [setting])
    assert f"override {setting!r}" in str(error.value)


def test_ordinary_values_stay_readable_and_keys_under_any_name_are_hidden():
    for kept in (
        "train.project=MyRun2024Exp",
        "model.revision=0123456789abcdef0123456789abcdef01234567",  # a commit pins a revision
        "rewards.0.options.model=gpt-4o-2024-08-06",
        "rewards.0.options.api_key_env=OPENAI_API_KEY",
        "rewards.0.options.base_url=http://127.0.0.1:8000/v1",
        "rewards.0.options.model=sk-no-key-required",  # llama.cpp's placeholder: no key
    ):
        assert shown_setting(kept) == kept
    for key in (KEY, GENERIC, "hf_SECRETcanary1234567890abcd"):
        assert shown_setting(f"rewards.0.options.on_error={key}") == (
            f"rewards.0.options.on_error={REDACTED}"
        )
        assert shown_setting(f"rewards.0.options.model: {key}") == (
            f"rewards.0.options.model: {REDACTED}"
        )


def test_a_path_or_name_with_a_long_run_of_letters_and_digits_is_saved_as_given(tmp_path):
    """The run rule (a key with no prefix) once replaced whole values of a saved recipe: a
    datasets-cache folder named by a sha256, or a project named in words and digits, came
    back as ``<redacted>`` and the run's recipe no longer named its data."""
    cache = tmp_path / ".cache" / "datasets" / "default" / "0.0.0" / ("3f9a2c7e1b4d8e6f" * 4)
    for kept in (
        str(cache),
        "data/laion2024aestheticsubset6plus",
        "dsharp2024experimentsv1",
        "MyExperimentRun2024Final",
    ):
        assert shown_setting(f"data.dataset={kept}") == f"data.dataset={kept}"
        assert redact_options({"path": kept}) == {"path": kept}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        "rewards: [{name: shapes}]\ntrain: {project: dsharp2024experimentsv1}\n"
    )
    saved = yaml.safe_load(recipe_to_yaml(load_recipe(recipe)))
    assert saved["train"]["project"] == "dsharp2024experimentsv1"
    for key in ("3f9a2c7e1b4d8e6f0a1b2c3d4e5f6a7b", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"):
        assert shown_setting(f"rewards.0.options.model={key}") == (
            f"rewards.0.options.model={REDACTED}"
        )  # Azure's hex keys, random mixed case


def test_a_key_under_an_ordinary_reward_option_is_not_saved(tmp_path: Path):
    """A key pasted into ``model`` (not a secret's name) reached recipe.yaml, eval JSON and
    tracker hparams; it is saved as ``<redacted>``, which a reward built from the saved recipe
    refuses ("set it again"), while ordinary options are kept."""
    options = {"model": KEY, "extra_body": {"user": GENERIC}, "image_format": "png"}
    assert redact_options(options) == {
        "model": REDACTED,
        "extra_body": {"user": REDACTED},
        "image_format": "png",
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        f"rewards: [{{name: mllm, options: {{model: {KEY}, max_tokens: 512}}}}]\n"
    )
    saved = recipe_to_yaml(load_recipe(recipe))
    assert "SECRET" not in saved
    assert yaml.safe_load(saved)["rewards"][0]["options"] == {"model": REDACTED, "max_tokens": 512}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        (f"model.variant={GENERIC}", "model.variant"),
        (f"output_dir=runs/{KEY}", "output_dir"),
        (f"method.options.note={KEY}", "method.options.note"),
    ],
)
def test_a_key_in_a_field_outside_the_rewards_options_is_refused_naming_the_field(
    override: str, field: str
):
    """Outside the rewards' options a key-like value is refused, not saved as ``<redacted>``:
    the saved recipe lost ordinary values that only looked like keys (a folder, a model),
    and a run resumed or evaluated from it failed on ``<redacted>``."""
    with pytest.raises(RecipeError, match="looks like an API key or token") as error:
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [override])
    assert f"{field}: " in str(error.value)
    assert "SECRET" not in str(error.value)


def test_a_file_or_folder_named_by_its_hash_is_no_key(tmp_path: Path, monkeypatch):
    """A value that names a file or folder that exists is loaded as given, though hex digits
    alone look like a key: a prompts file named by its sha256, a run folder named by a hash
    being resumed (both loaded at 092c8a5; the resume of such a run was refused)."""
    monkeypatch.chdir(tmp_path)
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    (tmp_path / digest).write_text("a red circle\n")
    run = "5f1e2a9c8b7d6e4f3a2b1c0d9e8f7a6b"
    (tmp_path / run).mkdir()
    quickstart = ROOT / "recipes" / "quickstart.yaml"
    recipe = load_recipe(quickstart, [f"eval.prompts_file={digest}", f"output_dir={run}"])
    assert (str(recipe.eval.prompts_file), recipe.output_dir) == (digest, run)
    with pytest.raises(RecipeError, match="output_dir: looks like an API key or token"):
        load_recipe(quickstart, ["output_dir=0123456789abcdef0123456789abcdef"])  # no folder


def test_a_key_set_in_python_after_loading_is_refused_before_training(tmp_path: Path):
    """``dsharp.train`` of a recipe changed after it loaded refuses a key-like value as the
    loader does: the saved recipe no longer hides such values outside the rewards' options."""
    from dsharp.train_start import check_training

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    recipe.output_dir = str(tmp_path / KEY)  # a folder named after it, and saved in it
    with pytest.raises(RecipeError, match="output_dir: looks like an API key") as error:
        check_training(recipe)
    assert "SECRET" not in str(error.value)
    assert not (tmp_path / KEY).exists()


def test_a_key_as_the_tracker_project_is_refused_by_name():
    """The project names the tracker's log folder in the run folder: a key there would be
    written whatever the saved recipe hides."""
    with pytest.raises(RecipeError, match=r"train\.project: looks like an API key") as error:
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"train.project={KEY}"])
    assert "SECRET" not in str(error.value)
    load_recipe(ROOT / "recipes" / "quickstart.yaml", ["train.project=MyRun2024Exp"])


def _dsharp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DSHARP_CACHE": str(cwd / "cache")}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "dsharp.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["recipes", "validate", "recipes/mini/ddpo.yaml", f"rewards.0.options.on_error={KEY}"],
         "rewards.0.options.on_error"),
        (["recipes", "validate", "recipes/mini/ddpo.yaml", f"train.optimizer={GENERIC}"],
         "train.optimizer"),
        (["recipes", "validate", "recipes/mini/ddpo.yaml", f"rewards.0.name={KEY}"],
         "rewards.0.name"),
        (["train", "recipes/mini/ddpo.yaml", f"rewards.0.on_error={KEY}", "output_dir=OUT"],
         "rewards.0.on_error"),
        (["eval", "--model", "dsharp-mini", "--reward", "clip", "--on-error", KEY],
         "--on-error"),
        (["eval", "--model", "dsharp-mini", "--reward", "clip", "--set", f"on_error={KEY}"],
         "on_error"),
        (["sample", "--model", "dsharp-mini", "-p", "a cube", "--out", "OUT", f"train.x={KEY}"],
         "train.x"),
        (["sample", "--model", "dsharp-mini", "-p", "a", "--out", "OUT", "--steps", "2",
          f"sample.steps={KEY}"], "sample.steps"),
        (["sample", "--model", "dsharp-mini", "-p", "a", "--out", "OUT", "--method", KEY],
         "sample.method"),
        (["rewards", "score", "shapes", "x.png", "--prompt", "a", "--set", f"binary={KEY}"],
         "'binary'"),
    ],
)  # fmt: skip
def test_a_key_under_an_ordinary_option_is_refused_by_name_and_never_echoed(
    args: list[str], names: str, tmp_path: Path
):
    done = _dsharp(*[a.replace("OUT", str(tmp_path / "out")) for a in args], cwd=tmp_path)
    assert done.returncode in (1, 2), done.stderr  # a bad value: refused, not run
    assert "SECRET" not in done.stdout + done.stderr, done.stderr
    assert names in done.stderr and REDACTED in done.stderr, done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any("SECRET" in p.read_text(errors="replace") for p in written)


def test_a_folder_or_name_that_starts_like_a_key_prefix_is_saved_as_given(tmp_path: Path):
    """``hf_``, ``sk-``, ``rk-``... followed by words joined with ``_``/``-`` (an HF cache
    folder, a run folder with a person's initials) once counted as a key: a saved recipe's
    prompts_file and output_dir came back as ``<redacted>`` and ``train.resume`` from it was
    refused ('file not found: <redacted>'); such a project was refused outright."""
    prompts = tmp_path / "hf_prompts_2024_v2" / "prompts.txt"
    prompts.parent.mkdir()
    prompts.write_text("a red circle\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\n"
        f"data: {{prompts_file: {prompts}}}\ntrain: {{project: hf_ddpo_sweep_2024}}\n"
        "output_dir: runs/sk-ddpo-lr1e5-run3\n"
    )
    saved = yaml.safe_load(recipe_to_yaml(load_recipe(recipe)))
    assert saved["data"]["prompts_file"] == str(prompts)
    assert saved["output_dir"] == "runs/sk-ddpo-lr1e5-run3"
    assert saved["train"]["project"] == "hf_ddpo_sweep_2024"
    for kept in (
        "/models/hf_stable_diffusion_v1_5",
        "runs/rk-ablation-2024",
        "fw_sweep_lr_2024_q4",
    ):
        assert shown_setting(f"model.pretrained={kept}") == f"model.pretrained={kept}"
        assert redact_options({"model": kept}) == {"model": kept}
    for key in (
        "sk-proj-Ab3dEf5GhIj7KlMn9OpQr1StUv3WxYz5",
        "sk-ant-api03-aB3dE_5fG7hJ9kL1-mN3pQ5rS7tU9vW1xY",
        "hf_abcdEFGHijklMNOPqrstUVWXyzabCDEFgh",  # letters only, both cases
        "sk-or-v1-0123456789abcdef0123456789abcdef",
    ):
        assert redact_options({"model": key}) == {"model": REDACTED}


@pytest.mark.parametrize(
    "project", ["DDPOvsD3POAblation2024", "SDXLLoRAFinetune2024", "PickScoreDDPO2024Runs"]
)
def test_a_project_named_with_acronyms_is_no_key(project: str):
    """A CamelCase name with acronyms has both cases in good measure, as random keys have:
    ``train.project`` named so was refused ('looks like an API key') and such a reward
    option saved as ``<redacted>``. Mixed-case keys without a prefix are 28+ long."""
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"train.project={project}"])
    assert recipe.train.project == project
    assert redact_options({"model": project}) == {"model": project}


def test_api_key_env_holds_a_lower_case_name_with_digits_as_given():
    """api_key_env had its own rule (16+ characters with a digit), which hid a variable's
    name made of words and a number (saved as ``<redacted>``: ``eval --checkpoint`` then
    asked for it again); it now asks, as the key rule does, for a stretch that looks
    generated."""
    for name in ("openai_key_2024_v2", "my_grader_api_key_2"):
        kept = f"rewards.0.options.api_key_env={name}"
        assert shown_setting(kept) == kept
        assert redact_options({"api_key_env": name}) == {"api_key_env": name}
    for token in ("hf_SECRETcanary1234567890abcd", "k3j4h5g6f7d8s9a0q1w2"):
        assert redact_options({"api_key_env": token}) == {"api_key_env": REDACTED}


def test_a_checksum_mismatch_line_shows_the_digests(tmp_path, monkeypatch, capsys):
    """Error lines hide keys, and a whole sha256 reads as one (64 hex digits, as Together's
    keys): the T2I-CompBench download's mismatch line said ``has sha256 <redacted>, expected
    <redacted>``. It shows the digests' first 16 digits."""
    import hashlib

    import typer

    from dsharp.bench import t2i_data
    from dsharp.commands.errors import user_errors

    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(typer.Exit), user_errors():
        t2i_data._download("color_val.txt", tmp_path / "color_val.txt", lambda url: b"tampered")
    line = capsys.readouterr().err
    assert "checksum mismatch" in line and REDACTED not in line
    assert hashlib.sha256(b"tampered").hexdigest()[:16] in line
    assert t2i_data.expected_sha256("color_val.txt")[:16] in line


def test_a_wandb_key_as_train_project_is_refused():
    """A W&B API key is 40 hex digits, the form of the commit that ``model.revision`` may
    pin and that the key rule therefore keeps: as ``train.project`` it named the tracker's
    log folder and the W&B project. It is refused there, without being quoted."""
    wandb_key = "3f9a2c7e1b4d8e6f0a1b2c3d4e5f6a7b8c9d0e1f"
    echoed = f"train.project={wandb_key}"
    assert shown_setting(echoed) == f"train.project={REDACTED}"
    with pytest.raises(RecipeError, match="looks like an API key") as error:
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"train.project={wandb_key}"])
    assert wandb_key not in str(error.value)
    revision = f"model.revision={wandb_key}"  # as a commit, elsewhere, it is kept
    assert shown_setting(revision) == revision


def _png_data_uri() -> str:
    """A real 16x16 PNG of random pixels, inline: its base64 is a long random-looking run."""
    import base64
    import random
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rng = random.Random(0)
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(48)) for _ in range(16))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    return "data:image/png;base64," + base64.b64encode(png + chunk(b"IEND", b"")).decode()


def test_an_inline_image_is_loaded_and_saved_as_given():
    """A base64 ``data:`` URI is data, no credential: its payload's random-looking runs
    made the recipe refused as holding a key. Echoes still hide those runs."""
    uri = _png_data_uri()
    assert len(uri) > 300 and looks_like_key(uri)
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"method.options.note={uri}"])
    assert recipe.method.options["note"] == uri
    assert uri in recipe_to_yaml(recipe)
    assert REDACTED in shown_setting(f"method.options.note={uri}")


@pytest.mark.parametrize(
    "value",
    [
        f"data:text/plain;base64,{KEY}",
        f"data:text/plain,{KEY}",
        f"data:;base64,x {KEY}",
        "data:;base64," + "AKIA" + "EXAMPLE2FAKE3KEY",  # no media type
        "data:text/plain;base64,aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF",  # a key's length, not an image's
    ],
)
def test_a_key_written_as_a_data_uri_that_is_no_base64_is_still_refused(value: str):
    with pytest.raises(RecipeError, match="looks like an API key or token"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"method.options.note={value}"])


def test_an_uncompressed_inline_image_loads_and_is_saved_as_given():
    """The base64 of a black uncompressed image is one long word of letters ("AAAA..."): a
    URL's scheme was read back to the start of its word from every letter of it (24,000
    characters took 5 s at load and in every echo; bench/redaction_scaling.py times it at
    two lengths). It is data, loaded and saved whole."""
    import base64

    from dsharp.redaction import holds_url_credentials

    bmp = b"BM" + bytes(52) + bytes(18000)  # a header's size, then black pixels
    uri = "data:image/bmp;base64," + base64.b64encode(bmp).decode()
    assert not holds_url_credentials(uri)
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"method.options.note={uri}"])
    assert recipe.method.options["note"] == uri
