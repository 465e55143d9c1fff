"""The MLLM grader's key never reaches an option (saved with the recipe, logged with each
request) nor, whole or in part, a message about a failing server (a loopback fake of it)."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from dsharp.rewards.base import RewardError
from dsharp.rewards.mllm import build_mllm_reward, check_mllm_options
from mllm_server import KEY, GraderServer, Reply, grade_json, images, score

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("mllm_env")


# Each way to write the key into an option the recipe saves: (option, value from the URL).
KEY_IN_OPTIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "url path": lambda url: {"base_url": f"{url}/{KEY}/"},
    "url path, percent-encoded": lambda url: {"base_url": f"{url}/{quote(KEY, safe='')}"},
    # the HTTP client logs the host lower-cased, and a host name is one whatever its case
    "url host": lambda url: {"base_url": url.replace("127.0.0.1", f"{KEY}.localhost")},
    "url host, lower-cased": lambda url: {
        "base_url": url.replace("127.0.0.1", f"{KEY.lower()}.localhost")
    },
    "url host after credentials": lambda url: {
        "base_url": url.replace("127.0.0.1", f"me:pw@{KEY}.localhost")
    },
    "model": lambda url: {"model": f"gpt-4o {KEY}"},
    "cache_path": lambda url: {"cache_path": f"/tmp/{KEY}.sqlite"},
    "extra_body": lambda url: {"extra_body": {"headers": [{"x-auth": KEY}]}},
}


def _options(url: str, **changes: Any) -> dict[str, Any]:
    return {"model": "m", "base_url": url, "cache_path": "none", "max_retries": 0, **changes}


@pytest.mark.parametrize("where", list(KEY_IN_OPTIONS))
def test_an_option_holding_the_key_is_refused_before_any_request_without_echoing_it(
    server: GraderServer, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.DEBUG)
    changes = KEY_IN_OPTIONS[where](server.url)
    (option,) = changes
    for refuse in (
        lambda: build_mllm_reward(**_options(server.url, **changes)),
        lambda: check_mllm_options(_options(server.url, **changes)),  # recipes validate, preflight
    ):
        with pytest.raises(RewardError, match=f"option '{option}' holds the API key") as error:
            refuse()
        assert KEY not in str(error.value) and server.url not in str(error.value)
    assert server.requests == []
    assert not [r for r in caplog.records if KEY in r.getMessage()]


def test_the_recipe_check_reads_the_key_only_where_it_is_set(
    server: GraderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dsharp recipes validate`` needs no key; without one there is nothing to compare."""
    monkeypatch.delenv("OPENAI_API_KEY")
    check_mllm_options(_options(f"{server.url}/{KEY}"))


def test_a_key_in_openai_base_url_is_refused_before_any_request(
    server: GraderServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The HTTP client logs the URL with each request, wherever it came from."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/{KEY}")
    with pytest.raises(RewardError, match="environment variable 'OPENAI_BASE_URL' holds") as e:
        build_mllm_reward(model="m", cache_path="none")
    assert KEY not in str(e.value)
    assert server.requests == []
    assert not [r for r in caplog.records if KEY in r.getMessage()]


@pytest.mark.parametrize(
    "where",
    [lambda url: f"{url}/{KEY}", lambda url: url.replace("127.0.0.1", f"{KEY}.localhost")],
    ids=["path", "host"],
)
def test_a_grader_built_around_a_client_whose_url_holds_its_key_is_refused(
    server: GraderServer, caplog: pytest.LogCaptureFixture, where: Callable[[str], str]
) -> None:
    """The client's URL shows its host lower-cased: the key there is still the key."""
    import openai

    from dsharp.rewards.mllm import GraderSettings, MLLMGrader

    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(api_key=KEY, base_url=where(server.url), max_retries=0)
    with pytest.raises(RewardError, match="option 'base_url' holds the API key") as error:
        grader = MLLMGrader(GraderSettings(model="m", max_retries=0), client, None, [KEY])
        score(grader, images(1), ["a red cube"])
    assert KEY not in str(error.value)
    assert server.requests == []
    assert not [r for r in caplog.records if KEY in r.getMessage()]


def test_a_placeholder_key_for_a_server_without_auth_is_no_secret_to_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ollama's documented key is ``ollama``, and its container is often called so too."""
    monkeypatch.setenv("OPENAI_API_KEY", "ollama")
    options = {"model": "llava", "base_url": "http://ollama:11434/v1", "cache_path": "none"}
    check_mllm_options(options)
    build_mllm_reward(**options)


