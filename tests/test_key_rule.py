"""One key rule (:mod:`dsharp.redaction`) for every place that hides, quotes or refuses a
value: its sure part refuses recipe values at load and keeps commands runnable, its cautious
part (also UUIDs, random-looking single-case runs) hides what errors quote and saved reward
options hold. Every key here is fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml

from dsharp.commands.errors import user_errors
from dsharp.config import load_recipe, recipe_to_yaml
from dsharp.data import JsonlSource
from dsharp.recipe_errors import RecipeError
from dsharp.redaction import (
    REDACTED,
    looks_like_key,
    might_be_key,
    quoted,
    redact_options,
    redact_text,
    shown_setting,
)
from dsharp.rewards.base import RewardError
from dsharp.rewards.mllm import check_mllm_options

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
FAKE_UUID = "0fa4e000-0000-4000-8000-00000000fa4e"  # as Pinecone's or Heroku's keys look
FAKE_LOWER = "fake0k3y9x2q7w4m8n1p5r6t0v3z8b2c4d"  # random lower case and digits (base 36)
FAKE_SHORT = "sk-FAKE0key0123"  # 15 characters: a prefix and a random stretch
FAKE_KEY = "sk-FAKEcanary-1234567890abcdef"


def _mllm_options(**changes: object) -> dict[str, object]:
    return {"model": "m", "base_url": "http://127.0.0.1:9/v1", "cache_path": "none", **changes}


@pytest.mark.parametrize("option", ["image_format", "on_error"])
def test_the_mllm_grader_quotes_no_short_key_the_key_rule_takes(monkeypatch, option: str):
    """The grader had a rule of its own (quote any string under 16 characters), which quoted
    a 15-character key that the general rule hides; a short typo is still quoted."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RewardError, match=f"option '{option}'") as error:
        check_mllm_options(_mllm_options(**{option: FAKE_SHORT}))
    assert "FAKE0key" not in str(error.value)
    assert "not quoted" in str(error.value)
    with pytest.raises(RewardError, match="got 'jpg'"):
        check_mllm_options(_mllm_options(image_format="jpg"))


@pytest.mark.parametrize(
    ("caption", "hidden"),
    [
        ([FAKE_KEY], "FAKEcanary"),
        ({"src": "https://fakeuser:FAKEPASS@example.com/a.png"}, "FAKEPASS"),
        ({"src": "https://ex.com/a?X-Amz-Signature=FAKEsig"}, "FAKEsig"),
    ],
)
def test_a_data_row_error_quotes_no_key_or_url_credentials(tmp_path, caption, hidden: str):
    """A row whose caption is not text was quoted as written (``repr`` cut to 60): a key or a
    signed URL in a row's metadata reached the error line. The rest is still quoted."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"image": "x.png", "text": caption}) + "\n")
    with pytest.raises(ValueError, match="caption column 'text' holds") as error:
        JsonlSource(path)
    assert hidden not in str(error.value)
    assert REDACTED in str(error.value)


@pytest.mark.parametrize(
    "name",
    [
        "access_key",
        "private_key",
        "subscription-key",
        "X-Amz-Signature",
        "X-Goog-Signature",
        "apikey",
        "api_key",
        "key",
        "token",
        "access_token",
    ],
)
@pytest.mark.parametrize("mark", ["?api-version=2024-06-01&", "#", "#/cb?", "?n=1#/cb?"])
def test_a_secret_in_a_urls_query_is_hidden_wherever_the_url_is_shown(name: str, mark: str):
    """``?access_key=``, ``?subscription-key=`` (Azure) and a presigned URL's signature
    were shown and saved as typed; other parameters are kept. A fragment's parameters take
    the same rule: an OAuth callback's ``#access_token=...&state=x`` was shown whole."""
    url = f"https://example.com/v1/x{mark}{name}=FAKEfake&n=2"
    shown = f"https://example.com/v1/x{mark}{name}={REDACTED}&n=2"
    assert redact_text(f"cannot reach {url}") == f"cannot reach {shown}"
    assert redact_options({"endpoint": url}) == {"endpoint": shown}
    assert shown_setting(f"rewards.0.options.endpoint={url}") == (
        f"rewards.0.options.endpoint={shown}"
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://fakeuser:FAKEPASS@example.com/prompts.txt", "holds a URL's credentials"),
        ("https://example.com/prompts.txt?token=FAKEPASS", "holds a URL's credentials"),
        ("https://example.com/cb#access_token=FAKEPASS&state=x", "holds a URL's credentials"),
        ("https://example.com/cb#/route?api_key=FAKEPASS", "holds a URL's credentials"),
        (FAKE_KEY, "looks like an API key"),
    ],
)
def test_a_url_with_credentials_outside_the_rewards_options_is_refused(value: str, why: str):
    """Outside the rewards' options a URL's credentials were saved in the run folder as
    typed (the recipe there keeps such fields whole): they are refused at load, unquoted."""
    with pytest.raises(RecipeError, match=f"method.options.note: {why}") as error:
        load_recipe(QUICKSTART, [f"method.options.note={value}"])
    assert "FAKE" not in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/prompts.txt?api-version=2024-06-01",
        "https://example.com/docs/recipes.html#section-2",
        "https://example.com/docs/recipes.html#page=2&view=fit",
    ],
)
def test_a_url_without_credentials_outside_the_rewards_options_is_loaded(url: str):
    assert load_recipe(QUICKSTART, [f"method.options.note={url}"]).method.options["note"] == url


