"""A study's outputs: the table (with the paper's numbers beside ours where it has them) or
the figure (a metric against training steps or against NFE), written from the rows whose
runs have finished. :mod:`dsharp.study` loads, plans and runs the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsharp.curves import finite_number, step_series
from dsharp.io import atomic_save_png, pyplot
from dsharp.report import to_csv
from dsharp.study import LoadedStudy, PlotSpec, RowPlan, paper_row_of, plan_row, read_row_eval


@dataclass
class StudyOutcome:
    """What a study run wrote, and the rows it could show."""

    outputs: list[Path]
    shown: list[str]
    missing: list[str]
    tables: list[Any] = field(default_factory=list)


def write_outputs(loaded: LoadedStudy, *, echo: Callable[[str], None] = print) -> StudyOutcome:
    """The table or figure from the rows whose runs are finished (the others are listed)."""
    plans = [plan_row(loaded, p) for p in loaded.rows]
    done = [p for p in plans if p.status == "reuse" and not p.conflict]
    missing = [p.label for p in plans if p not in done]
    if missing:
        echo(f"not finished, left out: {', '.join(missing)}")
    if not done:
        raise ValueError(f"{loaded.path}: no finished rows to show yet")
    if loaded.study.kind == "table":
        outputs, tables = _write_table(loaded, done, missing, echo)
    else:
        outputs, tables = _write_figure(loaded, done, missing), []
    return StudyOutcome(outputs, [p.label for p in done], missing, tables)


# --------------------------------------------------------------------------- tables


def _write_table(
    loaded: LoadedStudy,
    done: list[RowPlan],
    missing: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> tuple[list[Path], list[Any]]:
    from dsharp.io import atomic_write_text
    from dsharp.report import build_table, to_csv, to_markdown, to_rich

    study = loaded.study
    out = loaded.output_dir
    title = study.title or study.name or loaded.path.stem
    named = [(p.label, _row_result(p)) for p in done]
    columns, rows = build_table(named)
    columns[0] = "row"
    md = [f"# {title}", "", f"Study: `{loaded.path}`; one run folder per row under `{out}`.", ""]
    md.append(to_markdown(columns, rows).rstrip("\n"))
    md += ["", *_measured_with(named)]
    if missing:  # as the terminal says: the table alone must not pass for the whole study
        md += ["", f"Not finished, left out: {', '.join(missing)}."]
    tables = [to_rich(columns, rows, title=title)]
    outputs = [out / "table.md", out / "table.csv"]
    paper_csv = out / "table-paper.csv"
    paper_text = None
    if study.paper_table is not None:
        paper, why_not, unpaired, protocol = _paper_comparison(study.paper_table, done)
        if paper is None:
            md += ["", f"Not beside the paper's {study.paper_table}: {why_not}."]
            echo(f"not beside the paper's {study.paper_table}: {why_not}")
        else:
            from dsharp.bench.paper import as_printed_notes, paper_legend, paper_source

            p_columns, p_rows = paper
            printed = [*as_printed_notes(study.paper_table, p_rows), *protocol]
            md += ["", f"## Beside the paper ({study.paper_table}, {paper_source()})", ""]
            md += [paper_legend(study.paper_table), ""]
            md.append(to_markdown(p_columns, p_rows))
            if unpaired:
                md += ["", f"No paper row ({_UNPAIRED}): {', '.join(unpaired)}."]
            md += ["", *(f"Note: {line}." for line in printed)] if printed else []
            paper_text = to_csv(p_columns, p_rows)
            outputs.append(paper_csv)
            tables.append(to_rich(p_columns, p_rows, f"{title}: beside the paper", "column"))
    from dsharp.file_sets import replaced_together

    # one set, table.md last; a table-paper.csv not written now is removed, as an earlier
    # run's comparison would pass for this one's
    kept = [paper_csv] if paper_text is not None or paper_csv.exists() else []
    with replaced_together(*kept, out / "table.csv", out / "table.md") as staged:
        if paper_text is not None:
            atomic_write_text(staged(paper_csv), paper_text)
        atomic_write_text(staged(out / "table.csv"), to_csv(columns, rows))
        atomic_write_text(staged(out / "table.md"), "\n".join(md).rstrip("\n") + "\n")
    return outputs, tables


def _measured_with(named: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Markdown lines saying what the rows' numbers were measured with (rewards, prompts,
    seeds, sampling): the table alone does not say, and the rows may differ in it."""
    from dsharp.score_words import evaluation_lines

    lines = evaluation_lines(named)
    if not lines:
        return []
    return ["Measured with:", "", *(f"- {line}" for line in lines)]


#: Why a row of a Table 2 or 3 study has no paper row.
_UNPAIRED = "untrained or not rlhf_sharpening, no paper_row"


