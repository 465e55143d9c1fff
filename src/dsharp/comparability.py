"""Whether evaluations can be compared as they stand: the same sampler, seeds and prompts,
scored by the same rewards on the same bench.

A table of two evaluations drawn with different sampling steps, on different prompts, or
scored by different rewards still prints numbers side by side; these notes say so, so that
nobody reads a sampler's (or a reward's) difference as a model's.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from dsharp.redaction import REDACTED

#: The sampling settings that change what an evaluation's images are.
SAMPLING_KEYS = ("method", "steps", "guidance", "eta", "height", "width", "options")


def comparability_notes(
    named: list[tuple[str, dict[str, Any]]], *, paired: bool = False
) -> list[str]:
    """One line per way the evaluations differ in how they were drawn (empty: comparable).
    Fields an evaluation does not record are not compared. ``paired`` (``compare
    --paired``: each row against the first, on the images both scored): other prompts or
    scored images leave a delta over the shared ones, not a gap that may be theirs."""
    if len(named) < 2:
        return []
    notes = _scoring_notes(named)
    samples = [(label, res.get("sample")) for label, res in named]
    for key in SAMPLING_KEYS:
        if not all(isinstance(s, dict) and key in s for _, s in samples):
            continue
        values = [s[key] for _, s in samples]
        if _differ(values):
            shown = ", ".join(f"{label}: {_short(s[key])}" for label, s in samples)
            notes.append(f"sampling differs in {key} ({shown}): a gap may be the sampler's")
    seeds = [(label, res.get("seeds")) for label, res in named]
    if all(s is not None for _, s in seeds) and _differ([s for _, s in seeds]):
        shown = ", ".join(f"{label}: {_short(s)}" for label, s in seeds)
        notes.append(f"seeds differ ({shown})")
    prompts = [(label, _prompt_set(res)) for label, res in named]
    if all(p is not None for _, p in prompts) and _differ([p for _, p in prompts]):
        counts = ", ".join(f"{label}: {len(p)}" for label, p in prompts)
        consequence = (
            f"each row's delta is over the prompts it shares with {named[0][0]}"
            if paired
            else "a gap may be the prompts'"
        )
        notes.append(f"prompt sets differ ({counts} prompts): {consequence}")
    notes += _unscored_notes(named, paired)
    return notes


def scored_count(result: dict[str, Any]) -> int | None:
    """How many of an evaluation's images have a score (``n_scored``; in an older file,
    counted from its ``images``), or None where it does not say."""
    count = result.get("n_scored")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    keys = _image_keys(result)
    return None if keys is None else sum(keys[1].values())


def _image_count(result: dict[str, Any]) -> int | None:
    count = result.get("n_images")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    images = result.get("images")
    return len(images) if isinstance(images, list) and images else None


def _image_keys(result: dict[str, Any]) -> tuple[Counter, Counter] | None:
    """An evaluation's images and its scored images, each a multiset of (prompt, seed)."""
    images = result.get("images")
    if not isinstance(images, list) or not images:
        return None
    every: Counter = Counter()
    scored: Counter = Counter()
    for image in images:
        if not isinstance(image, dict):
            continue
        key = (str(image.get("prompt")), image.get("seed"))
        every[key] += 1
        score = image.get("score")
        if isinstance(score, int | float) and math.isfinite(score):
            scored[key] += 1
    return every, scored


def _unscored_notes(named: list[tuple[str, dict[str, Any]]], paired: bool = False) -> list[str]:
    """A note where a source has images its rewards left unscored (``overall`` and the
    means are over the scored ones only), saying when the sources' scored images are not the
    same (prompt, seed) pairs: the means are then over different images. ``paired``: each
    delta is over the images both scored, whichever those are."""
    counts = [(label, scored_count(res), _image_count(res)) for label, res in named]
    unscored = any(
        isinstance(total, int) and scored is not None and scored < total
        for _, scored, total in counts
    )
    keys = [_image_keys(res) for _, res in named]
    differ = False
    if all(k is not None for k in keys):
        every = [k[0] for k in keys if k is not None]
        scored_sets = [k[1] for k in keys if k is not None]
        differ = not _differ(every) and _differ(scored_sets)
    if not (unscored or differ):
        return []
    shown = ", ".join(
        f"{label}: {'?' if scored is None else scored} of {'?' if total is None else total}"
        for label, scored, total in counts
    )
    if paired:
        return [
            f"some images are unscored ({shown} scored): each row's delta is over the images "
            f"both it and {named[0][0]} scored"
        ]
    if differ:
        return [
            f"the scored images differ ({shown} scored): each mean is over other images "
            "(--paired compares the images both scored)"
        ]
    return [f"some images are unscored ({shown} scored): each mean is over its scored images"]