def test_a_uuid_is_hidden_in_echoes_and_saved_reward_options_but_never_refused(tmp_path):
    """A UUID is a key's form (Pinecone's, Heroku's) and a run's name's: an error line and a
    saved reward option hide it, while a recipe value is loaded and saved as given and a
    setting shown as a command to run again keeps it."""
    assert redact_text(f"got {FAKE_UUID!r}") == f"got {REDACTED!r}"
    assert redact_text(f"key {FAKE_UUID.upper()}.") == f"key {REDACTED}."
    assert might_be_key(FAKE_UUID) and not looks_like_key(FAKE_UUID)
    assert redact_options({"session": FAKE_UUID}) == {"session": REDACTED}
    setting = f"method.options.note={FAKE_UUID}"
    assert shown_setting(setting) == setting
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        f"output_dir: runs/{FAKE_UUID}\n"
        f"method: {{options: {{note: {FAKE_UUID}}}}}\n"
        f"rewards: [{{name: mllm, options: {{model: m, user: {FAKE_UUID}}}}}]\n"
    )
    saved = yaml.safe_load(recipe_to_yaml(load_recipe(recipe)))
    assert saved["output_dir"] == f"runs/{FAKE_UUID}"
    assert saved["method"]["options"]["note"] == FAKE_UUID
    assert saved["rewards"][0]["options"] == {"model": "m", "user": REDACTED}


def test_a_random_looking_run_in_one_case_is_hidden_in_echoes_but_never_refused():
    for key in (FAKE_LOWER, FAKE_LOWER.upper()):
        assert redact_text(f"option 'model': got {key!r}") == f"option 'model': got {REDACTED!r}"
        assert redact_options({"model": key}) == {"model": REDACTED}
        assert not looks_like_key(key)
        loaded = load_recipe(QUICKSTART, [f"method.options.note={key}"])
        assert loaded.method.options["note"] == key


def test_an_error_line_hides_a_uuid_key_and_a_urls_credentials(capsys):
    """Every error line passes the cautious rule: it hid keys of the sure rule only, and
    showed a URL's credentials (a server's URL quoted in a failure) as typed."""
    url = "https://fakeuser:FAKEPASS@example.com/v1?key=FAKEquery"
    with pytest.raises(typer.Exit), user_errors():
        raise ValueError(f"cannot reach {url} (refused) for {FAKE_UUID}")
    line = capsys.readouterr().err
    assert line.strip() == (
        f"error: cannot reach https://{REDACTED}@example.com/v1?key={REDACTED} (refused) "
        f"for {REDACTED}"
    )