def _row_result(plan: RowPlan) -> dict[str, Any]:
    """A finished row's evaluation, with the reward evaluations its training spent."""
    from dsharp.report import with_train_reward_evals

    result = dict(read_row_eval(plan.eval_path) or {})
    return with_train_reward_evals(result, plan.run_dir) if plan.trained else result


def _paper_comparison(
    table: str, done: list[RowPlan]
) -> tuple[tuple[list[str], list[list[Any]]] | None, str, list[str], list[str]]:
    """The rows beside the paper's, as ``dsharp compare ROW... --against paper`` shows them
    (every eval*.json of a row folder merged, so a T2I-CompBench evaluation written there
    joins the row), or None with the reason there is none (no row has a paper row, or none
    of our metrics has a paper column); the rows left out for having no paper row; and
    where a row's T2I-CompBench columns were measured otherwise than the paper's
    (:func:`dsharp.bench.t2i_protocol.protocol_notes`)."""
    from dsharp.bench import compare_with_paper
    from dsharp.bench.paper import MISSING, paper_table
    from dsharp.paper_results import results_for_paper

    named: dict[str, dict[str, Any]] = {}
    unpaired = []
    for plan in done:
        wanted = paper_row_of(table, plan)
        if wanted is None:  # Tables 2/3: an untrained row has no n or m of the paper's
            unpaired.append(plan.label)
            continue
        _, merged = results_for_paper(plan.run_dir, table)
        merged["paper_row"] = wanted
        named[plan.label] = merged
    if not named:
        shown = ", ".join(unpaired)
        return (
            None,
            f"none of the rows shown has a paper row ({shown}: {_UNPAIRED})",
            [],
            [],
        )
    columns, rows = compare_with_paper(named, table)
    ours = [r for r in rows if str(r[0]).startswith("ours:")]
    width = len(paper_table(table)[0])  # row name + the paper's columns; ours (shapes) follow
    if all(v == MISSING for r in ours for v in r[1:width]):
        return None, "no metric of these rows maps to one of its columns", unpaired, []
    from dsharp.bench.t2i_protocol import protocol_notes

    return (columns, rows), "", unpaired, protocol_notes(named, paper_table(table)[0])


# --------------------------------------------------------------------------- figures


def eval_metric(result: dict[str, Any], name: str) -> float | None:
    """An evaluation's value for ``name``: overall / strict / nfe_per_image, a metric's mean,
    or a paper column through its metric mapping (clip_score -> clip)."""
    from dsharp.bench.paper import metric_value

    if name in ("overall", "strict", "nfe_per_image"):
        return finite_number(result.get(name))
    return metric_value(result, name)


