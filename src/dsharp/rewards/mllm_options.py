"""The MLLM grader's options, each checked with a one-line error that never echoes a secret.

:func:`grader_settings` validates the request settings; :func:`read_key`, :func:`resolve_base_url`
and :func:`resolve_cache` resolve what reaches outside (the environment, the server, the cache
file). :func:`check_base_url` is the one check of a ``base_url`` shared by ``dsharp recipes
validate``, the factory and the grader itself.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dsharp.redaction import REDACTED, shown_beside_a_key
from dsharp.rewards.base import RewardError
from dsharp.rewards.mllm_cache import GradeCache, default_cache_path

DEFAULT_BASE_URL = "https://api.openai.com/v1"
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "none")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONVENTIONAL_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class GraderSettings:
    """Validated options of the grader (everything but the key and the connection)."""

    model: str
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    temperature: float = 0.0
    structured_output: str = "auto"
    image_format: str = "png"
    max_tokens: int | None = None
    on_error: str = "raise"
    extra_body: dict[str, Any] = field(default_factory=dict)


def bad_option(option: str, reason: str) -> RewardError:
    """The one-line error every refused option raises, naming the option."""
    return RewardError(f"mllm: option {option!r}: {reason}")


def _int_option(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_option(name, f"expected an integer >= {minimum}, got {shown_beside_a_key(value)}")
    return value


def _float_option(name: str, value: Any, minimum: float, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (positive and value <= 0):
        bound = "> 0" if positive else f">= {minimum:g}"
        raise bad_option(name, f"expected a number {bound}, got {shown_beside_a_key(value)}")
    return float(value)


def check_key_env_name(api_key_env: Any) -> None:
    """Refuse an ``api_key_env`` that is not a variable name, never echoing it (a key pasted
    there by mistake must not reach a log)."""
    if not isinstance(api_key_env, str) or not _ENV_NAME.match(api_key_env):
        hint = (
            " (a saved recipe hides it: set it again)"
            if api_key_env == REDACTED
            else " (it holds the NAME of the variable, never the key itself)"
        )
        raise bad_option("api_key_env", f"not an environment variable name{hint}")


def read_key(api_key_env: Any) -> tuple[str, str]:
    """(variable name, key); errors never echo a value that could itself be a key."""
    check_key_env_name(api_key_env)
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        # Only a conventional (upper-case) name is echoed: a token pasted here by mistake
        # (e.g. hf_...) is also a valid variable name.
        name = api_key_env if _CONVENTIONAL_ENV_NAME.match(api_key_env) else "named by api_key_env"
        raise RewardError(
            f"mllm: environment variable {name} is not set: the grader reads its API key from "
            "it (api_key_env holds the variable's NAME; for a local server without auth set the "
            "variable to any value, e.g. 'none')"
        )
    return api_key_env, key


# A key shorter than this is a placeholder for a server without auth ("none", "EMPTY",
# "ollama"), which may well be part of a host name or a model's: it is no secret to guard.
MIN_GUARDED_KEY = 16


def _strings(value: Any) -> Iterator[str]:
    """Every string in ``value``, at any depth (``extra_body`` is a mapping), keys included."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str | bytes):
        yield value if isinstance(value, str) else value.decode(errors="replace")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


#: The option (and the variable) that give the server's URL: credentials written into it
#: (``http://user:KEY@host``) are sent in a header (:func:`.mllm_secrets.connection`) and a
#: saved recipe shows them redacted, so only the rest of the URL may not hold the key.
URL_OPTIONS = ("base_url", "OPENAI_BASE_URL")


def without_credentials(url: str) -> str:
    """``url`` as the HTTP client gets it and logs it: without ``user:password@``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL the checks of base_url let through: looked at whole
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _holds(text: str, key: str) -> bool:
    """Whether ``text`` holds ``key`` as typed or percent-encoded."""
    return key in text or key in unquote(text)


def url_holds_key(url: str, key: str) -> bool:
    """Whether ``url`` outside its ``user:password@`` holds ``key``: in its host name too,
    compared there without case (the HTTP client logs the host lower-cased), or in its path.
    The credentials are left out: the factory sends them in a header, and a user name may
    well be the host's."""
    plain = without_credentials(url)
    try:
        host = urlsplit(plain).netloc
    except ValueError:  # not a URL the checks of base_url let through: looked at whole
        host = ""
    return _holds(plain, key) or _holds(host.lower(), key.lower())


def refuse_key_in(values: Mapping[str, Any], key: str, *, what: str = "option") -> None:
    """Refuse any of ``values`` (options by name) that holds the API key, as typed or
    percent-encoded (a key pasted into ``base_url``'s host or path, ``https://host/v1/sk-...``):
    every option is saved with the recipe in the run folder, the HTTP client logs the URL
    with each request, and the model's name is quoted in errors. The refusal names the
    option, never its value."""
    if len(key) < MIN_GUARDED_KEY:
        return
    for name, value in values.items():
        if name in URL_OPTIONS and isinstance(value, str):
            found = url_holds_key(value, key)
        else:
            found = any(_holds(text, key) for text in _strings(value))
        if found:
            raise RewardError(
                f"mllm: {what} {name!r} holds the API key (the value of the variable "
                "api_key_env names): remove it from there; the key is sent in a header, while "
                "the option is logged and saved with the recipe"
            )