def _scoring_notes(named: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Notes where the evaluations were scored differently: other rewards give scores on
    other scales (shapes_soft's partial credit reads higher than shapes' all-or-nothing),
    as does one reward with other options (shapes binary=true) or weights, and another
    bench means other prompts and a mean over other categories."""
    notes = []
    rewards = [(label, scoring_rewards(res)[0]) for label, res in named]
    if all(r is not None for _, r in rewards) and _differ([r for _, r in rewards]):
        shown = ", ".join(f"{label}: {_short(', '.join(r))}" for label, r in rewards)
        notes.append(f"rewards differ ({shown}): the scores are not on one scale")
    elif all(r is not None for _, r in rewards):
        notes += _reward_settings_notes(named)
    if all("bench" in res for _, res in named) and _differ([res["bench"] for _, res in named]):
        shown = ", ".join(f"{label}: {_short(res['bench'] or 'none')}" for label, res in named)
        notes.append(f"benches differ ({shown}): a gap may be the bench's")
    return notes


def _reward_settings_notes(named: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Where the evaluations name the same scoring rewards: one note per source set up
    otherwise than the first (an option, the normalisation, a weight), or one naming the
    sources that do not record their rewards' settings (older files) where others do; and
    one per option that sources set up alike otherwise record hidden (:func:`hidden_option`)."""
    specs = [(label, scoring_specs(res)) for label, res in named]
    known = [(label, s) for label, s in specs if s is not None]
    if len(known) < len(specs):
        if not known:
            return []
        unknown = ", ".join(label for label, s in specs if s is None)
        return [
            f"reward options not recorded ({unknown}: an older evaluation): whether the "
            "rewards were set up alike is not known"
        ]
    notes = []
    hidden: dict[str, list[str]] = {}  # an option hidden in both, by the sources that hide it
    for source in known[1:]:
        difference = spec_difference(known[0], source)
        if difference is not None:
            notes.append(f"reward settings differ ({difference}): the scores are not on one scale")
        elif (where := hidden_option(known[0][1], source[1])) is not None:
            hidden.setdefault(where, [known[0][0]]).append(source[0])
    for where, labels in hidden.items():
        notes.append(
            f"reward settings hidden ({where}: {REDACTED} in {', '.join(labels)}, saved as a "
            "secret): whether the rewards were set up alike is not known"
        )
    return notes


#: Reward options that decide how a reward runs, not what it scores (where it runs, the key
#: or the environment variable that holds it, how many requests at once, how long to wait or
#: retry, where grades are cached): evaluations that differ only in them score alike.
RUN_OPTIONS = frozenset(
    {"device", "api_key", "api_key_env", "max_concurrency", "timeout_s", "max_retries"}
    | {"cache_path"}
)


def scoring_specs(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The settings of the rewards that make up an evaluation's scores (``reward_specs``;
    a reward bench's own result: its ``reward`` with ``reward_options``), each as name,
    share of the score (weight over the sum of the weights' magnitudes), normalisation and
    options, sorted; None where the evaluation does not record them."""
    recorded = result.get("reward_specs")
    if isinstance(recorded, dict):
        entries = [s for s in recorded.values() if isinstance(s, dict)]
    elif isinstance(result.get("reward"), str) and isinstance(result.get("reward_options"), dict):
        entries = [{"name": result["reward"], "options": result["reward_options"]}]
    else:
        return None
    scoring = [s for s in entries if _weight(s)]
    total = sum(abs(_weight(s)) for s in scoring) or 1.0
    out = [
        {
            "name": str(s.get("name")),
            "share": _weight(s) / total,
            "normalize": s.get("normalize") or "none",
            "options": _scoring_options(s.get("options")),
        }
        for s in scoring
    ]
    return sorted(out, key=lambda s: (s["name"], _canonical(s["options"])))


def _scoring_options(options: Any) -> dict[Any, Any]:
    """A reward's recorded options without those that only say how it runs (RUN_OPTIONS)."""
    if not isinstance(options, dict):
        return {}
    return {k: v for k, v in options.items() if k not in RUN_OPTIONS}


def _canonical(options: dict[Any, Any]) -> str:
    """Options as one text, keys sorted, for ordering a reward named twice."""
    try:
        return json.dumps(options, sort_keys=True, default=str)
    except TypeError:  # keys of mixed types (options built in code): in their own order
        return repr(options)


def _weight(spec: dict[str, Any]) -> float:
    weight = spec.get("weight", 1.0)
    return float(weight) if isinstance(weight, int | float) else 1.0


def spec_difference(
    first: tuple[str, list[dict[str, Any]]], other: tuple[str, list[dict[str, Any]]]
) -> str | None:
    """The first way two evaluations' scoring rewards (:func:`scoring_specs`, same names)
    are set up differently, in words naming both (``shapes binary: not set in a, true in
    b``), or None where they are set up alike."""
    (a_label, a_specs), (b_label, b_specs) = first, other
    if [s["name"] for s in a_specs] != [s["name"] for s in b_specs]:
        a_names = ", ".join(s["name"] for s in a_specs) or "no reward"
        b_names = ", ".join(s["name"] for s in b_specs) or "no reward"
        return f"rewards: {a_names} in {a_label}, {b_names} in {b_label}"
    for a, b in zip(a_specs, b_specs, strict=True):
        name = a["name"]
        for key in sorted({*a["options"], *b["options"]}, key=str):
            a_value, b_value = a["options"].get(key, _UNSET), b["options"].get(key, _UNSET)
            if a_value != b_value:
                return (
                    f"{name} option {key}: {_option(a_value)} in {a_label}, "
                    f"{_option(b_value)} in {b_label}"
                )
        if a["normalize"] != b["normalize"]:
            a_norm, b_norm = a["normalize"], b["normalize"]
            return f"{name} normalize: {a_norm} in {a_label}, {b_norm} in {b_label}"
        if not math.isclose(a["share"], b["share"], rel_tol=1e-9, abs_tol=1e-12):
            return (
                f"{name} weight: {a['share']:.3g} of the score in {a_label}, "
                f"{b['share']:.3g} in {b_label}"
            )
    return None


_UNSET = object()


def hidden_option(a_specs: list[dict[str, Any]], b_specs: list[dict[str, Any]]) -> str | None:
    """The first scoring option (``clip option token``) that two evaluations set up alike by
    :func:`spec_difference` both record hidden: an evaluation saves a value that looks like a
    secret as ``<redacted>``, so two hidden values read as equal whatever they were."""
    for a, b in zip(a_specs, b_specs, strict=True):
        for key in sorted(a["options"], key=str):
            if _holds_redacted(a["options"][key]) and _holds_redacted(b["options"].get(key)):
                return f"{a['name']} option {key}"
    return None


def _holds_redacted(value: Any) -> bool:
    """Whether ``value`` holds a text saved hidden whole. A URL whose credentials alone are
    hidden (``https://<redacted>@proxy/v1``, ``?api-key=<redacted>``: what
    :func:`~dsharp.redaction.redact_url_credentials` hides) is compared by the rest, as who
    asks a server does not change its grade (the grader's cache key leaves them out too)."""
    if isinstance(value, str):
        return value == REDACTED
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return any(_holds_redacted(item) for item in items)
    return False


def _option(value: Any) -> str:
    """An option's value as a note shows it (``not set`` where a source does not set it)."""
    return "not set" if value is _UNSET else _short(json.dumps(value, default=str), 30)


def scoring_rewards(result: dict[str, Any]) -> tuple[list[str] | None, bool]:
    """The rewards that make up an evaluation's scores, and whether that is known exactly:
    those with a non-zero weight where the evaluation records ``reward_weights``; else every
    reward it names (a weight-0 one, reported only, among them)."""
    weights = result.get("reward_weights")
    if isinstance(weights, dict):
        return sorted(str(k) for k, w in weights.items() if w), True
    names = rewards_of(result)
    return (sorted(names) if names is not None else None), False


def rewards_of(result: dict[str, Any]) -> list[str] | None:
    """The reward names an evaluation was scored by (``rewards``; a reward bench's own result
    names its one ``reward``), or None where it does not say."""
    rewards = result.get("rewards")
    if isinstance(rewards, list):
        return [str(name) for name in rewards]
    reward = result.get("reward")
    return [reward] if isinstance(reward, str) else None


def _prompt_set(result: dict[str, Any]) -> frozenset[str] | None:
    images = result.get("images")
    if not isinstance(images, list) or not images:
        return None
    return frozenset(str(img.get("prompt")) for img in images if isinstance(img, dict))


def _differ(values: list[Any]) -> bool:
    return any(v != values[0] for v in values[1:])


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
