"""Whether evaluations can be compared as they stand: the same sampler, seeds and prompts,
scored by the same rewards on the same bench.

A table of two evaluations drawn with different sampling steps, on different prompts, or
scored by different rewards still prints numbers side by side; these notes say so, so that
nobody reads a sampler's (or a reward's) difference as a model's.
"""

from __future__ import annotations

from typing import Any

#: The sampling settings that change what an evaluation's images are.
SAMPLING_KEYS = ("method", "steps", "guidance", "eta", "height", "width", "options")


def comparability_notes(named: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per way the evaluations differ in how they were drawn (empty: comparable).
    Fields an evaluation does not record are not compared."""
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
        notes.append(f"prompt sets differ ({counts} prompts): a gap may be the prompts'")
    return notes


def _scoring_notes(named: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Notes where the evaluations were scored differently: other rewards give scores on
    other scales (shapes_soft's partial credit reads higher than shapes' all-or-nothing),
    and another bench means other prompts and a mean over other categories."""
    notes = []
    rewards = [(label, scoring_rewards(res)[0]) for label, res in named]
    if all(r is not None for _, r in rewards) and _differ([r for _, r in rewards]):
        shown = ", ".join(f"{label}: {_short(', '.join(r))}" for label, r in rewards)
        notes.append(f"rewards differ ({shown}): the scores are not on one scale")
    if all("bench" in res for _, res in named) and _differ([res["bench"] for _, res in named]):
        shown = ", ".join(f"{label}: {_short(res['bench'] or 'none')}" for label, res in named)
        notes.append(f"benches differ ({shown}): a gap may be the bench's")
    return notes


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
