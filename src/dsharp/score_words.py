"""What an evaluation's numbers are, in words, for the outputs that show them (compare.png,
an evaluation's grid.png, a study's table.md).

A bare "score" or "0.62" cannot be read without the reward that gave it, the prompts it is
over and the sampler that drew the images; these say so from what the evaluation records.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from typing import Any


def reward_words(result: dict[str, Any]) -> str | None:
    """The rewards an evaluation's score is made of: ``shapes``, or ``0.7 clip + 0.3
    aesthetic`` (each weight's share of the sum of their magnitudes, as ``overall`` weighs
    them; a weight-0 reward is reported only, not in it). None where it does not say."""
    weights = result.get("reward_weights")
    if isinstance(weights, dict):
        return weighted_words(
            {str(k): float(w) for k, w in weights.items() if isinstance(w, int | float)}
        )
    from dsharp.comparability import rewards_of

    names = rewards_of(result)
    return ", ".join(names) if names else None


def weighted_words(weights: dict[str, float]) -> str | None:
    """``{"clip": 0.7, "aesthetic": 0.3}`` as ``0.7 clip + 0.3 aesthetic`` (shares of the
    magnitudes' sum; equal positive shares as ``mean of clip, aesthetic``); None where no
    reward has a weight."""
    scoring = {k: w for k, w in weights.items() if w}
    if not scoring:
        return None
    total = sum(abs(w) for w in scoring.values())
    shares = {k: w / total for k, w in scoring.items()}
    if len(set(shares.values())) == 1 and next(iter(shares.values())) > 0:
        names = list(shares)
        return names[0] if len(names) == 1 else "mean of " + ", ".join(names)
    words = ""
    for i, (key, share) in enumerate(shares.items()):
        sign = "-" if share < 0 else ("+" if i else "")
        words += f"{' ' if i else ''}{sign}{' ' if i else ''}{abs(share):.2g} {key}"
    return words


def prompt_words(result: dict[str, Any]) -> str | None:
    """Which prompts an evaluation is over: ``bench shapes`` or ``prompts FILE``."""
    if result.get("bench"):
        return f"bench {result['bench']}"
    if result.get("prompts_file"):
        return f"prompts {result['prompts_file']}"
    return None


def scored_words(result: dict[str, Any]) -> str | None:
    """``shapes on bench shapes``: the rewards and the prompts together."""
    rewards, prompts = reward_words(result), prompt_words(result)
    if rewards and prompts:
        return f"{rewards} on {prompts}"
    return rewards or prompts


def sampling_words(sample: dict[str, Any], *, method: bool = True, eta: bool = True) -> str:
    """A recorded sampling section as a reader wants it: "25 DDIM steps, guidance 5.0,
    eta 0.0, 32x32" (without ``eta``, no eta: a method that does not use it) and, with
    ``method``, an inference-time method with its options and verifier."""
    words = f"{sample.get('steps')} DDIM steps, guidance {sample.get('guidance')}"
    if eta:
        words += f", eta {sample.get('eta')}"
    height, width = sample.get("height"), sample.get("width")
    if height and width:
        words += f", {height}x{width}"
    elif height or width:  # the other is the model's own: not "48xNone"
        words += f", height {height}" if height else f", width {width}"
    if method and sample.get("method", "default") != "default":
        words += ", method " + method_words(sample, code=True)
    return words


def method_words(sample: dict[str, Any], *, code: bool = False) -> str:
    """The sampling method with its options and verifier: ``demon K=4 (verifier: shapes)``
    (the name in backticks with ``code``); ``DDIM`` for the plain sampler."""
    name = sample.get("method", "default")
    if name == "default":
        return "DDIM"
    words = f"`{name}`" if code else str(name)
    if sample.get("options"):
        words += " " + ", ".join(f"{k}={v}" for k, v in sample["options"].items())
    verifiers = [r.get("name") for r in sample.get("reward") or [] if isinstance(r, dict)]
    if verifiers:
        words += f" (verifier: {', '.join(str(v) for v in verifiers)})"
    return words


def sample_heading(
    sample: dict[str, Any], parsed_options: Any = None, unused: Sequence[str] = ()
) -> str:
    """What drew a `dsharp sample` grid, for its heading: ``demon K=2, sde_eta=1.0
    (verifier: shapes); 4 DDIM steps, guidance 5.0, 32x32`` (the plain sampler: its
    sampling alone). ``parsed_options``: the method's options with their defaults, of which
    the given ones and those it names ``KEY_OPTIONS`` are shown; ``unused``: sampling fields
    the method does not use (demon's ``eta``), left out rather than shown as if they acted."""
    words = sampling_words(sample, method=False, eta="eta" not in unused)
    if sample.get("method", "default") == "default":
        return words
    options = named_options(parsed_options, sample.get("options") or {})
    return f"{method_words({**sample, 'options': options})}; {words}"


def named_options(parsed: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The options a heading names: those given, then the method's ``KEY_OPTIONS`` (its
    defaults where not given, so that ``demon`` still says ``K=16``), each as parsed."""
    if parsed is None:
        return dict(given)
    keys = list(given) + [k for k in getattr(parsed, "KEY_OPTIONS", ()) if k not in given]
    return {k: getattr(parsed, k, given.get(k)) for k in keys}


def seed_words(result: dict[str, Any]) -> str | None:
    """``3 prompts x seeds 0, 1``: what each mean is over."""
    seeds, prompts = result.get("seeds"), result.get("n_prompts")
    if not isinstance(seeds, list):
        return None
    shown = ", ".join(str(s) for s in seeds[:8]) + (", ..." if len(seeds) > 8 else "")
    words = f"seed{'s' if len(seeds) != 1 else ''} {shown}"
    return f"{prompts} prompts x {words}" if isinstance(prompts, int) else words


def shared_or_each(
    named: Sequence[tuple[str, dict[str, Any]]],
    words: Callable[[dict[str, Any]], str | None],
    differ: str,
    limit: int | None = None,
) -> str | None:
    """``words`` of every source where they agree; else "``differ`` (a: x; b: y)", each
    shortened to ``limit`` characters: one is not picked to stand for all. None where no
    source says."""
    said = [(label, words(result)) for label, result in named]
    if all(w is None for _, w in said):
        return None
    values = [w for _, w in said]
    if all(v == values[0] for v in values):
        return values[0]
    each = "; ".join(f"{label}: {_short(w or 'not recorded', limit)}" for label, w in said)
    return f"{differ} ({each})"


def evaluation_lines(named: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """What the evaluations' numbers were measured with, a line each (rewards and prompts,
    prompts x seeds, sampling, method): once where every source agrees, else per source."""
    lines = []
    for what, words in _evaluation_parts(named):
        if words is not None:  # "sampling: 25 DDIM steps", "sampling differs by row (...)"
            lines.append(words if words.startswith(f"{what} differ") else f"{what}: {words}")
    return lines


def evaluation_summary(
    named: Sequence[tuple[str, dict[str, Any]]], limit: int | None = 30
) -> str | None:
    """:func:`evaluation_lines` but the method, in one line for a figure whose series are
    the methods: ``shapes on bench shapes; 20 prompts x seed 0; 25 DDIM steps, ...``."""
    parts = [words for what, words in _evaluation_parts(named, limit) if what != "method"]
    return "; ".join(p for p in parts if p) or None


def _evaluation_parts(
    named: Sequence[tuple[str, dict[str, Any]]], limit: int | None = None
) -> list[tuple[str, str | None]]:
    def sample_of(result: dict[str, Any]) -> dict[str, Any] | None:
        sample = result.get("sample")
        return sample if isinstance(sample, dict) else None

    def sampling(result: dict[str, Any]) -> str | None:
        sample = sample_of(result)
        return None if sample is None else sampling_words(sample, method=False)

    def method(result: dict[str, Any]) -> str | None:
        sample = sample_of(result)
        return None if sample is None else method_words(sample)

    return [
        ("scoring", shared_or_each(named, scored_words, "scoring differs by row", limit)),
        ("images", shared_or_each(named, seed_words, "images differ by row", limit)),
        ("sampling", shared_or_each(named, sampling, "sampling differs by row", limit)),
        ("method", shared_or_each(named, method, "method differs by row", limit)),
    ]


def wrapped(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` wrapped to a figure ``width_inches`` wide at ``fontsize`` points (a
    character is about half the font size wide)."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars))


def _short(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."
