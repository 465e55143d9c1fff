"""The one rule for what looks like a secret, kept out of what dsharp writes and says: reward
options in saved recipes, evaluation results and benchmark files, error lines, echoed settings.

An option is secret when its reward declares it in ``RewardInfo.secret_options``, or when its
name looks like one (``api_key``, ``*token*``, ``*secret*``, ``password``...). A declared secret
is redacted whatever its value; a name that only looks secret keeps numbers and booleans
(``max_tokens: 512``) and lists of them (a server's ``stop_token_ids: [151645]``) but loses
strings, other lists and mappings, which is how keys are written.
An option that names an environment variable (``api_key_env``) keeps a variable's name
(``OPENAI_API_KEY``, ``grader_key``) and loses what looks like a token pasted in its place.
A URL keeps everything but the credentials written into it: its userinfo
(``https://user:KEY@host``) and query or fragment parameters named like a secret (``?key=``,
``?api_key=``, ``&token=``, ``#access_token=``, ``?sig=``, ``?subscription-key=``...), its
own or those of a URL in a parameter's value, given as is or percent-encoded
(``?redirect_uri=https%3A%2F%2Fh%2Fcb%3Fapi_key%3D...``).

A value that looks like an API key is caught under any name, by one of two rules:

* **sure** (:func:`looks_like_key`, :func:`hide_keys`): a provider prefix (``sk-``, ``hf_``,
  ``ghp_``...) before a random-looking stretch, an AWS access key ID (``AKIA``/``ASIA`` and
  16 upper-case letters and digits), a JWT, or a standalone run of 20+ hex digits
  or of 28+ letters and digits in random mixed case. A recipe value outside the rewards'
  options that this rule catches is **refused at load** (it would be saved in the run
  folder; an inline image, a base64 ``data:`` URI, is not: :func:`is_data_uri`), as is one
  holding a URL's credentials; settings a command or a plan shows
  (:func:`shown_setting`, a resume command to copy) hide what it catches.
* **cautious** (:func:`might_be_key`, :func:`redact_text`): the sure rule, and also a
  standalone UUID (``123e4567-e89b-...``: Pinecone's, Heroku's keys) and a standalone run of
  28+ letters and digits in one case that looks random. Error lines and quoted values
  (:func:`redact_text`, :func:`quoted`) and saved reward options (:func:`redact_options`)
  use it: hiding there costs a value the user typed (a reward built from a saved recipe asks
  for it again), where refusing it at load would refuse UUID-named runs, which are common.
  In error lines and quotes, what only this rule takes is kept where it names a file or
  folder that exists here (a UUID-named run folder, which the user must find); saved reward
  options do not depend on the folder a command runs in.

Neither rule takes a word joined to a path's or a name's pieces (``runs/<uuid>``,
``runs/sk-ddpo-lr1e5-run3``, ``hf_prompts_2024_v2/...``, a sha256 folder of a cache), words
or CamelCase names (``DDPOvsD3POAblation2024``) or a 40-hex-digit commit for a key; a
percent-escape counts as the character it stands for (``%3Dsk-...`` is a key after ``=``,
``%2F<sha256>`` a path's piece). Next to a
key (the options of a reward that reads one), a bad value is quoted only when it is short
and caught by neither rule (:func:`shown_beside_a_key`): a local server's key may have any
shape.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"api[_-]?key|token|secret|passw(or)?d|credential|authorization", re.I)
# Names with "token" in them that say what a model reads, not what authenticates: a
# tokenizer (a folder or hub id), token counts and limits (max_tokens, tokens_per_image: a
# string value such as "auto"), special tokens (pad_token, stop_token_ids). Hidden in a saved
# recipe, the reward could not be built again from it. They are taken out of a name before
# it is read, so "max_tokens_api_key" is still a secret's name. But for a tokenizer
# (pretokenizer), each is whole words of the name: "session_tokens", "admin_tokens" and
# "keypad_token" end in "n_tokens" or "pad_token" and are secrets' names.
_NOT_A_SECRET_TOKEN = re.compile(
    r"tokeni[sz][a-z]*"
    r"|(?<![a-z0-9])(?:"
    r"(?:max|min|num|n|total)_(?:new_|completion_|prompt_|output_|input_)?tokens"
    r"|tokens_per_[a-z]+"
    r"|(?:pad|eos|bos|unk|sep|cls|mask|stop|special)_tokens?(?:_ids?)?"
    r"|token_(?:limit|count|type|ids?|length|budget)s?"
    r")(?![a-z0-9])",
    re.I,
)
# Options that name an environment variable hold no secret themselves (e.g. api_key_env).
_NAMES_A_VARIABLE = re.compile(r"_env(var)?$", re.I)


def looks_secret(name: str) -> bool:
    """Whether an option name looks like it holds a secret."""
    read = _NOT_A_SECRET_TOKEN.sub(" ", name)
    return bool(_SECRET_NAME.search(read)) and not _NAMES_A_VARIABLE.search(name)


# A variable's name as written by convention (OPENAI_API_KEY). A token pasted where the name
# belongs (hf_..., sk_...) can be a valid name too, but not an upper-case one.
_CONVENTIONAL_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# How long a word must be, at least, to look like a key or token (sk-..., hf_...).
_KEY_LENGTH = 16


def looks_generated(word: str) -> bool:
    """Whether ``word`` has a digit or both cases, as generated keys and tokens do, and words
    and placeholders (``sk-no-key-required``, ``my_key``) do not."""
    return any(c.isdigit() for c in word) or (word.lower() != word != word.upper())


def _not_a_variable_name(name: str, value: Any) -> bool:
    """Whether ``value``, under an option that names an environment variable
    (``api_key_env``), may be the secret itself: a string that is no conventional name and
    is long and has a stretch that looks generated, as a key has (a lower-case name,
    ``grader_key`` or ``openai_key_2024_v2``, is kept)."""
    return (
        bool(_NAMES_A_VARIABLE.search(name))
        and isinstance(value, str)
        and not _CONVENTIONAL_VARIABLE.match(value)
        and len(value) >= _KEY_LENGTH
        and _random_tail(value)
    )


# An API key or token as providers issue them: a known prefix (sk-, hf_, ghp_...) and 12 or
# more characters with a random-looking stretch (see _random_tail), an AWS access key ID
# (AKIA or ASIA and 16 base-32 characters, upper-case letters and the digits 2-7, some of them
# digits: a name with a year or a 0/1 in it is none), a JWT, or a run of 20+
# letters and digits that looks random (Mistral's, Cohere's, Azure's keys: see _random_run);
# for the cautious rule only, a UUID too (see _is_key). Words, model names
# (gpt-4o-2024-08-06), hub ids (runwayml/stable-diffusion-v1-5), names and folders that start
# like a prefix (hf_cache_2024, sk-ddpo-lr1e5-run3) and placeholders (sk-no-key-required)
# are none of these.
# A key starts where no letter or digit is before it, or right after a percent-escape
# (``%3Dsk-...``: a key in an encoded query, ``%20sk-...``), but not inside one (``%2F``).
_KEY = re.compile(
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![A-Za-z0-9%])|(?<=%)(?![0-9A-Fa-f]{2}))(?:"
    r"(?:sk|rk|hf|ghp|gho|ghu|ghs|ghr|github_pat|glpat|gsk|r8|xai|pplx|fw)[-_]"
    r"(?P<rest>[A-Za-z0-9_-]{12,})"
    r"|AIza[A-Za-z0-9_-]{20,}"
    r"|(?P<aws>(?:AKIA|ASIA)[A-Z2-7]{16})"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|(?P<uuid>[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})"
    r"|(?P<run>[A-Za-z0-9]{20,})"
    r")(?![A-Za-z0-9])"
)
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}")  # a pinned revision (model.revision) is no key
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
# A run joined to these is a piece of a path or a name (a sha256 folder of the datasets
# cache, data/laion2024subset, model_v2final...), which a pasted key is not.
_JOINERS = "/\\._-"


# The shortest mixed-case run (no prefix) taken for a key; hex ones count from 20.
_MIXED_CASE_KEY = 28
# How often a random run of lower-case letters and digits (base 36) switches between the two,
# at least, where a name's words and numbers (stablediffusionv15finetune2024) switch rarely.
_SINGLE_CASE_SWITCHES = 6
# A key's part after its prefix has a stretch this long between "-"/"_"; a name's words do not.
_TAIL_STRETCH = 10


def _random_tail(rest: str) -> bool:
    """Whether ``rest``, what follows a key's prefix (``sk-``, ``hf_``...), holds a stretch
    that looks generated: 10+ letters and digits (between ``-``/``_``) with a digit or both
    cases. Keys have one (``sk-proj-...``, ``sk-ant-api03-...``, ``hf_...``); a folder or a
    project named in words after such a start (``hf_cache_2024_10``, ``rk-ablation-2024``,
    ``hf_stable_diffusion_v1_5``) has none, and is no key."""
    stretches = re.split(r"[-_]", rest)
    return any(len(s) >= _TAIL_STRETCH and looks_generated(s) for s in stretches)


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _joined(m: re.Match[str]) -> bool:
    """Whether the word ``m`` matched is joined to a path's or a name's pieces (a full stop
    that ends a sentence joins nothing: ``... got KEY.``), also by a joiner percent-encoded
    (``%2Fdata%2F<sha256>``, a path given in an encoded query)."""
    text, start, end = m.string, m.start(), m.end()
    after = text[end : end + 2]
    sentence_end = after[:1] == "." and not after[1:].isalnum()
    escapes = (_ESCAPE.fullmatch(text, max(start - 3, 0), start), _ESCAPE.match(text, end))
    encoded = [chr(int(e.group(0)[1:], 16)) for e in escapes if e]
    return (
        (start > 0 and text[start - 1] in _JOINERS)
        or (bool(after) and after[0] in _JOINERS and not sentence_end)
        or any(c in _JOINERS for c in encoded)
    )


def _random_run(m: re.Match[str], cautious: bool) -> bool:
    """Whether the run of letters and digits ``m`` matched looks like a generated key: on
    its own (not a path's or a name's piece), with digits, and either hex (not a 40-digit
    commit, which pins ``model.revision``) or, 28+ long, with both cases in good measure
    (random mixed case: about half each; CamelCase names ``MyExperimentRun2024Final``: few
    capitals). Names with acronyms (``SDXLLoRAFinetune2024``, ``DDPOvsD3POAblation2024``)
    have capitals enough, but are shorter than a mixed-case key (Mistral's 32, Cohere's 40).
    The ``cautious`` rule also takes a 28+ run in one case whose letters and digits switch
    as often as random ones do (``k3y9x2q7w4m8...``), which a name made of words
    and numbers does not."""
    run = m.group("run")
    digits = sum(c.isdigit() for c in run)
    if _joined(m) or digits == 0 or digits == len(run):
        return False
    if _HEX.fullmatch(run):
        return not _GIT_COMMIT.fullmatch(run.lower())
    if len(run) < _MIXED_CASE_KEY:
        return False
    upper = sum(c.isupper() for c in run)
    lower = sum(c.islower() for c in run)
    if min(upper, lower) >= 0.25 * (upper + lower):
        return True
    switches = sum(a.isdigit() != b.isdigit() for a, b in zip(run, run[1:], strict=False))
    return cautious and min(upper, lower) == 0 and switches >= _SINGLE_CASE_SWITCHES


def _names_a_file(word: str) -> bool:
    """Whether ``word`` names a file or folder that exists here (a run folder named by a
    UUID): the name an error line must keep for the user to find it."""
    try:
        return os.path.lexists(word)
    except (OSError, ValueError):
        return False


def _is_key(m: re.Match[str], cautious: bool, files: bool = False) -> bool:
    """Whether the word ``m`` matched is a key by the sure or the ``cautious`` rule; with
    ``files``, what the cautious rule alone takes is none where it names a file or folder
    that exists (an error line's UUID-named run folder)."""
    if m.group("rest") is not None:
        return _random_tail(m.group("rest"))
    if m.group("run") is not None:
        if _random_run(m, cautious=False):
            return True
        taken = cautious and _random_run(m, cautious=True)
        return taken and not (files and _names_a_file(m.group(0)))
    if m.group("uuid") is not None:  # a UUID names runs too: hidden, never refused
        return cautious and not _joined(m) and not (files and _names_a_file(m.group(0)))
    if m.group("aws") is not None:  # an upper-case name (ASIAPACIFICSALESDATA) has no digit
        return looks_generated(m.group("aws")[4:]) and not _joined(m)
    return True


def _hide(text: str, cautious: bool, files: bool = False) -> str:
    return _KEY.sub(lambda m: REDACTED if _is_key(m, cautious, files) else m.group(0), text)


def hide_keys(text: str) -> str:
    """``text`` with each word that the sure rule takes for an API key or token replaced by
    ``"<redacted>"``, whatever it was typed under (``reward.options.on_error=sk-...``): what
    a setting shown as a command to run again may hide (a UUID-named run stays runnable)."""
    return _hide(text, cautious=False)


def might_be_key(text: str) -> bool:
    """Whether ``text`` holds a word that the cautious rule takes for a key (the sure rule's,
    a standalone UUID, a random-looking run in one case): what an echo or a saved reward
    option hides, and a recipe's value is never refused for."""
    return _hide(text, cautious=True) != text


def looks_like_key(text: str, *, commit_ok: bool = True) -> bool:
    """Whether ``text`` holds a word that looks like an API key or token. A 40-hex-digit
    text passes as a commit (``model.revision`` pins one) unless ``commit_ok`` is False,
    where no commit belongs: a W&B API key has that very form."""
    if not commit_ok and _GIT_COMMIT.fullmatch(text.strip().lower()):
        return True
    return hide_keys(text) != text


# Inline data (RFC 2397) in base64: an image given in place of its file, which is no key,
# though its payload is a long random-looking run of letters and digits.
# A media type is needed and 64 characters of payload at least (a 1x1 PNG has 88): a key
# written as one (``data:;base64,AKIA...``, a 32-character key) is refused as a key.
_BASE64_DATA_URI = re.compile(
    r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[^;,\s]*)*;base64,[A-Za-z0-9+/]{64,}={0,2}", re.I
)


