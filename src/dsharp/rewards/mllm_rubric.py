"""What the MLLM grader is asked, and how its reply is read: the rubric of the paper's five
aspects, the chat messages and JSON schema of a request, and the parser that finds a
complete, in-range grade in a reply (structured or not). No network, no key: the client,
retries and cache live in :mod:`dsharp.rewards.mllm`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from dsharp.rewards.json_extract import iter_json_objects

TEMPLATE_VERSION = "dsharp-grader-v1"  # bump when the prompt or schema changes: new cache keys

# (key in the reply, the aspect as the paper names it, what the grader should look at)
ASPECTS: tuple[tuple[str, str, str], ...] = (
    (
        "accuracy",
        "accuracy to the prompt",
        "are all objects, attributes, counts and relations of the prompt present and right?",
    ),
    (
        "creativity",
        "creativity and originality",
        "is the interpretation imaginative and fresh rather than generic?",
    ),
    (
        "visual_quality",
        "visual quality and realism",
        "sharpness, lighting, plausible anatomy and geometry, no artifacts",
    ),
    (
        "consistency",
        "consistency and cohesion",
        "do style, perspective and elements fit together as one coherent image?",
    ),
    (
        "resonance",
        "emotional or thematic resonance",
        "does the image carry the mood or theme that the prompt implies?",
    ),
)
ASPECT_KEYS = tuple(key for key, _, _ in ASPECTS)
# Stems that identify an aspect when a server without structured output renames the keys.
_ALIASES = {
    "accuracy": ("accura",),
    "creativity": ("creativ", "original"),
    "visual_quality": ("visual", "realism"),
    "consistency": ("consisten", "cohes"),
    "resonance": ("resonan", "emotion", "themat"),
}

SYSTEM_PROMPT = (
    "You are a careful, consistent judge of AI-generated images. You grade how well an "
    "image realises the text prompt it was generated from. Be critical and use the whole "
    "0-10 range: 5 is mediocre, 9-10 is reserved for exceptional images."
)


def _example_reply() -> str:
    parts = [f'"{key}": {{"reason": "<one sentence>", "score": <0-10>}}' for key in ASPECT_KEYS]
    return "{" + ", ".join([*parts, '"overall": <0-10>']) + "}"


def user_prompt(prompt: str) -> str:
    """The grading instructions for one image generated from ``prompt`` (template v1)."""
    lines = [
        "Grade the attached image, which was generated from this prompt:",
        "",
        f"PROMPT: {json.dumps(prompt, ensure_ascii=False)}",
        "",
        "Score each of these five aspects from 0 (very poor) to 10 (excellent), with a short",
        "reason of one sentence:",
    ]
    for i, (key, name, focus) in enumerate(ASPECTS, 1):
        lines.append(f'{i}. "{key}": {name}: {focus}')
    lines += [
        'Then give "overall": your overall score for the image from 0 to 10 (fractions allowed).',
        "",
        "Reply with one JSON object and nothing else, in exactly this form:",
        _example_reply(),
    ]
    return "\n".join(lines)


def grade_schema() -> dict[str, Any]:
    """The JSON schema of a reply, for servers that support ``json_schema`` output."""
    aspect = {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "score": {"type": "number"}},
        "required": ["reason", "score"],
        "additionalProperties": False,
    }
    properties: dict[str, Any] = {key: aspect for key in ASPECT_KEYS}
    properties["overall"] = {"type": "number"}
    return {
        "type": "object",
        "properties": properties,
        "required": [*ASPECT_KEYS, "overall"],
        "additionalProperties": False,
    }


def build_messages(prompt: str, data_url: str) -> list[dict[str, Any]]:
    """Chat messages for one image: the system rubric, then the prompt text and the image."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": user_prompt(prompt)},
                {"type": "image_url", "image_url": {"url": data_url}},
            ],
        },
    ]


def response_format(mode: str) -> dict[str, Any] | None:
    """The ``response_format`` request field for a structured-output mode (``None``: omit)."""
    if mode == "json_schema":
        schema = {"name": "image_grade", "schema": grade_schema(), "strict": True}
        return {"type": "json_schema", "json_schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


# --------------------------------------------------------------------------- parsing


class GradeParseError(ValueError):
    """A reply that holds no usable grade."""


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        for name in ("score", "rating", "value"):
            if name in value:
                return _number(value[name])
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _reason(value: Any) -> str:
    if isinstance(value, dict):
        for name in ("reason", "justification", "explanation", "rationale"):
            if isinstance(value.get(name), str):
                return value[name].strip()
    return ""


def _find(obj: dict[str, Any], key: str, stems: Sequence[str]) -> Any:
    """``obj[key]``, else the value of a key containing one of ``stems`` (a scored one first)."""
    if key in obj:
        return obj[key]
    matches = [v for name, v in obj.items() if any(stem in str(name).lower() for stem in stems)]
    scored = [v for v in matches if _number(v) is not None]
    return (scored or matches or [None])[0]


def _score_in_range(value: Any, what: str) -> float:
    score = _number(value)
    if score is None:
        raise GradeParseError(f"the reply's JSON has no numeric score for {what!r}")
    if not math.isfinite(score) or not 0.0 <= score <= 10.0:
        raise GradeParseError(f"the reply's score for {what!r} is {score}, outside 0-10")
    return score


def grade_from_object(obj: dict[str, Any]) -> dict[str, Any]:
    """``{"overall", "aspects", "reasons"}`` from a reply's JSON object, validated.

    Every aspect and the overall score must be numbers in 0-10; the overall score is never
    derived from the aspects, so a reply without one is rejected.
    """
    overall = _score_in_range(_find(obj, "overall", ("overall",)), "overall")
    aspects, reasons = {}, {}
    for key in ASPECT_KEYS:
        value = _find(obj, key, _ALIASES[key])
        aspects[key] = _score_in_range(value, key)
        reasons[key] = _reason(value)
    return {"overall": overall, "aspects": aspects, "reasons": reasons}


def parse_grade(text: str | None) -> dict[str, Any]:
    """The grade in a reply: plain JSON, fenced JSON, or JSON inside prose.

    Raises :class:`GradeParseError` naming what is wrong when no candidate object is a
    complete grade.
    """
    if not text or not text.strip():
        raise GradeParseError("the reply is empty")
    first_problem = None
    for candidate in iter_json_objects(text):
        try:
            return grade_from_object(candidate)
        except GradeParseError as e:
            first_problem = first_problem or e
    if first_problem is not None:
        raise first_problem
    raise GradeParseError("the reply has no JSON object")