def test_an_error_line_hides_a_token_in_a_urls_fragment(capsys):
    """An OAuth callback's token comes in the fragment (too short for the key rule alone):
    it was quoted whole in an error line; the other parameters are kept."""
    url = "https://example.com/cb#access_token=FAKEfrag0token123&state=x"
    with pytest.raises(typer.Exit), user_errors():
        raise ValueError(f"cannot read {url}")
    line = capsys.readouterr().err
    assert line.strip() == (
        f"error: cannot read https://example.com/cb#access_token={REDACTED}&state=x"
    )


@pytest.mark.parametrize(
    "kept",
    [
        "runs/sk-ddpo-lr1e5-run3",
        "hf_prompts_2024_v2/train.jsonl",
        "DDPOvsD3POAblation2024",
        "stablediffusionv15finetune2024x",  # words and numbers in one case
        "ddpoablationseries2024lrsweep01",
        f"runs/{FAKE_UUID}/checkpoints",  # a folder named by a UUID, joined to a path
        f"run-{FAKE_UUID}",
        f"{FAKE_UUID}.json",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data.arrow",
        "/home/user/.cache/huggingface/hub/models--runwayml--stable-diffusion-v1-5",
        "https://example.com/v1/models?api-version=2024-06-01&limit=5",
    ],
)
def test_paths_names_and_digests_pass_the_cautious_rule_too(kept: str):
    assert redact_text(kept) == kept
    assert redact_options({"model": kept}) == {"model": kept}
    assert quoted(kept) == repr(kept)[:57] + ("..." if len(repr(kept)) > 60 else "")
    setting = f"method.options.note={kept}"
    assert shown_setting(setting) == setting