def is_data_uri(text: str) -> bool:
    """Whether ``text`` is, whole, a base64 ``data:`` URI (``data:image/png;base64,...``):
    data, not a credential, so a recipe is not refused for it; echoes still hide what of its
    payload the key rule takes (a key may be written in any shape)."""
    return bool(_BASE64_DATA_URI.fullmatch(text.strip()))


def redact_text(text: str) -> str:
    """``text`` (an error line, a value an error quotes, a setting typed without ``=``) with
    its URLs' credentials and every word the cautious rule takes for a key redacted, but for
    a UUID or single-case run that names a file or folder here (a run folder to find)."""
    return _hide(redact_url_credentials(text), cautious=True, files=True)


def quoted(value: Any, limit: int = 60) -> str:
    """``value`` as an error quotes it: its ``repr`` with the secrets of a mapping or list
    (:func:`redact_tree`), a URL's credentials and key-like words redacted, then cut to
    ``limit`` characters (cut first, a key across the cut would keep its head)."""
    if isinstance(value, dict | list | tuple):
        value = redact_tree(list(value) if isinstance(value, tuple) else value)
    elif isinstance(value, str):
        value = redact_text(value)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_beside_a_key(value: Any) -> str:
    """A bad ``value`` as an error quotes it where a key is near (an option of a reward that
    reads one): a number, or a string shorter than any key that neither rule takes for one;
    anything else by its type only. A key pasted into the wrong option may have any shape (a
    local server's), and the option's name already says where the bad value is."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str) and len(value) < _KEY_LENGTH and redact_text(value) == value:
        return repr(value)
    return f"a {type(value).__name__} (not quoted: it could hold a key)"


def _is_number(text: str) -> bool:
    return isinstance(_parsed(text.strip()), int | float)  # bool is an int: no key either


def _numbers(value: Any) -> bool:
    """Whether ``value`` is a number or boolean, or a list of them (``stop_token_ids``), as
    no key is written: what a name that only looks secret keeps."""
    if isinstance(value, list | tuple):
        return bool(value) and all(isinstance(v, int | float) for v in value)
    return isinstance(value, int | float)


def _hide_key_like(text: str) -> str:
    """``text`` with each word that looks like a key redacted, and with everything after a
    ``NAME:`` whose name looks secret (``api_key: ...`` typed where ``=`` belonged) unless it
    is a number (``max_tokens: 512``)."""
    name, colon, rest = text.partition(":")
    secret_name = looks_secret(name.strip().rsplit(".", 1)[-1])
    if colon and secret_name and rest.strip() and not _is_number(rest):
        return f"{name}{colon} {REDACTED}"
    return redact_text(text)


# Credentials written into a URL (``https://user:KEY@host/v1``, ``https://TOKEN@host``): the
# userinfo runs to the last "@" before the path.
_URL_CREDENTIALS = r"([a-z][a-z0-9+.-]*://)[^/?#\s]*@"
# Found anywhere in a URL, not only at its start: a URL written after another without a
# space between (``https://a.example,https://user:KEY@b.example``) or inside another's query
# (``?u=https://user:KEY@host``) is read as a piece of the first one.
_ANY_URL_USERINFO = re.compile(r"(?<![a-z0-9+.-])" + _URL_CREDENTIALS, re.I)
# A URL anywhere in a text. Its scheme is read 64 characters back from "://" at most: read
# to the start of its word, each letter of a long word was a scheme's start to try, and a
# word of 24,000 letters (an uncompressed image inline, "data:image/bmp;base64,Qk0...AAAA")
# took seconds to read, minutes at 100,000. A longer word joined to a URL keeps its head.
_URL = re.compile(r"[a-z][a-z0-9+.-]{0,63}://[^\s'\"]+", re.I)
# A URL's parameter, in its query (``?key=...&api-version=...``: keys go in queries too) or in
# its fragment, where an OAuth callback gets its token (``#access_token=...&state=x``) and a
# single-page app's route its query (``#/cb?token=...``). Parameters are separated by "&" or
# by a ";" that another parameter follows (``?a=1;api_key=...``): another ";" is the value's
# (``?password=Hunter2;Xk9``: its tail was shown as none of the secret). A value with a "?"
# in it may be a URL given unencoded, with parameters of its own (``?u=https://h/x?key=...``),
# and one with an encoded "?" or "#" a URL given percent-encoded
# (``?redirect_uri=https%3A%2F%2Fh%2Fy%3Fapi_key%3D...``): those are read too (see
# _parameters).
_URL_PARAM = re.compile(
    r"(?P<sep>[?&#;])(?P<name>[^=&#?;\s]+)(?P<eq>=)"
    r"(?P<value>[^&#;\s\]}]*(?:;(?![^=&#?;\s]+=)[^&#;\s\]}]*)*)"
)
_SECRET_QUERY_NAMES = frozenset({"key", "sig", "signature", "auth", "code", "pass", "pwd"})
# A parameter's last word that says it holds a secret: access_key, subscription-key (Azure),
# X-Amz-Signature (a presigned URL), apikey; in a URL, a "key" is hardly ever anything else.
_SECRET_QUERY_END = re.compile(r"key$|(^|[-_.])(sig|signature|auth)$")


def secret_query_name(name: str) -> bool:
    """Whether a URL's query parameter of that name holds a secret (``key``, ``api_key``,
    ``access_key``, ``X-Amz-Signature``...)."""
    name = unquote(name).strip().lower()
    return bool(looks_secret(name) or name in _SECRET_QUERY_NAMES or _SECRET_QUERY_END.search(name))


@functools.cache
def _param_pattern(level: int) -> re.Pattern[str]:
    """:data:`_URL_PARAM` for a URL percent-encoded ``level`` times (``%3F``, ``%3D``, ``%26``
    at 1; ``%253F``... at 2), as it is in another's parameter."""
    if level == 0:
        return _URL_PARAM
    p = "%" + "25" * (level - 1)
    sep, eq = f"{p}(?:3F|26|23|3B)", f"{p}3D"
    name = rf"(?:(?!{sep}|{eq})[^=&#?;\s])+"
    end = rf"{p}(?:26|23)|{p}3B(?={name}{eq})"  # a ";" ends a value where a parameter follows
    return re.compile(
        rf"(?P<sep>{sep})(?P<name>{name})(?P<eq>{eq})"
        rf"(?P<value>[^%&#;\s\]}}]*(?:(?!{end})%[^%&#;\s\]}}]*)*)",  # runs between escapes
        re.I,
    )


