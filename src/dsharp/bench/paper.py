"""The Diffusion-Sharpening paper's reported numbers (Tables 1-3, SDXL), shipped as package
data, and their alignment with our evaluation results (``dsharp compare --against paper``).

The package file (``assets/reference/paper_tables.yaml``) is a verbatim copy of the
project's reference ``shared/reference/paper_tables.yaml``: the numbers as printed in
arXiv 2502.12146v1, Tables 1-3 (its ``source``), on the paper's scales (CLIP score a plain
cosine, MLLM overall / 10). ``tests/test_paper_numbers.py`` checks every cell dsharp shows
against the reference, so a typo in the copy fails there.

Our metric keys map to the paper's columns as follows (a result may also carry a paper
column name directly as a metric key):

==================  ===========================================================
paper column        our metric key (``result["metrics"]``)
==================  ===========================================================
clip_score          ``clip`` (plain cosine: a ``clip`` reward recorded with another
                    ``scale``, e.g. the paper's code's 100, is divided by it)
t2i_color ...       ``t2i_color``, ``t2i_shape``, ``t2i_texture``, ``t2i_spatial``,
t2i_complex         ``t2i_non_spatial``, ``t2i_complex`` (``dsharp eval --bench
                    t2i-compbench``)
aesthetic           ``aesthetic``
image_reward        ``imagereward``
mllm                ``mllm`` (overall / 10, the paper's 0-1 scale)
==================  ===========================================================

Each of our results is compared with one paper row, its *reference*: ``match[label]`` when
given, else ``result["paper_row"]``, else the paper row whose name equals the label
(normalised: lower case, ``-``/space -> ``_``; for Table 2 a label such as ``n=3``, ``n3`` or
``3``, for Table 3 ``m=3``, ``m3`` or ``3``), else the table's default reference (Table 1:
``sdxl``, the base model; Tables 2 and 3: 3, the paper's chosen setting). A row that
``match`` or ``paper_row`` names must be in the table; one that a run's recipe implies
(``recipe_paper_row``: an RLHF sharpening run's ``method.n`` / ``.m``, before the label)
may not be, and then the result has no paper row (``paper:-``). In Tables 2 and 3
a result marked ``untrained`` (a study's base row), or trained by another method
(``recipe_method``: DDPO's ``n`` is its samples per prompt), has no paper row unless it
names one (``match`` or ``paper_row``). Rows come in threes per
result: the paper's row, ours, and the delta (ours - paper). A metric we do not have shows
as ``"-"``; our metrics that no paper column reads (e.g. ``shapes``) follow as extra columns
with no paper value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from dsharp.report import MISSING_CELL

PAPER_FILE = Path(__file__).resolve().parent.parent / "assets" / "reference" / "paper_tables.yaml"
TABLES = ("table1", "table2", "table3")
MISSING = MISSING_CELL

METRIC_SOURCES: dict[str, tuple[str, ...]] = {
    "clip_score": ("clip_score", "clip"),
    "t2i_color": ("t2i_color",),
    "t2i_shape": ("t2i_shape",),
    "t2i_texture": ("t2i_texture",),
    "t2i_spatial": ("t2i_spatial",),
    "t2i_non_spatial": ("t2i_non_spatial",),
    "t2i_complex": ("t2i_complex",),
    "aesthetic": ("aesthetic",),
    "image_reward": ("image_reward", "imagereward"),
    "mllm": ("mllm",),
}
"""Paper column -> our metric keys, first found wins."""

_DEFAULT_REFERENCE = {"table1": "sdxl", "table2": "3", "table3": "3"}
#: A result's paper row as its run's recipe implies it (``method.n`` for Table 2, ``.m`` for
#: Table 3), not named by anyone: one the table lacks means no paper row, not an error.
RECIPE_ROW = "recipe_paper_row"
#: A trained run's method where it is not the one whose n / m Tables 2 and 3 vary: its own
#: n (DDPO's samples per prompt) or unused m is no row of theirs.
RECIPE_METHOD = "recipe_method"
#: The method whose ``method.n`` / ``.m`` Tables 2 and 3 vary: their n = 3 and m = 3 rows are
#: Table 1's RLHF Diffusion-Sharpening row (an SFT run's numbers are another method's).
TABLE_METHOD = "rlhf_sharpening"
_ROW_HEADER = {"table1": "method", "table2": "n", "table3": "m"}


@cache
def _load() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(PAPER_FILE.read_text(encoding="utf-8"))


def _table(name: str) -> dict[str, Any]:
    if name not in TABLES:
        raise ValueError(f"paper table {name!r} unknown (available: {', '.join(TABLES)})")
    return _load()[name]


def paper_source() -> str:
    """Where the numbers come from (the paper and its version)."""
    return str(_load()["source"])


#: The model behind every row of the paper's tables (the reference file's header says so).
PAPER_MODEL = "SDXL"


def paper_legend(table: str) -> str:
    """One line naming which rows of a side-by-side table are the paper's and which are
    ours: a ``compare.md`` or a study's ``table.md`` read alone must not pass the paper's
    printed numbers (of another model) for measurements of this project."""
    title = _table(table)["title"]
    return (
        f"paper: rows as printed in {paper_source()} ({table}: {title}; {PAPER_MODEL}), "
        "not measured here; ours: measured here; delta: ours - paper"
    )


def paper_table(name: str) -> tuple[list[str], list[list[Any]]]:
    """The paper's table ``name`` as ``(columns, rows)``; the first column names the row
    (method for Table 1, n or m for Tables 2 and 3)."""
    table = _table(name)
    columns = [_ROW_HEADER[name], *table["columns"]]
    rows = [[str(label), *values] for label, values in table["rows"].items()]
    return columns, rows


def _normalise(label: str) -> str:
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


def _reference(table: str, label: str, result: Mapping[str, Any], match: Mapping[str, str]):
    return _chosen_row(table, label, result, match)[0]


def _chosen_row(
    table: str, label: str, result: Mapping[str, Any], match: Mapping[str, str]
) -> tuple[Any, bool]:
    """(the paper row a result is compared with, or None; whether it is the table's
    default row only because nothing named one)."""
    rows = {str(k): k for k in _table(table)["rows"]}
    explicit = label in match or result.get("paper_row") is not None
    # Tables 2 and 3 vary RLHF sharpening's n and m: an untrained model, or one trained by
    # another method, has none of them
    other = result.get("untrained") or result.get(RECIPE_METHOD) is not None
    if not explicit and table != "table1" and other:
        return None, False
    wanted = match.get(label) or result.get("paper_row")
    if wanted is not None:
        if str(wanted) not in rows:
            raise ValueError(
                f"{label}: paper row {wanted!r} not in {table} (rows: {', '.join(rows)})"
            )
        return rows[str(wanted)], False
    implied = result.get(RECIPE_ROW)
    if implied is not None:  # a run's method.n / .m: a setting the paper did not run has none
        return rows.get(str(implied)), False
    key = _row_key(table, label)
    if key in rows:
        return rows[key], False
    return rows[_DEFAULT_REFERENCE[table]], True


def _row_key(table: str, label: str) -> str:
    """The paper row a label names (normalised; ``n=3`` -> ``3`` in Table 2)."""
    key = _normalise(label)
    if table != "table1":
        prefix = _ROW_HEADER[table]  # "n" for Table 2, "m" for Table 3
        number = re.fullmatch(rf"(?:{prefix}_?=?_?)?(\d+)", key)
        key = number.group(1) if number else key
    return key


def default_reference_notes(
    results: Mapping[str, Mapping[str, Any]],
    table: str,
    match: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per result compared with the table's default row only because nothing
    named a row (its label, ``paper_row``, ``match``): a quickstart run beside SDXL says why;
    and one per run whose recipe's setting is no row of the table (it has no paper row)."""
    notes = []
    for label, result in results.items():
        row, fell_back = _chosen_row(table, label, result, dict(match or {}))
        implied = result.get(RECIPE_ROW)
        other = result.get(RECIPE_METHOD)
        if row is None and other is not None and table != "table1":
            notes.append(
                f"{label}: trained by {other}, not by {TABLE_METHOD}, whose "
                f"method.{_ROW_HEADER[table]} {table} varies, so it has no paper row"
            )
        if row is None and implied is not None:
            rows = ", ".join(str(k) for k in _table(table)["rows"])
            notes.append(
                f"{label}: its recipe's method.{_ROW_HEADER[table]} is {implied}, which {table} "
                f"has no row for (rows: {rows}), so it has no paper row"
            )
        if fell_back:
            notes.append(
                f"{label}: no paper row of {table} is named {label!r}, so it is compared with "
                f"{row}, the table's default row"
            )
    return notes


