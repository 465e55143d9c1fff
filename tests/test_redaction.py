"""Secret reward options never reach a saved recipe, an evaluation's settings or a bench file:
those a reward declares (``RewardInfo.secret_options``) whatever their type, and those whose
name looks secret, as strings, lists or mappings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from dsharp.config import recipe_to_dict, recipe_to_yaml
from dsharp.generate import SampleSettings
from dsharp.redaction import REDACTED, redact_options, redact_reward_spec
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardInfo
from dsharp.rewards.hookspecs import hookimpl

NAME = "test_private_endpoint"


class _Reward:
    differentiable = False

    def __init__(self, endpoint_auth: object = None, api_keys: object = None, **_: object):
        pass


class _Plugin:
    @hookimpl
    def register_rewards(self, register):
        info = RewardInfo(
            name=NAME, factory=_Reward, description="test", secret_options=("endpoint_auth",)
        )
        register(info)


@pytest.fixture()
def private_reward() -> Iterator[str]:
    plugins.load_plugins()
    plugins.pm.register(_Plugin(), name="test-private-plugin")
    try:
        yield NAME
    finally:
        plugins.pm.unregister(name="test-private-plugin")


def test_names_that_look_secret_lose_strings_lists_and_mappings_but_keep_numbers():
    options = {
        "api_keys": ["sk-one", "sk-two"],
        "auth_token": "tok",
        "headers": {"Authorization": "Bearer xyz", "Accept": "json"},
        "credentials": {"user": "u", "pass": "p"},
        "max_tokens": 64,
        "api_key_env": "MY_KEY",
        "model": "gpt",
        "empty_token": "",
    }
    out = redact_options(options)
    assert out["api_keys"] == REDACTED and out["auth_token"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["credentials"] == REDACTED
    assert out["max_tokens"] == 64 and out["api_key_env"] == "MY_KEY" and out["model"] == "gpt"
    assert out["empty_token"] == ""
    assert options["api_keys"] == ["sk-one", "sk-two"]  # the input is left as it was


def test_a_declared_secret_is_redacted_whatever_its_name_or_type(private_reward: str):
    spec = {"name": private_reward, "options": {"endpoint_auth": 12345, "model": "m"}}
    assert redact_reward_spec(spec)["options"] == {"endpoint_auth": REDACTED, "model": "m"}
    # Another reward's option of that name is not declared secret, and does not look it.
    other = {"name": "shapes", "options": {"endpoint_auth": 12345}}
    assert redact_reward_spec(other)["options"] == {"endpoint_auth": 12345}


def test_saved_recipe_and_eval_settings_hide_declared_and_listed_secrets(
    private_reward: str, tmp_path
):
    from dsharp.config import load_recipe

    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(
        "model: {pretrained: dsharp-mini}\n"
        "method: {name: rlhf_sharpening}\n"
        f"rewards: [{{name: {private_reward}, options: "
        "{endpoint_auth: hunter2-canary, api_keys: [sk-canary-1]}}]\n"
        "data: {generator: shapes}\n"
    )
    recipe = load_recipe(recipe_path)
    text = recipe_to_yaml(recipe)
    assert "canary" not in text and "hunter2" not in text
    assert recipe_to_dict(recipe)["rewards"][0]["options"]["endpoint_auth"] == REDACTED
    settings = SampleSettings(reward=recipe.rewards)
    shown = settings.as_dict()["reward"][0]["options"]
    assert shown == {"endpoint_auth": REDACTED, "api_keys": REDACTED}
    assert "canary" not in repr(settings.as_dict())


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://user:sk-SECRET123@127.0.0.1:9/v1", "http://<redacted>@127.0.0.1:9/v1"),
        ("https://:sk-SECRET123@host/v1", "https://<redacted>@host/v1"),
        ("https://sk-SECRET123@host/v1", "https://<redacted>@host/v1"),  # a token as user
        ("http://user:KE@Y@host/v1", "http://<redacted>@host/v1"),  # an "@" in the key
        ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),  # a port is not a password
        ("https://host:8080/v1?q=a:b@c", "https://host:8080/v1?q=a:b@c"),
    ],
)
def test_a_key_written_into_a_url_is_redacted_and_the_rest_kept(url: str, kept: str):
    assert redact_options({"base_url": url, "nested": [url]}) == {
        "base_url": kept,
        "nested": [kept],
    }


def test_a_saved_url_whose_credentials_were_redacted_is_refused_with_a_hint():
    from dsharp.rewards.base import RewardError
    from dsharp.rewards.mllm import check_mllm_options

    with pytest.raises(RewardError, match="credentials were redacted in a saved recipe: set it"):
        check_mllm_options({"model": "x", "base_url": "http://<redacted>@host:8000/v1"})


def test_an_override_echoed_in_a_recipe_error_keeps_its_secret_out(tmp_path):
    """Error lines go to CI and job logs: a key typed under a misspelled field, or a URL's
    credentials, must not come back in them."""
    from pathlib import Path

    from dsharp.config import load_recipe
    from dsharp.recipe_errors import RecipeError

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    for override, shown in [
        ("rewards.0.optons.api_key=sk-SECRET123", "rewards.0.optons.api_key=<redacted>"),
        ("rewards.0.optons.base_url=http://u:sk-SECRET123@h/v1", "http://<redacted>@h/v1"),
    ]:
        with pytest.raises(RecipeError) as error:
            load_recipe(quickstart, [override])
        assert "SECRET" not in str(error.value) and shown in str(error.value)
    with pytest.raises(RecipeError, match=r"\(from override 'train\.lr=abc'\)"):
        load_recipe(quickstart, ["train.lr=abc"])  # nothing secret: shown as typed
    # overrides that fail to parse echo themselves too, and YAML's detail quotes the value
    for override in [
        "rewards.0.options..api_key=sk-SECRET123",
        "rewards.0.options.api_key=[sk-SECRET123",
        "rewards.9.options.api_key=sk-SECRET123",
        "rewards.0.options.base_url=[http://u:sk-SECRET123@h/v1",
    ]:
        with pytest.raises(RecipeError) as error:
            load_recipe(quickstart, [override])
        assert "SECRET" not in str(error.value) and "<redacted>" in str(error.value)
    from dsharp.commands.common import parse_reward_sets

    for item in ["api_key=[sk-SECRET123", "base_url=[http://u:sk-SECRET123@h/v1"]:
        with pytest.raises(RecipeError) as error:
            parse_reward_sets([item])
        assert "SECRET" not in str(error.value) and "value is not valid YAML" in str(error.value)
    with pytest.raises(RecipeError, match=r"'foo=\[1': line 1: invalid YAML"):
        parse_reward_sets(["foo=[1"])  # nothing secret: the parser's detail stays


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            "http://h/v1?api-version=2024&key=sk-SECRET1",
            "http://h/v1?api-version=2024&key=<redacted>",
        ),
        ("http://h/v1?api_key=sk-SECRET1#top", "http://h/v1?api_key=<redacted>#top"),
        (
            "https://h/v1?Token=sk-SECRET1&sig=sk-SECRET2",
            "https://h/v1?Token=<redacted>&sig=<redacted>",
        ),
        ("http://h/v1?model=x&max_tokens=5", "http://h/v1?model=x&max_tokens=5"),
        ("http://h/cb#token=sk-SECRET1&state=x", "http://h/cb#token=<redacted>&state=x"),
        ("http://h/cb?a=1#/cb?key=sk-SECRET1", "http://h/cb?a=1#/cb?key=<redacted>"),
        ("http://h/doc#section-2", "http://h/doc#section-2"),
    ],
)
def test_a_key_in_a_urls_query_is_redacted_and_the_rest_kept(url: str, kept: str, tmp_path):
    assert redact_options({"base_url": url}) == {"base_url": kept}
    from dsharp.config import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        f"rewards: [{{name: mllm, options: {{model: m, base_url: '{url}'}}}}]\n"
    )
    assert "SECRET" not in recipe_to_yaml(load_recipe(recipe))


def test_a_mapping_given_whole_is_shown_with_its_secrets_redacted():
    from dsharp.redaction import sensitive_setting, shown_setting

    shown = shown_setting("rewards.0={name: mllm, weight: x, options: {token: sk-SECRET1}}")
    assert shown == (
        'rewards.0={"name": "mllm", "weight": "x", "options": {"token": "<redacted>"}}'
    )
    # cut short, with a secret's name in it: nothing of it can be shown safely
    assert shown_setting("a.extra_body={token: sk-SECRET1, b: [1}") == "a.extra_body=<redacted>"
    assert shown_setting("a.max_tokens=512") == "a.max_tokens=512"  # a number is no key
    assert (
        shown_setting("a.options={model: m, max_tokens: 5}")
        == "a.options={model: m, max_tokens: 5}"
    )
    assert not sensitive_setting("a.options={model: m}") and sensitive_setting("a.api_key=k")


def test_recipe_errors_quote_no_secret_of_a_mapping(tmp_path):
    """A mapping where a list belongs is quoted back in the error, from a file or from an
    override: its secret values must not be."""
    from pathlib import Path

    from dsharp.config import load_recipe
    from dsharp.recipe_errors import RecipeError

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        "rewards: {name: mllm, options: {model: m, api_key: sk-SECRET1}}\n"
    )
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    assert "SECRET" not in str(error.value) and "expected a list" in str(error.value)
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    for override in [
        "rewards.0={name: shapes, weight: x, options: {token: sk-SECRET1}}",
        "eval.rewards={token: sk-SECRET1}",
        "rewards.0.optionz={token: sk-SECRET1}",
        "rewards.0.options={token: sk-SECRET1, a: [1}",
    ]:
        with pytest.raises(RecipeError) as error:
            load_recipe(quickstart, [override])
        assert "SECRET" not in str(error.value) and "<redacted>" in str(error.value), override


def test_a_reward_is_not_built_with_a_value_a_saved_recipe_redacted(private_reward: str):
    """``dsharp eval --checkpoint RUN`` and a resume from a run's recipe.yaml read secrets
    as '<redacted>': sent on as the secret, the placeholder would fail (or pass) silently."""
    from dsharp.config import RewardSpec
    from dsharp.rewards.base import RewardError

    saved = redact_reward_spec(
        {"name": private_reward, "options": {"api_keys": {"main": ["sk-SECRET1"]}}}
    )
    spec = RewardSpec(**saved)
    for call in (plugins.check_reward_options, plugins.build_reward):
        with pytest.raises(RewardError, match=r"option 'api_keys' was redacted in a saved"):
            call(spec)
    nested = RewardSpec(name=private_reward, options={"endpoint_auth": {"k": [1, REDACTED]}})
    with pytest.raises(RewardError, match=r"'endpoint_auth\.k\.1' was redacted"):
        plugins.check_reward_options(nested)
    plugins.check_reward_options(RewardSpec(name=private_reward, options={"api_keys": ["k"]}))


TOKEN = "hf_SECRETcanary1234567890abcd"  # a valid variable name, as HF tokens are


def test_a_token_pasted_where_a_variable_name_belongs_is_shown_and_saved_redacted(tmp_path):
    """``api_key_env`` holds a variable's NAME; a token pasted there is a valid name too
    (the mllm reward never echoes it), but plans, errors and saved recipes showed it."""
    from dsharp.config import load_recipe
    from dsharp.redaction import shown_setting

    assert "SECRET" not in shown_setting(f"rewards.0.options.api_key_env={TOKEN}")
    kept = "rewards.0.options.api_key_env=MY_KEY"
    assert shown_setting(kept) == kept
    assert redact_options({"api_key_env": TOKEN, "token_env": "HF_TOKEN"}) == {
        "api_key_env": REDACTED,
        "token_env": "HF_TOKEN",
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        f"rewards: [{{name: mllm, options: {{model: m, api_key_env: {TOKEN}}}}}]\n"
    )
    assert "SECRET" not in recipe_to_yaml(load_recipe(recipe))


def test_a_lower_case_variable_name_in_api_key_env_is_kept(tmp_path, monkeypatch):
    """A lower-case name (``grader_key``) is a variable's name as much as ``OPENAI_API_KEY``
    and worked before: saved as ``<redacted>``, ``eval --checkpoint`` and a resume from the
    saved recipe refused it ("set it again"). Only what looks like a token is hidden."""
    from dsharp.config import RewardSpec, load_recipe
    from dsharp.redaction import shown_setting
    from dsharp.rewards.plugins import build_reward

    for name in ("grader_key", "openai_api_key", "My_Key"):
        kept = f"rewards.0.options.api_key_env={name}"
        assert shown_setting(kept) == kept
        assert redact_options({"api_key_env": name}) == {"api_key_env": name}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\ndata: {generator: shapes}\n"
        "rewards: [{name: mllm, options: {model: m, api_key_env: grader_key}}]\n"
    )
    saved = yaml.safe_load(recipe_to_yaml(load_recipe(recipe)))
    options = saved["rewards"][0]["options"]
    assert options["api_key_env"] == "grader_key"
    monkeypatch.setenv("grader_key", "sk-dsharp-TEST-lower-case-variable")
    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
    build_reward(RewardSpec(name="mllm", options={**options, "base_url": "http://127.0.0.1:9/v1"}))


@pytest.mark.parametrize(
    "setting",
    [
        "sk-SECRETcanary-1234567890abcdef",  # the key alone, its option forgotten
        TOKEN,
        "api_key:sk-SECRETcanary",  # YAML's colon where "=" belongs
        "rewards.0.options.api_key: sk-SECRETcanary",
    ],
)
def test_a_setting_without_an_equals_sign_is_echoed_without_a_key_in_it(setting: str):
    from pathlib import Path

    from dsharp.commands.common import parse_reward_sets
    from dsharp.config import load_recipe
    from dsharp.recipe_errors import RecipeError

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    for refuse in (
        lambda: parse_reward_sets([setting]),
        lambda: load_recipe(quickstart, [setting]),
    ):
        with pytest.raises(RecipeError, match="expected KEY=VALUE") as error:
            refuse()
        assert "SECRET" not in str(error.value) and REDACTED in str(error.value)


def test_a_setting_without_an_equals_sign_and_no_key_is_echoed_as_typed():
    from dsharp.redaction import shown_setting

    for setting in ["train.max_steps", "gradient_checkpointing", "recipes/prompts/general.txt"]:
        assert shown_setting(setting) == setting


def test_a_tokenizer_option_is_no_secret_but_a_token_is():
    """A reward's ``tokenizer`` option (imagereward's) names a folder or hub id: hidden in a
    saved recipe, the reward could not be built again from it. ``hf_token`` stays secret."""
    from dsharp.redaction import looks_secret

    assert not looks_secret("tokenizer")
    assert not looks_secret("tokenizer_path")
    for name in ("max_tokens", "max_new_tokens", "tokens_per_image", "token_limit", "pad_token"):
        assert not looks_secret(name), name  # what a model reads, a string value ("auto")
    assert not looks_secret("stop_token_ids")
    for name in ("hf_token", "access_token", "token", "auth_tokens", "max_tokens_api_key"):
        assert looks_secret(name), name
    assert redact_options({"tokens_per_image": "auto"}) == {"tokens_per_image": "auto"}
    assert redact_options({"tokenizer": "bert-base-uncased"}) == {"tokenizer": "bert-base-uncased"}
    assert redact_options({"token": "plainword"}) == {"token": REDACTED}


@pytest.mark.parametrize(
    "name", ["session_tokens", "admin_tokens", "login_tokens", "keypad_token", "token_identity"]
)
def test_a_secret_name_that_ends_like_a_token_count_is_still_secret(name):
    """The words of a token count or a special token (``n_tokens``, ``pad_token``,
    ``token_id``) are whole words of a name: read inside a word, ``session_tokens`` was
    taken for a count (``sessio`` + ``n_tokens``) and its value saved as given."""
    from dsharp.redaction import looks_secret

    assert looks_secret(name)
    assert redact_options({name: "hunter2pass"}) == {name: REDACTED}
    for count in ("grader_max_tokens", "n_tokens", "token_counts", "tokenizer.pad_token"):
        assert not looks_secret(count), count  # whole words: still counts


def test_a_list_of_numbers_under_a_token_like_name_is_no_secret():
    """An MLLM grader's ``extra_body`` for a vLLM server (``stop_token_ids: [151645]``) was
    saved as ``<redacted>``: compare called every two such evaluations hidden, and the saved
    recipe could not be run again. A list of numbers is no key, as a number is none; a list
    with a string in it is still hidden."""
    from dsharp.comparability import comparability_notes
    from dsharp.redaction import shown_setting

    extra = {"stop_token_ids": [151645, 151643], "min_tokens": 1}
    assert redact_options({"extra_body": extra}) == {"extra_body": extra}
    assert redact_options({"tokens": ["plainword", 3]}) == {"tokens": REDACTED}
    assert redact_options({"token": []}) == {"token": []}
    setting = "rewards.0.options.extra_body.stop_token_ids=[151645, 2]"
    assert shown_setting(setting) == setting
    assert shown_setting("rewards.0.options.token=[plainword]").endswith(f"={REDACTED}")
    spec = redact_reward_spec({"name": "mllm", "options": {"model": "m", "extra_body": extra}})
    evaluation = {"reward_weights": {"mllm": 1.0}, "reward_specs": {"mllm": spec}}
    assert comparability_notes([("a", evaluation), ("b", evaluation)]) == []