def _url_parameters(url: str, level: int = 0) -> str:
    """What of ``url`` holds its parameters: all from its first ``?`` or ``#`` (its query and
    its fragment, which take the same rule; percent-encoded ``level`` times), or ""."""
    if level:
        mark = re.search("%" + "25" * (level - 1) + "(?:3F|23)", url, re.I)
        return url[mark.start() :] if mark else ""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[cut:]


# How deep URLs nested in parameters' values are read; deeper, a URL's parameters are hidden
# whole and refused at load (a value no one writes by hand: "?a=?a=?a=..." overflowed the
# stack in a traceback).
_NESTING_LIMIT = 16
# How many nested URLs are read in one URL, at most, the same one reached twice counted
# twice; past it, as past the depth. Each value is read as given and percent-encoded once
# more, so a value that nests URLs encoded 0 to 8 times, 8 of each, was read along 24,310
# paths (29 s for 95,000 characters); a URL written by hand nests a few.
_NESTED_READS = 64


class _TooDeep(Exception):
    """URLs nested deeper than :data:`_NESTING_LIMIT` in parameters' values, or more of
    them than :data:`_NESTED_READS`."""


def _one_more_read(params: str, depth: int, reads: list[int]) -> bool:
    """Whether the parameters ``params`` of a URL at ``depth`` may be read: within the
    depth, and, nested, within the reads left in ``reads`` (one taken)."""
    if depth > _NESTING_LIMIT:
        return False
    if depth and params:
        reads[0] -= 1
        return reads[0] >= 0
    return True


