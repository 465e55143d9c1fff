"""Tables from evaluation dicts: rich for the terminal, markdown and CSV for files."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one evaluation as ``column -> value`` (overall, strict, metric means,
    categories, other prompt groupings, constraint kinds met, costs, and how many images
    were drawn and how many of them scored: the means are over the scored ones)."""
    from dsharp.comparability import scored_count

    row: dict[str, float] = {}
    for key in ("overall", "strict"):
        if key in result:
            row[key] = result[key]
    for name, stats in result.get("metrics", {}).items():
        row[name] = stats["mean"] if isinstance(stats, dict) else stats
    for name, value in result.get("categories", {}).items():
        row[f"cat:{name}"] = value
    for grouping, labels in result.get("groups", {}).items():
        for label, value in labels.items():
            row[f"{grouping}:{label}"] = value
    for kind, value in result.get("constraints", {}).items():
        row[f"met:{kind}"] = value
    if "nfe_per_image" in result:
        nfe = result["nfe_per_image"]  # a count, shown as one where it is whole
        whole = isinstance(nfe, float) and nfe.is_integer()
        row["nfe/image"] = int(nfe) if whole else nfe
    trained, searched = result.get("train_reward_evals"), result.get("reward_evals_per_image")
    if trained is not None or searched is not None:
        # The whole budget behind these images: training's evaluations plus the search's.
        total = (trained or 0) + (searched or 0) * result.get("n_images", 0)
        row["reward evals (total)"] = int(total) if float(total).is_integer() else total
    if "n_images" in result:
        row["images"] = result["n_images"]
    scored = scored_count(result)
    if scored is not None:
        row["images scored"] = scored
    return row


def train_reward_evals(run_dir: Path, up_to_step: int | None = None) -> int | None:
    """Reward evaluations that steered a run's training (its last ``reward_evals`` in
    metrics.jsonl, or by step ``up_to_step``: the count its checkpoint of that step saved,
    exact also where that step logged no row), or None when the run logged none (no
    reward, or not reward-driven) or its metrics cannot be read."""
    from dsharp import checkpoints
    from dsharp.io import read_jsonl

    try:
        rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    except ValueError:  # a damaged file: the budget is not known, the evaluation still is
        return None
    counted = [r for r in rows if r.get("reward_evals") is not None]
    if not counted:
        return None
    if up_to_step is None:
        return int(counted[-1]["reward_evals"])
    try:
        state = checkpoints.read_trainer_state(checkpoints.checkpoint_dir(run_dir, up_to_step))
        saved = state.get("reward_evals")
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, int) and not isinstance(saved, bool):
        return saved
    earlier = [r for r in counted if isinstance(r.get("step"), int) and r["step"] <= up_to_step]
    return int(earlier[-1]["reward_evals"]) if earlier else None