@pytest.mark.parametrize("name", [FAKE_UUID, FAKE_LOWER])
def test_an_error_line_keeps_a_run_folder_named_like_a_cautious_key(
    tmp_path, monkeypatch, capsys, name
):
    """A run folder named by a UUID (or a random single-case id a scheduler gave) is what
    the user must find to fix the error: it stays in the line while it names a file or
    folder that exists, as at load (it was '<redacted>': 'output_dir: <redacted> already
    holds...'). The same value naming nothing is still hidden."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    said = f"output_dir: {name} already holds a run's checkpoints (step-000001)"
    with pytest.raises(typer.Exit), user_errors("recipe error"):
        raise ValueError(f"{said}; resume with: dsharp train r.yaml output_dir={name}")
    line = capsys.readouterr().err.strip()
    assert line == f"recipe error: {said}; resume with: dsharp train r.yaml output_dir={name}"
    # a saved recipe's reward options do not depend on the folder a command runs in
    assert redact_options({"cache": name}) == {"cache": REDACTED}
    (tmp_path / name).rmdir()
    gone = f"output_dir: {name} already holds"
    assert redact_text(gone) == f"output_dir: {REDACTED} already holds"


@pytest.mark.parametrize(
    "url",
    [
        "ssh://git@github.com/org/data.git",  # a user name, no password
        "https://reader@example.com/prompts.txt",
        "https://example.com/prompts.txt?sort_key=name",  # a name ending in 'key', a word
        "https://example.com/prompts.txt?hotkey=ctrl&auth=none",
    ],
)
def test_a_url_with_a_user_name_or_an_ordinary_key_named_parameter_is_loaded(url: str):
    """The load-time refusal is for credentials for sure (a password, a secret-named
    parameter with a secret's value): echoes may hide more, but a recipe value that only
    looks like it was refused and could not be used at all."""
    assert load_recipe(QUICKSTART, [f"method.options.note={url}"]).method.options["note"] == url


# AWS access key IDs: AKIA (long-lived) or ASIA (temporary) and 16 base-32 characters
# (upper-case letters, digits 2-7); built here from obviously fake pieces
FAKE_AWS_IDS = ["AKIA" + "EXAMPLE2FAKE3KEY", "ASIA" + "FAKE2EXAMPLE7KEY"]


@pytest.mark.parametrize("key_id", FAKE_AWS_IDS)
def test_an_aws_access_key_id_is_hidden_in_echoes_and_refused_at_load(key_id: str):
    """An AWS access key ID is 20 upper-case letters and digits: too short for the rule of
    random mixed-case runs, and without a prefix the rule knew, so it was echoed and saved
    under any name."""
    assert len(key_id) == 20
    assert looks_like_key(key_id)
    assert redact_text(f"got {key_id!r}") == f"got {REDACTED!r}"
    assert shown_setting(f"reward.options.on_error={key_id}") == (
        f"reward.options.on_error={REDACTED}"
    )
    assert redact_options({"region": key_id}) == {"region": REDACTED}
    with pytest.raises(RecipeError, match="method.options.note: looks like an API key") as err:
        load_recipe(QUICKSTART, [f"method.options.note={key_id}"])
    assert key_id not in str(err.value)


@pytest.mark.parametrize(
    "kept",
    [
        "ASIAPACIFICSALESDATA",  # 20 upper-case letters, no digit: a name
        "AKIAEXAMPLEEXAMPLEAB",
        "ASIA0PACIFIC0SALES2024",  # longer than an ID
        "AWS_ACCESS_KEY_ID",
        "ASIA_PACIFIC_2024_RUN01",
        "ASIAPACIFIC2024BATCH",  # a 0 (and a year): no base-32 ID has one
        "AKIA2024SWEEPRUN0001",
        "ASIA2024Q3SALESDATA1",
        "runs/ASIAPACIFIC2025BATCH",  # joined to a path's pieces
        "ASIAPACIFIC2025BATCH_v2",
    ],
)
def test_upper_case_names_that_start_like_an_aws_key_id_are_kept(kept: str):
    assert not looks_like_key(kept)
    assert redact_text(kept) == kept
    setting = f"method.options.note={kept}"
    assert shown_setting(setting) == setting
    assert load_recipe(QUICKSTART, [setting]).method.options["note"] == kept


@pytest.mark.parametrize(
    "value",
    [
        "https://mirror.example.com,https://fakeuser:FAKEPASS@example.com/prompts.txt",
        "https://mirror.example.com/x|https://fakeuser:FAKEPASS@example.com",
        "https://proxy.example.com/fetch?u=https://fakeuser:FAKEPASS@example.com/prompts.txt",
        "https://proxy.example.com/fetch?u=https://example.com/prompts.txt?api_key=FAKEPASS",
        "https://proxy.example.com/fetch?u=https://example.com/p.txt?n=1?token=FAKEPASS&x=1",
    ],
)
def test_a_urls_password_after_another_url_is_hidden_and_refused(value: str):
    """A URL written right after another (no space between) or inside another's query is
    read as a piece of the first: only the first one's userinfo and query were looked at,
    so the second one's password or key was echoed, saved in the run folder and loaded."""
    assert "FAKEPASS" not in redact_text(f"cannot reach {value}")
    assert "FAKEPASS" not in shown_setting(f"rewards.0.options.endpoint={value}")
    assert "FAKEPASS" not in json.dumps(redact_options({"endpoint": value}))
    with pytest.raises(RecipeError, match="method.options.note: holds a URL's credentials"):
        load_recipe(QUICKSTART, [f"method.options.note={value}"])


@pytest.mark.parametrize(
    "query",
    ["key=v2", "token=none", "partition_key=2024-01", "sort_key=name2", "key=images/img001.png"],
)
@pytest.mark.parametrize("mark", ["?", "#"])
def test_a_short_or_path_like_value_under_a_key_named_parameter_is_loaded(query: str, mark: str):
    """Too short, or a path: no secret, though its parameter's name is a secret's (in the
    query or in the fragment)."""
    url = f"https://example.com/data.jsonl{mark}{query}"
    assert load_recipe(QUICKSTART, [f"method.options.note={url}"]).method.options["note"] == url


ENCODED_KEY = "sk-proj-FAKEabcdef1234567890xyz"


@pytest.mark.parametrize(
    "value",
    [
        f"https://h.example/cb?redirect_uri=https%3A%2F%2Fh2%2Fy%3Fapi_key%3D{ENCODED_KEY}",
        f"prompt%20{ENCODED_KEY}",
        f"data%2F{ENCODED_KEY}",
    ],
)
def test_a_key_right_after_a_percent_escape_is_hidden_and_refused(value: str):
    """The key rule's start saw the ``D`` of ``%3D`` (the ``0`` of ``%20``) as a letter
    joined to the key: a key in a percent-encoded query was echoed, saved and loaded."""
    assert looks_like_key(value)
    assert "FAKEabcdef" not in redact_text(value)
    assert "FAKEabcdef" not in shown_setting(f"method.options.note={value}")
    with pytest.raises(RecipeError, match="method.options.note: "):
        load_recipe(QUICKSTART, [f"method.options.note={value}"])


@pytest.mark.parametrize(
    "value",
    [
        "prompts/my%20prompts.txt",
        "https://h.example/p?path=%2Fdata%2Fimg001.png&q=my%20prompts.txt",
        "https://h.example/p?redirect_uri=https%3A%2F%2Fh2%2Fcb%3Fstate%3Dabc123xyz",
        "https://h.example/p?u=https%3A%2F%2Fh2%2Fblobs%2F" + "0123456789ABCDEF" * 4 + "%2Fm.bin",
    ],
)
def test_percent_encoded_paths_and_ordinary_encoded_queries_are_kept(value: str):
    """What an escape joins (``%2F``: a path's ``/``) joins as the character would: a sha256
    folder in an encoded path is no key, nor is a word after ``%20``."""
    assert redact_text(value) == value
    setting = f"method.options.note={value}"
    assert shown_setting(setting) == setting
    assert load_recipe(QUICKSTART, [setting]).method.options["note"] == value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            "https://h.example/x?a=1;api_key=FAKEPASS99",
            f"https://h.example/x?a=1;api_key={REDACTED}",
        ),
        (
            "https://h.example/cb#access_token=FAKEPASS99;state=y&z=1",
            f"https://h.example/cb#access_token={REDACTED};state=y&z=1",
        ),
    ],
)
def test_parameters_separated_by_a_semicolon_are_read_one_by_one(value: str, shown: str):
    """``;`` separates parameters as ``&`` does: a key after one was echoed and loaded, and a
    token before one took the rest of the fragment (``;state=y``) with it into the echo's
    ``<redacted>``."""
    assert redact_text(value) == shown
    with pytest.raises(RecipeError, match="method.options.note: holds a URL's credentials"):
        load_recipe(QUICKSTART, [f"method.options.note={value}"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            "https://h.example/cb?redirect_uri=https%3A%2F%2Fh2%2Fy%3Fa%3D1%26api_key%3DFAKEPASS"
            "%26b%3D2&next=1",
            "https://h.example/cb?redirect_uri=https%3A%2F%2Fh2%2Fy%3Fa%3D1%26api_key%3D"
            f"{REDACTED}%26b%3D2&next=1",
        ),
        (
            "https://h.example/cb?r=https%3a%2f%2fh2%2fcb%23access_token%3dFAKEPASS%26state%3dy",
            f"https://h.example/cb?r=https%3a%2f%2fh2%2fcb%23access_token%3d{REDACTED}%26state%3dy",
        ),
        (  # encoded twice: a redirect in a redirect
            "https://h.example/cb?r=https%3A%2F%2Fh%2Fx%3Fu%3Dhttps%253A%252F%252Fh2%252F"
            "y%253Ftoken%253DFAKEPASS%2526s%253D1",
            "https://h.example/cb?r=https%3A%2F%2Fh%2Fx%3Fu%3Dhttps%253A%252F%252Fh2%252F"
            f"y%253Ftoken%253D{REDACTED}%2526s%253D1",
        ),
    ],
)
def test_a_percent_encoded_query_in_a_parameter_takes_the_parameter_rule(value, shown):
    """A URL given percent-encoded in another's parameter (an OAuth ``redirect_uri``) has its
    own parameters read, as one given unencoded has: its key was echoed and loaded whole."""
    assert redact_text(value) == shown
    assert shown_setting(f"rewards.0.options.endpoint={value}") == (
        f"rewards.0.options.endpoint={shown}"
    )
    with pytest.raises(RecipeError, match="method.options.note: holds a URL's credentials"):
        load_recipe(QUICKSTART, [f"method.options.note={value}"])