def peek_key(api_key_env: Any) -> str:
    """The key in the variable ``api_key_env`` names, or ``""`` when that is no variable
    name or is not set: what a check that must not need the key compares options with."""
    if not isinstance(api_key_env, str) or not _ENV_NAME.match(api_key_env):
        return ""
    return os.environ.get(api_key_env, "").strip()


def check_base_url(base_url: Any) -> str:
    """``base_url`` if it is one the grader may use: the recipe check, the factory and the
    grader itself share this, so that a key written into the URL is refused on every path
    rather than logged. The HTTP client logs each request's URL whole (at INFO), so a query
    (which also breaks the path the client appends) or a fragment is refused outright, and
    never quoted; credentials (``user:KEY@``) pass here because the factory moves them into
    a header (:func:`.mllm_secrets.connection`)."""
    if not isinstance(base_url, str) or not base_url.lower().startswith(("http://", "https://")):
        raise bad_option("base_url", "expected an http:// or https:// URL")
    if any(c.isspace() for c in base_url):  # the client would send it as %20 in every path
        raise bad_option("base_url", "expected no spaces (a space in it is part of its path)")
    if REDACTED in base_url:
        raise bad_option(
            "base_url", "its credentials were redacted in a saved recipe: set it again"
        )
    if "?" in base_url:
        raise bad_option("base_url", "expected no query string (?...): give the key by api_key_env")
    if "#" in base_url:
        raise bad_option("base_url", "expected no fragment (#...): give the key by api_key_env")
    try:  # the parser's own words may quote a part (a port that is a pasted key): not shown
        parts = urlsplit(base_url)
        usable = bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        usable = False
    if not usable:
        raise bad_option(
            "base_url", "not a URL the client can use: expected http(s)://HOST[:PORT]/PATH"
        )
    return base_url


def check_client_url(client: Any) -> None:
    """Refuse a client whose URL the HTTP client would log with a secret in it: a grader built
    around a client directly (library use) skips the factory, which never makes one."""
    url = str(getattr(client, "base_url", "") or "")
    if not url:
        return
    check_base_url(url)
    if "@" in urlsplit(url).netloc:
        raise bad_option(
            "base_url",
            "credentials in the client's URL would be logged with it: build the reward with "
            "build_mllm_reward, which sends them in a header",
        )


def resolve_base_url(base_url: Any) -> str:
    """The server to use: ``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's own, checked
    whichever it is (the variable can hold a key as well as a recipe can)."""
    if base_url is None or base_url == "":
        from_env = os.environ.get("OPENAI_BASE_URL", "").strip()
        try:
            return check_base_url(from_env or DEFAULT_BASE_URL)
        except RewardError as e:  # named as what the user set: not an option of the recipe
            where = "environment variable OPENAI_BASE_URL"
            raise RewardError(str(e).replace("option 'base_url'", where, 1)) from None
    return check_base_url(base_url)


def check_cache_path(cache_path: Any) -> None:
    """Refuse a ``cache_path`` that is no path (checked by ``dsharp recipes validate`` too)."""
    if cache_path is not None and not isinstance(cache_path, str | os.PathLike):
        got = shown_beside_a_key(cache_path)
        raise bad_option("cache_path", f"expected a file path or 'none', got {got}")


def resolve_cache(cache_path: Any) -> GradeCache | None:
    """The grade cache at ``cache_path`` (default under ``$DSHARP_CACHE``), or ``None`` for
    ``"none"``; opened here so that an unusable path fails before any request is paid for."""
    check_cache_path(cache_path)
    if isinstance(cache_path, str) and cache_path.strip().lower() == "none":
        return None
    try:
        return GradeCache(cache_path if cache_path is not None else default_cache_path())
    except OSError as e:
        raise bad_option("cache_path", str(e)) from None


def grader_settings(
    model: Any,
    *,
    max_concurrency: Any,
    timeout_s: Any,
    max_retries: Any,
    backoff_s: Any,
    temperature: Any,
    structured_output: Any,
    image_format: Any,
    max_tokens: Any,
    on_error: Any,
    extra_body: Any,
) -> GraderSettings:
    """The grader's settings from its options, each value checked (one-line ``RewardError``)."""
    if not isinstance(model, str) or not model.strip():
        raise bad_option("model", "required: the grader model's name on the server (e.g. gpt-4o)")
    if structured_output not in STRUCTURED_MODES:
        raise bad_option("structured_output", f"expected one of {', '.join(STRUCTURED_MODES)}")
    if image_format not in ("png", "jpeg"):
        raise bad_option(
            "image_format", f"expected 'png' or 'jpeg', got {shown_beside_a_key(image_format)}"
        )
    if on_error not in ("raise", "missing"):
        raise bad_option(
            "on_error", f"expected 'raise' or 'missing', got {shown_beside_a_key(on_error)}"
        )
    if extra_body is not None and not isinstance(extra_body, dict):
        raise bad_option("extra_body", "expected a mapping of extra request fields")
    return GraderSettings(
        model=model.strip(),
        max_concurrency=_int_option("max_concurrency", max_concurrency, 1),
        timeout_s=_float_option("timeout_s", timeout_s, 0.0, positive=True),
        max_retries=_int_option("max_retries", max_retries, 0),
        backoff_s=_float_option("backoff_s", backoff_s, 0.0),
        temperature=_float_option("temperature", temperature, 0.0),
        structured_output=structured_output,
        image_format=image_format,
        max_tokens=None if max_tokens is None else _int_option("max_tokens", max_tokens, 1),
        on_error=on_error,
        extra_body=dict(extra_body or {}),
    )