def _parameters(
    url: str, level: int = 0, depth: int = 0, reads: list[int] | None = None
) -> Iterator[re.Match[str]]:
    """The parameters of ``url`` (see :data:`_URL_PARAM`), and of a URL in one's value, as
    given (``?u=https://h/x?key=...``) or percent-encoded once more (``%3Fkey%3D...``);
    :class:`_TooDeep` past :data:`_NESTING_LIMIT` or :data:`_NESTED_READS`."""
    reads = [_NESTED_READS] if reads is None else reads
    params = _url_parameters(url, level)
    if not _one_more_read(params, depth, reads):
        raise _TooDeep
    for m in _param_pattern(level).finditer(params):
        yield m
        yield from _parameters(m.group("value"), level, depth + 1, reads)
        yield from _parameters(m.group("value"), level + 1, depth + 1, reads)


def _redact_params(url: str, level: int = 0, depth: int = 0, reads: list[int] | None = None) -> str:
    reads = [_NESTED_READS] if reads is None else reads
    params = _url_parameters(url, level)
    head = url[: len(url) - len(params)]
    if params and not _one_more_read(params, depth, reads):
        return f"{head}{params[:1]}{REDACTED}"

    def hide(m: re.Match[str]) -> str:
        sep, name, eq, value = m.group("sep", "name", "eq", "value")
        number = re.fullmatch(r"[-+]?\d+(\.\d*)?", value)  # max_tokens=5, as options keep
        if not value or number:
            return m.group(0)
        if not secret_query_name(name):  # a URL in its value may hold one
            value = _redact_params(value, level, depth + 1, reads)
            value = _redact_params(value, level + 1, depth + 1, reads)
            return f"{sep}{name}{eq}{value}"
        return f"{sep}{name}{eq}{REDACTED}"

    return head + _param_pattern(level).sub(hide, params)