@pytest.mark.parametrize("nested", ["a=?" * 2000, "a=" + "%3Fa%3D" * 2000 + "x"])
def test_urls_nested_past_reading_are_hidden_and_refused_not_a_traceback(nested: str):
    """URLs nested in parameters' values were read by recursion, once per level: 2000 levels
    overflowed the stack (RecursionError) in every echo and at load. Past 16 levels the rest
    is hidden whole, and a recipe is refused for what could not be read."""
    url = f"https://example.com/?{nested}"
    shown = redact_text(url)
    assert shown.endswith(REDACTED)
    assert len(shown) < 200
    with pytest.raises(RecipeError, match="method.options.note"):
        load_recipe(QUICKSTART, [f"method.options.note={url}"])
    shallow = "https://example.com/?a=?a=?a=x"
    assert redact_text(shallow) == shallow
    assert load_recipe(QUICKSTART, [f"method.options.note={shallow}"]).method.options["note"]


def _nested_in_every_encoding(encodings: int, times: int) -> str:
    """A URL whose query nests URLs given as is and percent-encoded 1 to ``encodings - 1``
    times, one of each in turn, ``times`` over."""
    marks = ["?a="] + [f"%{'25' * (n - 1)}3Fa%{'25' * (n - 1)}3D" for n in range(1, encodings)]
    return "https://example.com/x" + "".join(marks) * times