def test_recipes_validate_refuses_a_recipe_whose_base_url_holds_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check before a run (``dsharp train``'s too): before any run folder is written."""
    from dsharp.cli import app

    monkeypatch.chdir(REPO)
    url = f"rewards.0.options.base_url=http://127.0.0.1:9/v1/{KEY}/"
    done = CliRunner().invoke(app, ["recipes", "validate", "recipes/rlhf_mllm.yaml", url])
    assert done.exit_code == 2, done.output
    assert "rewards.0.options: mllm: option 'base_url' holds the API key" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert KEY not in done.output


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


PAD = "x" * 130  # puts the key across the cut of a quoted server reply
MASKED = f"{KEY[:8]}{'*' * (len(KEY) - 12)}{KEY[-4:]}"
FAILURES: dict[str, tuple[Reply | None, str]] = {
    "401 naming the key": (Reply(401, body={"error": {"message": f"bad key {KEY}"}}), "HTTP 401"),
    # OpenAI's own 401 masks the key but keeps its head: part of the key all the same
    "401 naming the key masked": (
        Reply(401, body={"error": {"message": f"Incorrect API key provided: {MASKED}."}}),
        "HTTP 401",
    ),
    "500 naming the key past the cut": (
        Reply(500, body={"error": {"message": f"{PAD} {KEY}"}}),
        "HTTP 500",
    ),
    "prose naming the key past the cut": (Reply(content=f"{PAD[:50]} {KEY}"), "no JSON object"),
    "web page naming the key past the cut": (
        Reply(html=f"<p>{PAD[:60]}{KEY}</p>"),
        "not a chat completion",
    ),
    "connection refused": (None, "cannot reach the server"),
    "timeout": (Reply(content=grade_json(8.0), delay_s=5.0), "no reply within timeout_s"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_server_leaves_no_part_of_the_key_in_the_error_its_chain_or_the_log(
    server: GraderServer, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """A reply is quoted cut short: scrubbed after the cut, a key across it would keep its
    head. Checked in the whole traceback (a ``--debug`` run shows it) and every log record."""
    reply, reason = FAILURES[failure]
    caplog.set_level(logging.DEBUG)
    logging.getLogger("openai").setLevel(logging.DEBUG)
    if reply is not None:
        server.responder = lambda body, n: reply
    url = server.url if reply is not None else _dead_url()
    reward = build_mllm_reward(**_options(url, max_retries=1, backoff_s=0, timeout_s=0.3))
    with pytest.raises(RewardError, match=reason) as error:
        score(reward, images(1), ["a red cube"])
    shown = "".join(traceback.format_exception(error.value))
    texts = [shown, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if KEY[:8] in t]


@pytest.mark.parametrize(
    "netloc",
    [
        # a proxy that takes the key as its Basic password: the factory sends it in a
        # header and a saved recipe shows it redacted, as before the key guard
        f"me:{quote(KEY, safe='')}@127.0.0.1",
        # a user name that is also the host's: moved into the header, no key anywhere
        "grader-service-user@grader-service-user.localhost",
    ],
    ids=["key as the url's password", "user name in the host"],
)
def test_credentials_written_into_base_url_are_no_key_in_an_option(netloc: str) -> None:
    """Before: both were refused as "option 'base_url' holds the API key", the second with no
    key in it at all (the grader compared the credentials moved out of the URL with its
    host)."""
    options = _options(f"http://{netloc}:9/v1")
    check_mllm_options(options)
    build_mllm_reward(**options)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_tokens", KEY),
        ("max_concurrency", KEY),
        ("max_retries", KEY),
        ("timeout_s", KEY),
        ("backoff_s", KEY),
        ("temperature", KEY),
        ("image_format", KEY),
        ("on_error", KEY),
        ("cache_path", [KEY]),
    ],
)
def test_a_key_in_the_wrong_option_is_not_quoted_where_its_variable_is_not_set(
    monkeypatch: pytest.MonkeyPatch, option: str, value: Any
) -> None:
    """Without the variable (``recipes validate`` on another machine, a key pasted instead of
    set) nothing tells the key from a bad value: a long string is not quoted. Before, every
    one of these errors quoted it whole, and ``recipes validate`` let ``cache_path`` pass."""
    monkeypatch.delenv("OPENAI_API_KEY")
    options = _options("http://127.0.0.1:9/v1", **{option: value})
    for check in (lambda: check_mllm_options(options), lambda: build_mllm_reward(**options)):
        with pytest.raises(RewardError, match=f"option '{option}'") as error:
            check()
        assert KEY[:8] not in str(error.value)


def test_a_short_bad_value_is_still_quoted() -> None:
    with pytest.raises(RewardError, match="expected 'png' or 'jpeg', got 'jpg'"):
        check_mllm_options(_options("http://127.0.0.1:9/v1", image_format="jpg"))