#: Cells the reference file marks "as printed": the paper's number, kept though it is out of
#: line with its column (Demon's MLLM 0.300 beside the other rows' 0.78-0.92). A table that
#: shows one says so, so that its delta is not read as a measured gain.
AS_PRINTED: dict[str, dict[str, tuple[str, ...]]] = {"table1": {"demon": ("mllm",)}}


def as_printed_notes(table: str, rows: Sequence[Sequence[Any]]) -> list[str]:
    """One line per paper cell of :data:`AS_PRINTED` that a comparison's ``paper:<row>``
    rows (:func:`compare_with_paper`'s ``rows``) show."""
    spec = _table(table)
    by_name = {str(k): k for k in spec["rows"]}
    shown = [str(r[0]).removeprefix("paper:") for r in rows if str(r[0]).startswith("paper:")]
    notes = []
    for name in dict.fromkeys(n for n in shown if n in by_name):
        row = by_name[name]
        for column in AS_PRINTED.get(table, {}).get(name, ()):
            index = spec["columns"].index(column)
            others = [v[index] for k, v in spec["rows"].items() if k != row]
            notes.append(
                f"paper:{name} {column} {spec['rows'][row][index]} is as printed in "
                f"{paper_source()}, out of line with the column's other rows "
                f"({min(others)}-{max(others)})"
            )
    return notes


#: Our metric keys whose reward has a ``scale`` option that the paper's column does not
#: apply: the paper's CLIP score is the plain cosine, ``clip`` is ``scale * cosine``.
SCALED_SOURCES: dict[str, str] = {"clip": "clip_score"}