def redact_url_credentials(text: str) -> str:
    """``text`` with every URL's credentials replaced by ``"<redacted>"``: all of its
    userinfo, and query or fragment parameters named like a secret (``?key=``,
    ``?api_key=``, ``?token=``, ``?sig=``, ``#access_token=``...)."""

    def one(m: re.Match[str]) -> str:
        url = _ANY_URL_USERINFO.sub(lambda u: u.group(1) + REDACTED + "@", m.group(0))
        return _redact_params(url)

    return _URL.sub(one, text)


def _secret_sized(value: str) -> bool:
    """Whether a URL parameter's value could be a secret: 8 characters or more, no number,
    no path or file name (``?key=v2``, ``?token=none``, ``?partition_key=2024-01``,
    ``?key=images/img001.png`` are ordinary values)."""
    value = unquote(value)
    number = re.fullmatch(r"[-+]?\d+(\.\d*)?", value)
    return len(value) >= 8 and not number and not re.search(r"[/.]", value)


def holds_url_credentials(text: str) -> bool:
    """Whether a URL in ``text`` carries credentials for sure: a password in its userinfo
    (``https://user:KEY@host``), or a query or fragment parameter named like a secret whose
    value is one (``?api_key=...``, ``#access_token=...``, or ``?key=``/``?sig=`` with a
    generated-looking value).
    Stricter than :func:`redact_url_credentials`, which also hides a bare user name
    (``ssh://git@host``) and ``?sort_key=name``: what a recipe is refused for at load must
    not refuse an ordinary value; a token written as the user name (``https://ghp_...@``)
    is the key rule's."""
    for m in _URL.finditer(text):
        url = m.group(0)
        for userinfo in _ANY_URL_USERINFO.finditer(url):
            info = userinfo.group(0)[len(userinfo.group(1)) : -1]
            if info.partition(":")[2]:  # user:password@
                return True
        try:
            for param in _parameters(url):
                name, value = unquote(param.group("name")).strip().lower(), param.group("value")
                if not _secret_sized(value):
                    continue
                if looks_secret(name) or (secret_query_name(name) and looks_generated(value)):
                    return True
        except _TooDeep:  # too deep to read to the end: what it holds is not known
            return True
    return False


