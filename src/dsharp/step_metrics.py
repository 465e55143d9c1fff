"""A training step's metrics row, pooled exactly from the rows of all its micro-batches on
every process: an average of per-batch means would weigh a batch that kept few items
(pairs skipped, rewards missing) as much as a full one.

How each column pools:

- a :class:`Mean` (a mean over some items: samples, pairs, transitions) by its item count;
- a count (:data:`~dsharp.methods.registry.COUNT_COLUMNS`) by summing;
- ``reward`` and ``reward_std`` over every scored sample (:mod:`dsharp.reward_moments`);
- any other plain float (``loss``, ``grad_norm``, ``new_round``) by the mean over the rows
  that logged it: the optimizer's gradient is the mean of every micro-batch's on every
  process, so that is the step's ``loss``.

NaN (and a column a row does not have) adds nothing; a column no row logged is NaN. A
method that trains on one sampled round over several calls (DDPO, D3PO) logs the round's
columns on each call, tagged :data:`ROUND`: a step pools each round once
(:func:`once_per_round`), or its pairs and missing rewards would count a round once a call.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from dsharp.reward_moments import pooled_metrics, take_moments

ROUND = "_round"
"""A row's ``(round number, names of the round's columns)``: rows of one process with the
same number describe the same samples in those columns."""


class Mean(float):
    """A float that is the mean of ``count`` items, so that pooling weighs it by them; it
    reads, compares and serialises as its value."""

    __slots__ = ("count",)
    count: int

    def __new__(cls, value: float, count: int) -> Mean:
        out = super().__new__(cls, value)
        out.count = int(count)
        return out

    def __reduce__(self) -> tuple:  # pickled (gather_object) with its count
        return (Mean, (float(self), self.count))


def metrics_to_plain(metrics: dict[str, object]) -> dict[str, object]:
    """``metrics`` with each :class:`Mean` as ``{"mean": value, "count": count}``, for a
    file that loads with torch's ``weights_only`` (it rebuilds no class of dsharp's)."""
    return {
        key: {"mean": float(value), "count": value.count} if isinstance(value, Mean) else value
        for key, value in metrics.items()
    }


def metrics_from_plain(plain: dict[str, object]) -> dict[str, object]:
    """Back from :func:`metrics_to_plain`."""
    return {
        key: Mean(value["mean"], value["count"]) if isinstance(value, dict) else value
        for key, value in plain.items()
    }


def _pooled_mean(values: Sequence[float]) -> float:
    """The mean of ``values`` weighted by their :class:`Mean` counts; the plain mean where
    they carry none or all carry the same (the same digits as before counts were kept)."""
    counts = [getattr(v, "count", None) for v in values]
    if None in counts or len(set(counts)) == 1 or not sum(counts):
        return float(sum(values)) / len(values)
    return sum(float(v) * c for v, c in zip(values, counts, strict=True)) / sum(counts)


def plain_row(metrics: dict[str, object]) -> dict[str, object]:
    """A method's metrics row with every value a Python number: a method (a plugin's, say)
    may log 0-dim tensors or numpy scalars, which would otherwise travel pickled through the
    processes' gather, device and all. :class:`Mean`, ints and the :data:`ROUND` tag stay."""
    out: dict[str, object] = {}
    for key, value in metrics.items():
        if key == ROUND or isinstance(value, int | float) or value is None:
            out[key] = value
        elif isinstance(value, numbers.Integral):  # a numpy count stays a whole number
            out[key] = int(value)
        else:
            out[key] = float(value)  # type: ignore[arg-type]
    return out


def once_per_round(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """One process's rows with each round's columns (:data:`ROUND`) kept in the first row
    of the round only; takes the tag out of each row."""
    seen: set[object] = set()
    out = []
    for row in rows:
        tag = row.pop(ROUND, None)
        if tag is not None:
            number, names = tag
            if number in seen:
                row = {k: v for k, v in row.items() if k not in names}
            seen.add(number)
        out.append(row)
    return out


def pool_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """The step's metrics from its micro-batches' rows on every process (taking each
    row's :data:`~dsharp.reward_moments.SCORED` out). One row comes back as logged."""
    from dsharp.methods.registry import COUNT_COLUMNS

    moments = take_moments(rows)
    # Union of keys: some metrics (grad_norm) exist only on the micro-step that syncs.
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out: dict[str, float] = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        if not values:
            out[key] = float("nan")
        elif key in COUNT_COLUMNS:
            out[key] = sum(values)
        else:
            out[key] = _pooled_mean(values)
    if len(rows) > 1:  # one batch: its own values, as logged
        out.update(pooled_metrics(moments, "reward_std" in out))
    return out
