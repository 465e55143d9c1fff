"""Keeps secrets out of what dsharp writes: reward options in saved recipes, evaluation
results and benchmark files.

An option is secret when its reward declares it in ``RewardInfo.secret_options``, or when its
name looks like one (``api_key``, ``*token*``, ``*secret*``, ``password``...). A declared secret
is redacted whatever its value; a name that only looks secret keeps numbers and booleans
(``max_tokens: 512``) but loses strings, lists and mappings, which is how keys are written.
A URL keeps everything but the credentials written into it.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"api[_-]?key|token|secret|passw(or)?d|credential|authorization", re.I)
# Options that name an environment variable hold no secret themselves (e.g. api_key_env).
_NAMES_A_VARIABLE = re.compile(r"_env(var)?$", re.I)


def looks_secret(name: str) -> bool:
    """Whether an option name looks like it holds a secret."""
    return bool(_SECRET_NAME.search(name)) and not _NAMES_A_VARIABLE.search(name)


# Credentials written into a URL (``https://user:KEY@host/v1``, ``https://TOKEN@host``): the
# userinfo runs to the last "@" before the path.
_URL_CREDENTIALS = r"([a-z][a-z0-9+.-]*://)[^/?#\s]*@"
_URL_USERINFO = re.compile("^" + _URL_CREDENTIALS, re.I)
_URL_WITH_CREDENTIALS = re.compile(_URL_CREDENTIALS, re.I)  # anywhere in a text


def redact_url_credentials(text: str) -> str:
    """``text`` with the credentials of a URL (all of its userinfo) replaced by
    ``"<redacted>"``."""
    return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)


def sensitive_setting(setting: str) -> bool:
    """Whether a ``KEY=VALUE`` setting (an override, a ``--set``) holds a secret: its key
    looks like one, or its value carries credentials in a URL (anywhere in it:
    ``[http://user:KEY@host]`` too)."""
    key, _, value = setting.partition("=")
    secret_key = looks_secret(key.strip().rsplit(".", 1)[-1])
    return secret_key or bool(_URL_WITH_CREDENTIALS.search(value))


def shown_setting(setting: str) -> str:
    """A ``KEY=VALUE`` setting as an error may echo it: a value under a key that looks
    secret (a key typed in, ``rewards.0.options.api_key=sk-...``), or credentials in a URL,
    redacted, since error lines end up in CI and job logs."""
    key, sep, value = setting.partition("=")
    if not sep or not sensitive_setting(setting):
        return setting
    shown = redact_url_credentials(value.strip())
    return f"{key}={shown if shown != value.strip() else REDACTED}"


def redact_options(value: Any, declared: frozenset[str] = frozenset()) -> Any:
    """``value`` (options, at any depth) with every secret value replaced by ``"<redacted>"``,
    and any URL's credentials (a key put in ``base_url``) too."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            hide = item not in (None, "", [], {}) and (
                name in declared
                or (looks_secret(name) and isinstance(item, (str, list, tuple, dict)))
            )
            out[key] = REDACTED if hide else redact_options(item, declared)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_options(item, declared) for item in value]
    if isinstance(value, str):
        return redact_url_credentials(value)
    return value


def declared_secrets(reward_name: str) -> frozenset[str]:
    """The options that the reward ``reward_name`` declares secret (none for an unknown name:
    its options are still redacted by how their names look)."""
    from dsharp.rewards.plugins import UnknownRewardError, get_reward_info

    try:
        return frozenset(get_reward_info(reward_name).secret_options)
    except UnknownRewardError:
        return frozenset()


def redact_reward_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A reward spec (``{name, weight, options, ...}`` as JSON data) with its secret options
    redacted."""
    out = dict(spec)
    if isinstance(out.get("options"), dict):
        out["options"] = redact_options(out["options"], declared_secrets(str(out.get("name"))))
    return out