def test_urls_nested_in_every_encoding_are_read_a_bounded_number_of_times(monkeypatch):
    """Each value is read as given and percent-encoded once more: URLs nested 0 to 8 times
    encoded, 8 of each, were read along 24,310 paths (29 s for a value of 95,000 characters,
    in every echo and at load). Past 64 nested reads the rest is hidden and refused."""
    from dsharp import redaction

    reads: list[int] = []
    real = redaction._url_parameters

    def counted(url: str, level: int = 0) -> str:
        reads.append(level)
        return real(url, level)

    monkeypatch.setattr(redaction, "_url_parameters", counted)
    url = _nested_in_every_encoding(9, 8)
    assert redaction.holds_url_credentials(url)  # not read to the end: not known
    assert len(reads) < 1000
    reads.clear()
    assert redact_text(url).endswith(REDACTED)
    assert len(reads) < 1000


def test_a_nested_url_with_many_parameters_is_read_to_its_last():
    """The reads counted are nested URLs, not their parameters: an encoded redirect with 200
    parameters is read whole, its key hidden and the others kept."""
    params = "%26".join(f"p{i}%3Dv{i}" for i in range(200)) + f"%26api_key%3D{FAKE_KEY}"
    url = f"https://example.com/cb?next=https%3A%2F%2Fh%2Fy%3F{params}&state=s"
    shown = redact_text(url)
    assert FAKE_KEY not in shown and "p199%3Dv199%26api_key%3D" in shown and "&state=s" in shown
    with pytest.raises(RecipeError, match="holds a URL's credentials"):
        load_recipe(QUICKSTART, [f"method.options.note={url}"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            "https://h.example/x?api_key=abc;defGHI123456&y=1",
            f"https://h.example/x?api_key={REDACTED}&y=1",
        ),
        (
            "https://h.example/login?password=Hunter2;Xk9#f",
            f"https://h.example/login?password={REDACTED}#f",
        ),
        (
            "https://h.example/cb?next=https%3A%2F%2Fh%2Fy%3Fapi_key%3Dabc%3BdefGHI123456%26z%3D1",
            f"https://h.example/cb?next=https%3A%2F%2Fh%2Fy%3Fapi_key%3D{REDACTED}%26z%3D1",
        ),
    ],
)
def test_a_semicolon_in_a_secret_value_is_the_values(value: str, shown: str):
    """A ``;`` ends a value only where another parameter follows it (``;state=y``): a
    secret with a ``;`` in it was hidden to the ``;`` alone, its tail echoed, and, the head
    too short for a key, loaded and saved."""
    assert redact_text(value) == shown
    with pytest.raises(RecipeError, match="method.options.note: holds a URL's credentials"):
        load_recipe(QUICKSTART, [f"method.options.note={value}"])