_UNPARSED = object()


def _parsed(text: str) -> Any:
    """``text`` read as a recipe reads a value (its loader refuses an anchor used inside
    itself, whose endless value the redaction would recurse into), or ``_UNPARSED``."""
    import yaml

    from dsharp.recipe_yaml import _RecipeLoader

    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return _UNPARSED


def shown_setting(setting: str) -> str:
    """A ``KEY=VALUE`` setting as a message or a plan may show it, since error lines and
    printed commands end up in CI and job logs: a value under a key that looks secret (a key
    typed in, ``rewards.0.options.api_key=sk-...``) redacted; a mapping or list given whole
    (``options={api_key: ...}``, a study's ``eval={...}``) with its secret entries redacted,
    as JSON; a value that does not parse and names something secret redacted whole; and any
    URL's credentials redacted; and, under any key, each word that looks like an API key
    (``reward.options.on_error=sk-...``)."""
    return hide_keys(_shown(setting))


def _shown(setting: str) -> str:
    key, sep, value = setting.partition("=")
    if not sep:  # a value typed alone, or "api_key: ..." for "api_key=...": may be a key
        return _hide_key_like(setting)
    stripped = value.strip()
    parsed = _parsed(stripped)
    number = _numbers(parsed)  # max_tokens=512, stop_token_ids=[2] are no key (bool: an int)
    last = key.strip().rsplit(".", 1)[-1]
    if _not_a_variable_name(last, parsed if isinstance(parsed, str) else stripped):
        return f"{key}={REDACTED}"
    if "revision" not in last.lower() and _GIT_COMMIT.fullmatch(stripped.lower()):
        return f"{key}={REDACTED}"  # a commit pins a revision; elsewhere, a W&B key's form
    if looks_secret(last) and stripped and not number:
        shown = redact_url_credentials(stripped)
        return f"{key}={shown if shown != stripped else REDACTED}"
    if isinstance(parsed, dict | list):
        redacted = redact_tree(parsed)
        return setting if redacted == parsed else f"{key}={json.dumps(redacted)}"
    if parsed is _UNPARSED and _SECRET_NAME.search(stripped):
        return f"{key}={REDACTED}"  # a mapping cut short, say, with a key in it
    shown = redact_url_credentials(stripped)
    return setting if shown == stripped else f"{key}={shown}"


