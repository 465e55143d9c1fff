"""What the MLLM grader's key and ``base_url`` credentials may never reach, and how not to.

The HTTP client logs each request's URL (at INFO, which a program using dsharp may show), and
a server or proxy may echo the request's headers into an error or a grade's reasons. So the
client gets a URL without credentials (:func:`connection` moves them into a Basic header),
every outgoing text is passed through :func:`scrub` with the secrets :func:`secrets_of`
lists, and the cache key names the server by :func:`server_identity`, which holds none.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from dsharp.redaction import REDACTED, looks_generated

#: The shortest run of a secret's characters that :func:`scrub` hides on its own: servers
#: echo a key masked (OpenAI's 401: ``Incorrect API key provided: sk-abcde*****wxyz``), and
#: the head they keep is still part of the key.
FRAGMENT = 8


def _without_fragments(text: str, secret: str) -> str:
    """``text`` with every run of ``FRAGMENT`` or more characters of ``secret`` replaced."""
    heads = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    out, i = [], 0
    while i < len(text):
        if text[i : i + FRAGMENT] not in heads:
            out.append(text[i])
            i += 1
            continue
        end = i + FRAGMENT
        while end < len(text) and text[i : end + 1] in secret:
            end += 1
        out.append(REDACTED)
        i = end
    return "".join(out)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` on one line with every one of ``secrets`` replaced (short ones are not
    secrets worth it), longest first, so that a secret holding another goes whole; then any
    run of ``FRAGMENT`` or more of a longer secret's characters (a key echoed masked), where
    the secret looks generated: a placeholder key (``sk-no-key-required``) is made of words
    that a grade's reasons use ("required")."""
    text = " ".join(str(text).split())
    ordered = sorted((s for s in secrets if s and len(s) >= 6), key=len, reverse=True)
    for secret in ordered:
        text = text.replace(secret, REDACTED)
    for secret in ordered:
        if len(secret) > FRAGMENT and looks_generated(secret):
            text = _without_fragments(text, secret)
    return text


def secrets_of(key: str, base_url: str) -> tuple[str, ...]:
    """What no message may show: the API key, and credentials written into ``base_url``
    (``http://user:KEY@host/v1``) whole, by their password, and in the base64 form of the
    HTTP Basic ``Authorization`` header the client sends them in, which a server or proxy may
    echo back in an error."""
    found = [key]
    netloc = urlsplit(base_url).netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        password = unquote(userinfo).partition(":")[2]
        found += [userinfo, unquote(userinfo), password, userinfo.partition(":")[2]]
        # the Basic header as the client sends it (see connection), padded and not
        sent = connection(base_url)[1]["Authorization"].removeprefix("Basic ")
        found += [sent, sent.rstrip("=")]
    return tuple(dict.fromkeys(s for s in found if s))


def connection(base_url: str) -> tuple[str, dict[str, str]]:
    """``base_url`` without credentials written into it, and the HTTP Basic header that
    carries them as the client would have sent them: the HTTP client logs each request's URL
    (at INFO, which a program using dsharp may well show), so the URL it gets holds none."""
    parts = urlsplit(base_url)
    if "@" not in parts.netloc:
        return base_url, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url, {"Authorization": f"Basic {basic}"}


def server_identity(base_url: str) -> str:
    """``base_url`` as part of a cache key: without its credentials (who asks does not change
    the grade, and no password goes into a key) and without a trailing slash."""
    if not base_url:
        return ""
    parts = urlsplit(base_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, ""))