def with_train_reward_evals(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``result`` with ``train_reward_evals`` from ``run_dir``'s metrics, when it logged any
    (an evaluation's own value is kept), up to the checkpoint step it scored where it says:
    a run that trained on after it was evaluated spent more than those images cost."""
    step = result.get("step")
    trained = train_reward_evals(run_dir, step if isinstance(step, int) else None)
    if trained is not None:
        result.setdefault("train_reward_evals", trained)
    return result


#: The base model's evaluation that the post-training report writes beside the run's own.
BASE_EVAL = "eval-base.json"


def eval_files(folder: Path, *, include_base: bool = False) -> list[Path]:
    """A run folder's evaluation JSON files (``eval*.json``), oldest first (ties by name).

    ``eval-base.json`` scores the model the run started from, not the run, so it is left out
    unless ``include_base``: a folder never stands for its base model's numbers.
    """
    found = Path(folder).glob("eval*.json")
    if not include_base:
        found = (p for p in found if p.name != BASE_EVAL)
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def scored_by_other_rewards(result: dict[str, Any]) -> bool:
    """Whether an evaluation scored a reward bench's prompts with rewards other than the
    bench's own (``dsharp eval --bench B --reward R`` writes ``eval-B-reward-R.json``): a
    score of other rewards, which must not stand for the run's score on the bench."""
    from dsharp.bench.reward_benches import REWARD_BENCHES

    bench, rewards = result.get("bench"), result.get("rewards")
    own = REWARD_BENCHES.get(bench) if isinstance(bench, str) else None
    return own is not None and isinstance(rewards, list) and rewards != [own.reward]


def _by_other_rewards(path: Path) -> bool:
    """:func:`scored_by_other_rewards` of a file; False where it cannot be read (a damaged
    file keeps its place, and whoever reads it says what is wrong with it)."""
    try:
        return scored_by_other_rewards(read_evaluation(path))
    except (OSError, ValueError):
        return False


def headline_order(paths: list[Path]) -> list[Path]:
    """Evaluation files (oldest first, as :func:`eval_files` lists them) in the order a
    run's score is picked from, the last first: evaluations scored by other rewards than
    their bench's go before the rest, so that they stand for a run only where it has no
    other evaluation."""
    return sorted(paths, key=lambda p: not _by_other_rewards(p))  # stable: age order kept


def run_evaluation(folder: Path) -> Path | None:
    """The evaluation that stands for a run folder (``dsharp compare RUN``): its newest
    (never ``eval-base.json``), an evaluation of its bench's own rewards before one of
    other rewards; None where it has none."""
    found = headline_order(eval_files(folder))
    return found[-1] if found else None


def no_evaluation_error(folder: Path) -> FileNotFoundError:
    """The error for a folder with no evaluation of its run, pointing at ``eval-base.json``
    where that is all there is."""
    only_base = (Path(folder) / BASE_EVAL).exists()
    hint = (
        f" ({BASE_EVAL} scores its base model; give that file to compare it)" if only_base else ""
    )
    return FileNotFoundError(
        f"{folder}: no evaluation of this run in this folder{hint} (run dsharp eval first)"
    )


def load_result(source: Path) -> tuple[str, dict[str, Any]]:
    """An evaluation JSON file, or a run folder's :func:`run_evaluation`; returns (label,
    dict)."""
    source = Path(source)
    if source.is_dir():
        found = run_evaluation(source)
        if found is None:
            raise no_evaluation_error(source)
        return source.name, with_train_reward_evals(read_evaluation(found), source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    data = read_evaluation(source)
    return data.get("label") or _file_label(source), data


def read_evaluation(path: Path) -> dict[str, Any]:
    """One evaluation JSON (``dsharp eval --json`` / ``eval*.json``); ``ValueError`` naming
    the file when it is not JSON or not an evaluation (no ``overall`` or ``metrics``, or a
    field of another type: see :mod:`dsharp.evaluation_check`)."""
    from dsharp.evaluation_check import evaluation_problem

    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        # the message alone can end "...character at": where is in lineno and colno
        where = f"line {exc.lineno} column {exc.colno}"
        raise ValueError(f"{path}: not JSON ({exc.msg}, {where})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not JSON (not text)") from None
    if not isinstance(data, dict) or not ("overall" in data or "metrics" in data):
        raise ValueError(f"{path}: not a dsharp evaluation (no 'overall' or 'metrics')")
    problem = evaluation_problem(data)
    if problem is not None:
        raise ValueError(f"{path}: not a dsharp evaluation ({problem})")
    return data


def _file_label(source: Path) -> str:
    """A run's own evaluation file (``RUN/eval-shapes.json``) is labelled by its run, so that
    several runs' files do not all read ``eval-shapes``; any other file by its name."""
    in_run = (source.parent / "recipe.yaml").exists() or (source.parent / "metrics.jsonl").exists()
    return source.parent.name if source.stem.startswith("eval") and in_run else source.stem


def distinct_labels(
    named: list[tuple[str, dict[str, Any]]], sources: list[Path]
) -> list[tuple[str, dict[str, Any]]]:
    """Rows that would share a label are labelled by the shortest end of the path given that
    tells them apart (``qa1/eval-final.json``, not the whole path, which would fill a plot's
    legend), so that no row of a comparison is ambiguous or, where rows are keyed by label,
    silently dropped; one file given twice is numbered (``x.json (2)``)."""
    labels = [label for label, _ in named]
    clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
    for i in clashing:
        labels[i] = _shortest_suffix(Path(sources[i]), [Path(sources[j]) for j in clashing])
    met = [i for i, label in enumerate(labels) if labels.count(label) > 1]
    for i in met:  # a suffix that meets another row's own label: both by the path given
        labels[i] = str(sources[i])
    for i, label in enumerate(labels):  # the same path given twice
        if labels[:i].count(label):
            labels[i] = f"{label} ({labels[:i].count(label) + 1})"
    return [(label, result) for label, (_, result) in zip(labels, named, strict=True)]


def _shortest_suffix(path: Path, others: list[Path]) -> str:
    """The fewest last parts of ``path`` that no other of ``others`` ends with."""
    parts = path.parts
    for n in range(1, len(parts) + 1):
        end = parts[-n:]
        if sum(other.parts[-n:] == end for other in others) == 1:
            return str(Path(*end))
    return str(path)


def build_table(named: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """Columns (union, in first-seen order) and one row per named result."""
    flat = [(label, flatten_result(res)) for label, res in named]
    columns: list[str] = []
    for _, row in flat:
        columns += [c for c in row if c not in columns]
    rows = [[label] + [row.get(c, float("nan")) for c in columns] for label, row in flat]
    return ["run", *columns], rows


#: A missing value (NaN, JSON null) as a markdown or terminal table shows it; a table built
#: with it already in place (the paper comparison's) is written the same way.
MISSING_CELL = "-"


def _is_missing(value: Any) -> bool:
    """NaN, None (NaN as JSON writes it) or the ``-`` a table put in place of either."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and value == MISSING_CELL)


def _cell(value: Any) -> str:
    """A table cell: NaN and None (NaN as JSON writes it) both read ``-``."""
    if _is_missing(value):
        return MISSING_CELL
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def to_json_table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """The table for ``--json``: its columns and rows as the CSV has them, a missing value
    (NaN, None, ``-``) null."""
    from dsharp.io import json_safe

    cells = [[None if _is_missing(v) else v for v in row] for row in rows]
    return {"columns": list(columns), "rows": json_safe(cells)}


def to_markdown(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 places, NaN as ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    """CSV text, a missing value (NaN, None, ``-``) an empty cell: what spreadsheets and
    ``pandas.read_csv`` read as missing, where ``nan`` or ``-`` would be text to them."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows([["" if _is_missing(v) else v for v in row] for row in rows])
    return buf.getvalue()


def to_rich(
    columns: list[str], rows: list[list[Any]], title: str | None = None, unit: str = "run"
) -> _RunColumns:
    """Rich tables with one column per run and one row per metric, cut at render time into
    as many tables as it takes for each to fit the console that prints them, so that no
    number is folded across lines however many runs there are. ``unit`` names what a column
    is in the parts' titles (``runs 1-4 of 12``; the paper comparison's are ``column``s:
    paper, ours and delta per run)."""
    return _RunColumns(columns, rows, title, unit)


class _RunColumns:
    """A table of runs as columns that splits itself to the printing console's width."""

    def __init__(
        self, columns: list[str], rows: list[list[Any]], title: str | None, unit: str = "run"
    ):
        self.columns, self.rows, self.title, self.unit = columns, rows, title, unit

    def __rich_console__(self, console: Any, options: Any):
        yield from self.tables(options.max_width)

    def tables(self, width: int) -> list[Any]:
        from rich.table import Table

        columns, rows, title = self.columns, self.rows, self.title
        metric_width = max([len("metric"), *(len(str(c)) for c in columns[1:])])
        run_widths = [max(len(str(row[0])), *(len(_cell(v)) for v in row[1:]), 1) for row in rows]
        chunks = _column_chunks(metric_width, run_widths, width)
        tables = []
        for start, stop in chunks:
            name = title
            if len(chunks) > 1:
                unit = self.unit
                part = (
                    f"{unit} {stop} of {len(rows)}"
                    if stop - start == 1
                    else f"{unit}s {start + 1}-{stop} of {len(rows)}"
                )
                name = f"{title} ({part})" if title else part
            table = Table(title=name)
            table.add_column("metric", justify="left")
            for row in rows[start:stop]:
                table.add_column(str(row[0]), justify="right", overflow="fold")
            for i, metric in enumerate(columns[1:], start=1):
                table.add_row(metric, *[_cell(row[i]) for row in rows[start:stop]])
            tables.append(table)
        return tables


def _column_chunks(first: int, widths: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` runs of columns whose table fits ``limit`` characters
    beside a first column of width ``first`` (each column takes its text, one space either
    side and a border); as few chunks as greedy filling needs, evened out where they still
    fit, and at least one column per chunk."""

    def fits(start: int, stop: int) -> bool:
        return first + 4 + sum(w + 3 for w in widths[start:stop]) <= limit or stop - start == 1

    greedy: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(widths) + 1):
        if not fits(start, i):
            greedy.append((start, i - 1))
            start = i - 1
    if widths:
        greedy.append((start, len(widths)))
    count = len(greedy)
    if count <= 1:
        return greedy or [(0, 0)]
    bounds = [round(k * len(widths) / count) for k in range(count + 1)]
    even = list(zip(bounds, bounds[1:], strict=False))
    return even if all(fits(a, b) for a, b in even) else greedy