def sensitive_setting(setting: str) -> bool:
    """Whether a ``KEY=VALUE`` setting (an override, a ``--set``) holds a secret: whether
    :func:`shown_setting` hides part of it."""
    return shown_setting(setting) != setting


def redact_options(value: Any, declared: frozenset[str] = frozenset()) -> Any:
    """``value`` (options, at any depth) with every secret value replaced by ``"<redacted>"``:
    those under a secret name, any string that the cautious rule takes for a key, and any
    URL's credentials (a key put in ``base_url``)."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            hide = item not in (None, "", [], {}) and (
                name in declared
                or (
                    looks_secret(name)
                    and isinstance(item, (str, list, tuple, dict))
                    and not _numbers(item)  # stop_token_ids: [2]
                )
                or _not_a_variable_name(name, item)
            )
            out[key] = REDACTED if hide else redact_options(item, declared)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_options(item, declared) for item in value]
    if isinstance(value, str):
        return REDACTED if might_be_key(value) else redact_url_credentials(value)
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


def _specs_redacted(value: Any) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("name"), str) and isinstance(value.get("options"), dict):
            try:
                value = redact_reward_spec(value)
            except Exception:  # a plugin that fails to load: its options by their names
                value = {**value, "options": redact_options(value["options"])}
        return {key: _specs_redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_specs_redacted(item) for item in value]
    return value


def redact_tree(value: Any) -> Any:
    """:func:`redact_options` over any YAML data (an override's value, a study's ``evaluate``
    section), with each reward spec in it (a mapping with ``name`` and ``options``) losing
    the options its reward declares secret too."""
    return redact_options(_specs_redacted(value))
