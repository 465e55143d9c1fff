"""Find a JSON object in a model's free-text reply: code fences, surrounding prose, ``<think>``.

Servers without structured output still usually answer with JSON, but wrapped in a Markdown
fence, preceded by a sentence, or after a reasoning block. This module yields the JSON
objects it finds, most likely first, and nothing rather than a guess when there is none: a
grader must never invent a score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _loads_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, trying once more without trailing commas; else ``None``."""
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _scan_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object that starts at some ``{`` in ``text``, outermost first."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            yield value
        start = text.find("{", start + 1)


def iter_json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Candidate JSON objects in ``text``, most likely first.

    Order: the whole reply; each fenced block; each object embedded in the prose. Reasoning
    blocks (``<think>...</think>``) are dropped first, so draft JSON in them is ignored.
    """
    text = _THINK.sub("", text).strip()
    whole = _loads_object(text)
    if whole is not None:
        yield whole
    for match in _FENCE.finditer(text):
        fenced = _loads_object(match.group(2).strip())
        if fenced is not None:
            yield fenced
    yield from _scan_objects(text)