def _recorded_scale(result: Mapping[str, Any], key: str) -> float:
    """The ``scale`` option the evaluation recorded for reward ``key`` (``reward_specs``),
    1 where it records none (the reward's default, or a file written before specs were
    recorded)."""
    spec = (result.get("reward_specs") or {}).get(key)
    options = spec.get("options") if isinstance(spec, Mapping) else None
    scale = options.get("scale") if isinstance(options, Mapping) else None
    number = isinstance(scale, int | float) and not isinstance(scale, bool)
    return float(scale) if number and math.isfinite(scale) and scale > 0 else 1.0


def metric_value(result: Mapping[str, Any], column: str) -> float | None:
    """Our value for the paper's ``column`` (see the mapping table), or ``None``; a
    ``clip`` score recorded with ``scale`` s (the paper's code used 100) is divided by s,
    so that it is on the paper's plain-cosine scale."""
    metrics = result.get("metrics", {}) or {}
    for key in METRIC_SOURCES.get(column, (column,)):
        value = metrics.get(key)
        if isinstance(value, Mapping):
            value = value.get("mean")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not math.isnan(float(value)):
            if SCALED_SOURCES.get(key) == column:
                return float(value) / _recorded_scale(result, key)
            return float(value)
    return None


def _own_metrics(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """Our metric keys that no paper column reads (e.g. ``shapes``), in first-seen order."""
    used = {key for column in columns for key in METRIC_SOURCES.get(column, (column,))}
    extra: list[str] = []
    for result in results.values():
        for key in result.get("metrics", {}) or {}:
            if key not in used and key not in extra:
                extra.append(key)
    return extra


def merge_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result whose metrics are the union of ``results``' (a later one wins a clash):
    a model's T2I-CompBench and reward-bench evaluations side by side in one row. Each
    metric keeps its reward's recorded settings (``reward_specs``), which say its scale; a
    T2I-CompBench evaluation, how it departs from the benchmark's protocol
    (:mod:`dsharp.bench.t2i_protocol`), which its metrics alone do not say."""
    from dsharp.bench.t2i_protocol import PROTOCOL_KEY, T2I_BENCH, merge_protocols, protocol_of

    merged: dict[str, Any] = {"metrics": {}, "reward_specs": {}}
    owner: dict[str, int] = {}  # which result each merged T2I-CompBench column comes from
    protocols: dict[int, dict[str, list[str]]] = {}
    for index, result in enumerate(results):
        if result.get("bench") == T2I_BENCH or PROTOCOL_KEY in result:
            protocols[index] = protocol_of(result)
        metrics = result.get("metrics", {}) or {}
        merged["metrics"].update(metrics)
        owner.update({key: index for key in metrics if str(key).startswith("t2i_")})
        specs = result.get("reward_specs") or {}
        for key in metrics:  # each metric keeps the settings of the file it came from
            if key in specs:
                merged["reward_specs"][key] = specs[key]
            else:
                merged["reward_specs"].pop(key, None)
        if result.get("paper_row") is not None:
            merged["paper_row"] = result["paper_row"]
    # every T2I-CompBench evaluation whose columns the row shows says how it was measured:
    # a quick look's color beside a full spatial run is not the full run's
    shown = [protocols[i] for i in sorted(protocols) if i in owner.values()]
    if shown:
        merged[PROTOCOL_KEY] = merge_protocols(shown)
    return merged


def compare_with_paper(
    results: Mapping[str, Mapping[str, Any]],
    table: str = "table1",
    *,
    match: Mapping[str, str] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Our results (``label -> result dict``) beside the paper's ``table``, row by row.

    Columns: ``row`` then the table's metric columns. For each result, three rows:
    ``paper:<reference>``, ``ours:<label>``, ``delta:<label>`` (ours - paper). See the
    module docstring for how the reference row is chosen and how metrics are mapped.
    """
    spec = _table(table)
    match = dict(match or {})
    unknown = sorted(set(match) - set(results))
    if unknown:
        raise ValueError(f"match: no result labelled {', '.join(unknown)}")
    extra = _own_metrics(results, spec["columns"])
    columns = ["row", *spec["columns"], *extra]
    rows: list[list[Any]] = []
    for label, result in results.items():
        ref = _reference(table, label, result, match)
        paper = spec["rows"][ref] if ref is not None else [MISSING] * len(spec["columns"])
        ours = [metric_value(result, c) for c in [*spec["columns"], *extra]]
        delta = [
            MISSING if o is None or p == MISSING else round(o - float(p), 6)
            for o, p in zip(ours[: len(paper)], paper, strict=True)
        ]  # the extra columns have no paper value, so no delta
        blank = [MISSING] * len(extra)
        name = ref if ref is not None else ("untrained" if result.get("untrained") else MISSING)
        rows.append([f"paper:{name}", *paper, *blank])
        rows.append([f"ours:{label}", *[MISSING if o is None else o for o in ours]])
        rows.append([f"delta:{label}", *delta, *blank])
    return columns, rows