def plot_steps(
    curves: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    spec: PlotSpec,
    title: str,
    png: Path,
    csv_path: Path,
) -> None:
    """Figures 4 and 6: one line per row (``(label, metrics.jsonl rows)``) against the
    training step, smoothed, with a +- band when ``spec.band`` is set; PNG plus the CSV of
    the plotted points."""
    plt = pyplot()

    series = [(label, step_series(rows, spec.y, spec.band, spec.smooth)) for label, rows in curves]
    for label, points in series:  # before any figure exists: a failure leaves none open
        if not points:
            raise ValueError(f"{label}: no {spec.y!r} values in its metrics.jsonl")
    fig, ax = plt.subplots(figsize=(8.4, 4.2))  # as Figure 5: room for the legend beside
    table: list[list[Any]] = []
    for label, points in series:
        steps = [p["step"] for p in points]
        smooth = [p["y_smooth"] for p in points]
        # a line through one point draws nothing (a one-step try: train.max_steps=1)
        dot = {"marker": "o", "markersize": 4} if len(steps) == 1 else {}
        (line,) = ax.plot(steps, smooth, label=label, linewidth=1.6, **dot)
        if spec.smooth > 1 and not spec.band:
            ax.plot(steps, [p["y"] for p in points], color=line.get_color(), alpha=0.25, lw=0.8)
        if spec.band:
            lo = [m - w for m, w in zip(smooth, (p["band_smooth"] for p in points), strict=True)]
            hi = [m + w for m, w in zip(smooth, (p["band_smooth"] for p in points), strict=True)]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        for p in points:
            row = [label, int(p["step"]), p["y"], p["y_smooth"]]
            table.append(row + ([p["band"], p["band_smooth"]] if spec.band else []))
    ax.set_xlabel("training step")
    ax.set_ylabel(spec.ylabel or spec.y)
    if spec.log_x:
        _log_x(ax)
    else:  # whole steps: a short run's axis read 1.0, 1.5, 2.0
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        only = {p["step"] for _, points in series for p in points}
        if len(only) == 1:  # one step: ticks either side of it, not 0.945, 0.960, ...
            ax.set_xlim(min(only) - 1, min(only) + 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # beside the axes, as Figure 5's: inside, it sat on a band or a raw curve's peak
    ax.legend(
        title=_smoothing_words(spec),
        title_fontsize=8,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    header = ["series", "step", spec.y, f"{spec.y}_smooth"]
    header += [spec.band, f"{spec.band}_smooth"] if spec.band else []
    _write_figure_files(fig, png, csv_path, to_csv(header, table))


def _write_figure_files(fig: Any, png: Path, csv_path: Path, csv_text: str) -> None:
    """A figure and the CSV of its points, replaced together (the PNG last): a new CSV
    beside an old figure would not be the data it shows."""
    from dsharp.file_sets import replaced_together
    from dsharp.io import atomic_write_text

    with replaced_together(csv_path, png) as staged:
        atomic_write_text(staged(csv_path), csv_text)
        atomic_save_png(fig, staged(png))


def _smoothing_words(spec: PlotSpec) -> str | None:
    """What the lines and bands of a step figure are, for its legend's title: a trailing
    mean and a +- column are not what a reader assumes of a plain line."""
    words = []
    if spec.smooth > 1:
        words.append(f"mean of the last {spec.smooth} steps")
        if not spec.band:  # then plot_steps draws each step's value faintly behind
            words[-1] += " (faint: each step)"
    if spec.band:
        words.append(f"band: +- {spec.band}")
    return "; ".join(words) or None


def _log_x(ax: Any) -> None:
    """A log x axis labelled 50, 100, 200 rather than 5x10^1, 10^2, 2x10^2; 1 to 5 of each
    decade, or 1, 2 and 5 over a wide axis (60, 70, 80 and 90 ran into 100)."""
    import math

    from matplotlib.ticker import FuncFormatter

    def plain(value: float, _: Any) -> str:
        low, high = ax.get_xlim()
        shown = "12345" if math.log10(high / low) < 1.5 else "125"
        return f"{value:g}" if f"{value:e}"[0] in shown else ""

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.xaxis.set_minor_formatter(FuncFormatter(plain))


def plot_nfe(
    points: Sequence[tuple[str, str, dict[str, Any]]],
    spec: PlotSpec,
    title: str,
    png: Path,
    csv_path: Path,
) -> None:
    """Figure 5: each evaluation (``(series, label, result)``) as a point at its network
    evaluations per image; points of one series joined in NFE order. PNG plus CSV."""
    plt = pyplot()

    by_series: dict[str, list[tuple[float, float, str]]] = {}
    for series, label, result in points:
        nfe, value = finite_number(result.get("nfe_per_image")), eval_metric(result, spec.y)
        if nfe is None:
            raise ValueError(f"{label}: its evaluation has no nfe_per_image")
        if value is None:
            raise ValueError(f"{label}: its evaluation has no metric {spec.y!r}")
        by_series.setdefault(series, []).append((nfe, value, label))
    from dsharp.score_words import evaluation_summary, wrapped

    measured = evaluation_summary([(label, result) for _, label, result in points])
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    table = []
    for series, pts in by_series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=series)
        table += [[series, label, nfe, value] for nfe, value, label in pts]
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel(spec.ylabel or spec.y)
    if spec.log_x is not False:
        _log_x(ax)
    # what every point was measured with: the y axis alone does not say
    ax.set_title(
        title if measured is None else f"{title}\n{wrapped(measured, 6.4, 9)}", fontsize=10
    )
    ax.grid(alpha=0.3)
    # beside the axes: inside, it sat on the points of the low-NFE rows
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _write_figure_files(
        fig, png, csv_path, to_csv(["series", "row", "nfe_per_image", spec.y], table)
    )


def _write_figure(
    loaded: LoadedStudy, done: list[RowPlan], missing: Sequence[str] = ()
) -> list[Path]:
    from dsharp.io import read_jsonl

    study, out = loaded.study, loaded.output_dir
    spec = study.plot
    assert spec is not None  # the schema requires it for figures
    stem = study.name or "figure"
    png, csv_path = out / f"{stem}.png", out / f"{stem}.csv"
    title = study.title or stem
    if missing:  # as the terminal says: the figure alone must not pass for the whole study
        title += f" (partial: {len(missing)} of {len(loaded.rows)} rows not finished)"
    if spec.x == "step":
        curves = [(p.label, read_jsonl(p.run_dir / "metrics.jsonl")) for p in done]
        plot_steps(curves, spec, title, png, csv_path)
    else:
        points = [
            (p.row.series or p.label, p.label, read_row_eval(p.eval_path) or {}) for p in done
        ]
        plot_nfe(points, spec, title, png, csv_path)
    return [png, csv_path]
