"""A step's logged ``reward`` and ``reward_std`` over every sample it scored, on every
micro-batch and every process: each micro-batch logs its mean, its (population) std and,
under :data:`SCORED`, how many samples it scored; this pools those exactly (Chan et al.'s
parallel update), where an average of the per-batch means and stds would weight a batch
that scored few samples as much as a full one and leave out the spread between batches."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

SCORED = "_reward_scored"
"""A metrics row's count of the samples its ``reward`` (and ``reward_std``) is over; the
engine takes it out of the row before logging."""

Moments = tuple[float, float, float]
"""(count, mean, sum of squared deviations from the mean) of some rewards."""


def scored_summary(rewards: torch.Tensor, *, std: bool = True) -> dict[str, float]:
    """``reward`` (the mean of the scored rewards; NaN marks an unscored sample), its
    population ``reward_std`` (with ``std``), ``reward_missing`` and the :data:`SCORED`
    count, for a metrics row."""
    scored = rewards[~torch.isnan(rewards)]
    out = {"reward": scored.mean().item() if scored.numel() else float("nan")}
    if std:
        out["reward_std"] = scored.std(correction=0).item() if scored.numel() else float("nan")
    out["reward_missing"] = int(torch.isnan(rewards).sum().item())
    out[SCORED] = int(scored.numel())
    return out


def scored_mean(rewards: torch.Tensor) -> dict[str, float]:
    """``reward`` (the mean of the scored rewards) and the :data:`SCORED` count, for a
    method that logs no std and no missing count."""
    summary = scored_summary(rewards, std=False)
    return {"reward": summary["reward"], SCORED: summary[SCORED]}


def combine(parts: Iterable[Moments]) -> Moments:
    """The moments of the union of disjoint sets of rewards; empty parts add nothing, and
    one part alone comes back as it was."""
    n, mean, m2 = 0.0, 0.0, 0.0
    for count, part_mean, part_m2 in parts:
        if count <= 0:
            continue
        if n == 0:
            n, mean, m2 = count, part_mean, part_m2
            continue
        total = n + count
        delta = part_mean - mean
        mean += delta * count / total
        m2 += part_m2 + delta * delta * n * count / total
        n = total
    return n, mean, m2


def take_moments(rows: list[dict[str, float]]) -> Moments:
    """This process's moments over its micro-batches' rows, taking :data:`SCORED` out of
    each (a row without it, or without a std, adds no spread of its own)."""
    parts = []
    for row in rows:
        count = row.pop(SCORED, 0)
        if not count:
            continue
        std = row.get("reward_std", 0.0)
        std = 0.0 if std is None or math.isnan(std) else std
        parts.append((float(count), float(row["reward"]), count * std * std))
    return combine(parts)


def pooled_metrics(moments: Moments, has_std: bool) -> dict[str, float]:
    """``reward`` (and, with ``has_std``, ``reward_std``) of pooled ``moments``; nothing
    where no sample was scored (the rows' own NaN stands)."""
    n, mean, m2 = moments
    if n <= 0:
        return {}
    out = {"reward": mean}
    if has_std:
        out["reward_std"] = math.sqrt(max(m2, 0.0) / n)
    return out
