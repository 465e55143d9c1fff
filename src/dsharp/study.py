"""Studies: one YAML file that names the runs behind one of the paper's tables or figures
(``dsharp reproduce STUDY.yaml``).

A study points at a base training recipe, lists rows (a label and overrides; ``train:
false`` for the untrained base model and for inference-time methods), says how every row is
scored (``evaluate``, the recipe ``eval`` section's fields) and, for figures, what to plot.
Each row's run lives in ``<output_dir>/<slug(label)>/``; a finished row is reused, an
interrupted one resumes from its newest checkpoint, and a row whose saved recipe differs
from the study's is an error rather than a silent mix of two settings, except where
``dsharp train``'s resume allows it: a larger ``train.max_steps`` trains the row on, other
``eval`` or ``sample`` settings evaluate it again (an untrained row uses no training setting).

The whole study is validated (its keys, every row's resolved recipe, the samplers and
benches) before any model loads. Nothing here imports torch at module level, so validating
a study is as quick as validating a recipe.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dsharp.config import EvalConfig, Recipe
from dsharp.hub import known_home, user_path
from dsharp.recipe_diff import first_difference, saved_recipe_data
from dsharp.recipe_errors import (
    FieldProblem,
    RecipeError,
    _annotation_at,
    _fields_of,
    _reason,
    _suggest,
)
from dsharp.recipe_io import is_study_data, load_recipe, recipe_to_dict
from dsharp.recipe_yaml import _read_yaml, parse_yaml
from dsharp.redaction import shown_setting

if TYPE_CHECKING:
    from dsharp.study_outputs import StudyOutcome

EVAL_FILE = "eval.json"
"""Each evaluated row's result, beside its ``recipe.yaml``."""

PAPER_TABLES = ("table1", "table2", "table3")


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StudyRow(_Strict):
    """One row of a table or one line / point of a figure."""

    label: str = Field(description="Row name in the table or legend; its slug names the folder.")
    base: str | None = Field(
        None,
        description="This row's base recipe (relative to the study file); default: the "
        "study's base.",
    )
    train: bool = Field(
        True,
        description="false: evaluate the base recipe's model without training (the base model, "
        "or an inference-time sample.method).",
    )
    overrides: list[str] = Field(
        default_factory=list, description="Recipe overrides of this row (key.sub=value)."
    )
    series: str | None = Field(
        None,
        description="Figures: the line this row's point belongs to (default: the label), so "
        "rows varying a budget option draw one line per method.",
    )
    paper_row: str | int | None = Field(
        None,
        description="Tables: the paper row to compare with (default: Table 1 by label, and a "
        "label that names no row of Table 1 is an error; Tables 2/3 by an rlhf_sharpening "
        "row's method.n / method.m, and none for other rows).",
    )

    @model_validator(mode="after")
    def _label_has_a_slug(self) -> StudyRow:
        if not slug(self.label):
            raise FieldProblem(("label",), f"{self.label!r} has no letters or digits")
        return self


class PlotSpec(_Strict):
    """What a figure study draws."""

    x: Literal["step", "nfe"] = Field(
        description="'step': training step (from each row's metrics.jsonl); 'nfe': network "
        "evaluations per image (from each row's evaluation)."
    )
    y: str = Field(
        description="x=step: a metrics.jsonl column (loss, reward, ...) that every row's method "
        "logs; x=nfe: an evaluation metric (overall, strict, nfe_per_image, a reward the "
        "evaluation scores, or a paper column such as clip_score that one maps to). Checked "
        "when the study loads."
    )
    band: str | None = Field(
        None, description="x=step: metrics.jsonl column drawn as a +- band (e.g. reward_std)."
    )
    smooth: int = Field(1, ge=1, description="x=step: moving-average window in logged steps.")
    log_x: bool | None = Field(None, description="Logarithmic x axis (default: true for nfe).")
    ylabel: str | None = Field(None, description="Y axis label (default: y).")

    @model_validator(mode="after")
    def _band_needs_steps(self) -> PlotSpec:
        if self.band is not None and self.x != "step":
            raise FieldProblem(("band",), "only used with x: step")
        if self.smooth != 1 and self.x != "step":
            raise FieldProblem(("smooth",), "only used with x: step")
        return self


class Study(_Strict):
    """A whole study file."""

    kind: Literal["table", "figure"] = Field(description="What the study produces.")
    name: str | None = Field(
        None,
        description="Tables: the paper table (table1, table2, table3) to put beside ours; "
        "figures: the output file stem (default: figure).",
    )
    title: str = Field("", description="Title of the table or figure.")
    base: str | None = Field(None, description="Base training recipe, relative to the study file.")
    overrides: list[str] = Field(
        default_factory=list, description="Recipe overrides applied to every row."
    )
    rows: list[StudyRow] = Field(min_length=1, description="The runs.")
    evaluate: EvalConfig | None = Field(
        None,
        description="How every row is scored (the recipe eval section's fields); replaces "
        "each recipe's eval section; default: the recipe's own.",
    )
    plot: PlotSpec | None = Field(None, description="Figures: what to draw.")
    output_dir: str = Field(description="Folder of the rows' runs and the outputs.")

    @field_validator("output_dir")
    @classmethod
    def _known_home(cls, value: str) -> str:
        """A ``~user`` that names no user: refused, not a folder named ``~user`` made here."""
        return known_home(value)

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        if self.kind == "figure" and self.plot is None:
            raise FieldProblem(("plot",), "a figure study needs a plot section")
        if self.kind == "table" and self.plot is not None:
            raise FieldProblem(("plot",), "only used with kind: figure")
        seen: dict[str, str] = {}
        for i, row in enumerate(self.rows):
            if row.base is None and self.base is None:
                raise FieldProblem(("rows", i, "base"), "no base recipe (set base or rows.N.base)")
            key = slug(row.label)
            if key in seen:
                raise FieldProblem(
                    ("rows", i, "label"),
                    f"{row.label!r} names the same folder ({key}) as {seen[key]!r}",
                )
            seen[key] = row.label
            for text in row.overrides:
                if text.partition("=")[0].strip() == "output_dir":
                    raise FieldProblem(
                        ("rows", i, "overrides"), "output_dir is set by the study (output_dir/ROW)"
                    )
            if self.plot is not None and self.plot.x == "step" and not row.train:
                raise FieldProblem(
                    ("rows", i, "train"), "plot.x step draws training metrics: rows must train"
                )
            if row.paper_row is not None and self.paper_table is None:
                raise FieldProblem(("rows", i, "paper_row"), "only used with name: table1|2|3")
        if any(t.partition("=")[0].strip() == "output_dir" for t in self.overrides):
            raise FieldProblem(("overrides",), "output_dir is set by the study (output_dir/ROW)")
        return self

    @property
    def paper_table(self) -> str | None:
        """The paper table beside which this study's rows are shown, if any."""
        return self.name if self.kind == "table" and self.name in PAPER_TABLES else None

    @property
    def needs_eval(self) -> bool:
        """Tables and NFE figures score every row; step figures only read training metrics."""
        return self.kind == "table" or (self.plot is not None and self.plot.x == "nfe")


def slug(label: str) -> str:
    """The folder name of a row: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def is_study_file(path: Path) -> bool:
    """Whether ``path`` holds a study (unreadable files are left for the loader to report)."""
    try:
        return is_study_data(parse_yaml(Path(path).read_text(encoding="utf-8"), str(path)))
    except (OSError, UnicodeDecodeError, RecipeError):
        return False


# --------------------------------------------------------------------------- loading


@dataclass
class RowPlan:
    """One row resolved: its recipe, folder and what a run would do with it."""

    index: int
    row: StudyRow
    recipe: Recipe
    run_dir: Path
    overrides: list[str]
    base: Path
    status: str = ""
    conflict: str | None = None
    evaluated_with: tuple[str, Any, Any] | None = None
    """The first evaluation setting (field, saved, now) that differs from the one the row's
    saved recipe was evaluated with: its eval.json scores other settings."""

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def trained(self) -> bool:
        return self.row.train

    @property
    def eval_path(self) -> Path:
        return self.run_dir / EVAL_FILE


@dataclass
class LoadedStudy:
    """A validated study and its resolved rows."""

    path: Path
    study: Study
    rows: list[RowPlan] = field(default_factory=list)
    common: list[str] = field(default_factory=list)
    """The overrides every row gets (the study's, then its evaluate section)."""
    given: list[str] = field(default_factory=list)
    """The overrides given with the study (``dsharp reproduce STUDY key=value``): every row
    gets them last, after its own."""

    @property
    def output_dir(self) -> Path:
        return user_path(self.study.output_dir)


def _study_error(e: ValidationError, source: str) -> RecipeError:
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        reason = "unknown key" + _suggest(loc[-1], _fields_of(_annotation_at(loc[:-1], Study)))
    elif err["type"] == "literal_error":
        reason = f"expected one of {err.get('ctx', {}).get('expected', '')}, got {err['input']!r}"
    else:
        loc, reason = _reason(err)
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more)"
    return RecipeError(reason, source=source, field=".".join(str(p) for p in loc))


def _json_override(key: str, value: Any) -> str:
    """``key=<value as JSON>``: JSON is YAML, so the recipe loader reads it back unchanged."""
    return f"{key}={json.dumps(value)}"


def _given_output_dir(extra_overrides: Sequence[str], source: str) -> tuple[list[str], str | None]:
    """The overrides given with a study, less an ``output_dir=DIR`` among them, and that
    DIR: it moves the whole study (rows in DIR/ROW, the table or figure in DIR)."""
    from dsharp.recipe_yaml import apply_overrides

    rest, where = [], None
    for text in extra_overrides:
        if text.partition("=")[0].strip() != "output_dir":
            rest.append(text)
            continue
        holder: dict[str, Any] = {}
        apply_overrides(holder, [text], source)
        value = holder["output_dir"]
        if not isinstance(value, str) or not value.strip():
            raise RecipeError(f"override {shown_setting(text)!r}: expected a folder", source=source)
        where = value
    return rest, where


def load_study(path: str | Path, extra_overrides: Sequence[str] = ()) -> LoadedStudy:
    """Read and validate a study and every row's recipe; one-line ``RecipeError`` naming the
    file and field on the first problem. ``extra_overrides`` (given with the study) apply to
    every row last, after the study's, its evaluate section and the row's own, so that
    ``train.max_steps=2`` shortens every row; ``output_dir=DIR`` among them replaces the
    study's output_dir."""
    path = Path(path)
    source = str(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError("expected a mapping at the top level", source=source)
    if "rows" not in data and ("model" in data or "method" in data):
        raise RecipeError(
            "a recipe, not a study (a study has `rows`): run it with dsharp train", source=source
        )
    given, moved_to = _given_output_dir(extra_overrides, source)
    if moved_to is not None:
        data = {**data, "output_dir": moved_to}
    from dsharp.config import _DEFER_REWARD_NAMES, _SKIP_FILE_CHECKS

    try:
        # Paths and reward names inside `evaluate` are checked in each row's recipe.
        context = {_DEFER_REWARD_NAMES: True, _SKIP_FILE_CHECKS: True}
        study = Study.model_validate(data, context=context)
    except ValidationError as e:
        raise _study_error(e, source) from None
    out = user_path(study.output_dir)
    common = list(study.overrides)
    if study.evaluate is not None:
        section = study.evaluate.model_dump(mode="json", exclude_unset=True)
        common.append(_json_override("eval", section))
    loaded = LoadedStudy(path, study, common=common, given=given)
    for i, row in enumerate(study.rows):
        where = f"rows.{i} ({row.label})"
        base = Path(os.path.normpath(path.parent / (row.base or study.base or "")))
        if not base.is_file():
            field_name = f"rows.{i}.base" if row.base else "base"
            raise RecipeError(f"base recipe not found: {base}", source=source, field=field_name)
        if is_study_file(base):
            raise RecipeError(f"{base} is a study, not a recipe", source=source, field="base")
        run_dir = out / slug(row.label)
        overrides = [*common, *row.overrides, *given]
        overrides.append(_json_override("output_dir", str(run_dir)))
        try:
            recipe = load_recipe(base, overrides)
        except RecipeError as e:
            raise RecipeError(str(e), source=source, field=where) from None
        plan = RowPlan(i, row, recipe, run_dir, list(row.overrides), base)
        _check_row(loaded, plan, source, where)
        loaded.rows.append(plan)
    if study.plot is not None:
        _check_plot(study.plot, loaded.rows, source)
    return loaded


NFE_RESULT_KEYS = ("overall", "strict", "nfe_per_image")
"""What ``plot.y`` may name of any evaluation (with x: nfe), beside its metrics."""


def evaluation_metrics(recipe: Recipe) -> list[str]:
    """What an evaluation of ``recipe`` reports that a figure's ``plot.y`` (x: nfe) can
    read: overall, strict, nfe_per_image, each reward's key, and the paper columns those
    rewards map to (clip_score from clip)."""
    from dsharp.bench.paper import METRIC_SOURCES
    from dsharp.posttrain import eval_specs
    from dsharp.rewards.combine import _component_keys

    bench = None
    if recipe.eval.bench:
        from dsharp.evaluate import get_bench

        bench = get_bench(recipe.eval.bench)
    keys = _component_keys(eval_specs(recipe, bench))
    columns = [c for c, sources in METRIC_SOURCES.items() if any(k in keys for k in sources)]
    return list(dict.fromkeys([*NFE_RESULT_KEYS, *keys, *columns]))


def _check_plot(spec: PlotSpec, rows: Sequence[RowPlan], source: str) -> None:
    """A ``plot.y`` (or ``band``) that no row would have fails here, not after every row
    has trained and been evaluated: x step, a ``metrics.jsonl`` column of each row's
    method; x nfe, a metric of each row's evaluation."""
    from dsharp.methods.registry import step_columns

    for plan in rows:
        if spec.x == "step":
            known = list(step_columns(plan.recipe.method.name))
            what = f"a metrics.jsonl column of {plan.recipe.method.name} (row {plan.label!r})"
            names = [("y", spec.y), ("band", spec.band)]
        else:
            known = evaluation_metrics(plan.recipe)
            what = f"a metric of the evaluation of row {plan.label!r}"
            names = [("y", spec.y)]
        for key, name in names:
            if name is not None and name not in known:
                raise RecipeError(
                    f"{name!r} is not {what}{_suggest(name, known)} (known: {', '.join(known)})",
                    source=source,
                    field=f"plot.{key}",
                )


def _check_row(loaded: LoadedStudy, plan: RowPlan, source: str, where: str) -> None:
    """What would fail only after models load: the bench, the sampler and its verifier, the
    paper row."""
    study, recipe = loaded.study, plan.recipe
    try:
        if study.needs_eval:
            ev = recipe.eval
            if not (ev.bench or ev.prompts or ev.prompts_file):
                raise ValueError(
                    "nothing to evaluate on: set evaluate.bench or evaluate.prompts(_file) "
                    "(or the recipe's eval section)"
                )
            if ev.bench:
                from dsharp.evaluate import get_bench

                get_bench(ev.bench)
            from dsharp.posttrain import eval_settings

            eval_settings(recipe).validate()
        from dsharp.preflight import check_before_loading

        check_before_loading(recipe, training=plan.trained, evaluation=study.needs_eval)
        if study.paper_table is not None:
            paper_row_of(study.paper_table, plan)
    except RecipeError as e:  # located inside the row's recipe
        raise RecipeError(f"{e.field}: {e.reason}", source=source, field=where) from None
    except ValueError as e:
        raise RecipeError(str(e), source=source, field=where) from None


def paper_row_of(table: str, plan: RowPlan) -> str | int | None:
    """The paper row ``plan`` is compared with, or None (Table 1: its ``paper_row``, else the
    row its label names, and a label that names none is an error rather than a silent
    comparison with SDXL; Tables 2/3: untrained rows and rows of a method other than RLHF
    sharpening, whose n and m the tables vary, are left out without ``paper_row``)."""
    from dsharp.bench.paper import TABLE_METHOD, _row_key, paper_table

    _, rows = paper_table(table)
    known = [r[0] for r in rows]
    wanted: Any = plan.row.paper_row
    if wanted is None and table == "table1":
        wanted = _row_key(table, plan.label)
        if wanted not in known:
            raise ValueError(
                f"no row of {table} is named {plan.label!r} (rows: {', '.join(known)}): label "
                "the row as one, or name the one to compare with in its paper_row"
            )
    varied = plan.recipe.method.name == TABLE_METHOD  # the method whose n and m they vary
    if wanted is None and table in ("table2", "table3") and plan.trained and varied:
        wanted = plan.recipe.method.n if table == "table2" else plan.recipe.method.m
    if wanted is None:
        return None
    if str(wanted) not in known:
        raise ValueError(f"paper row {wanted!r} not in {table} (rows: {', '.join(known)})")
    return wanted


# --------------------------------------------------------------------------- planning


def read_row_eval(path: Path) -> dict[str, Any] | None:
    """A row's ``eval.json``, or None when it is missing or not a JSON object (the row then
    counts as not evaluated)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _final_checkpoint(plan: RowPlan) -> Path | None:
    from dsharp.checkpoints import checkpoint_dir

    final = checkpoint_dir(plan.run_dir, plan.recipe.train.max_steps)
    return final if (final / "trainer_state.json").exists() else None


def _scores(result: dict[str, Any], checkpoint: Path) -> bool:
    """Whether a row's evaluation scored ``checkpoint``, by its step folder's name (the path
    may be written relative to another folder); one that records none is taken at its word."""
    recorded = result.get("checkpoint")
    return recorded is None or Path(str(recorded)).name == checkpoint.name


def _latest_step(plan: RowPlan) -> int | None:
    from dsharp.checkpoints import list_checkpoints

    found = list_checkpoints(plan.run_dir)
    return int(found[-1].name.split("-")[1]) if found else None


#: What only scores a row's model, never trains it: a change there evaluates the row again.
EVALUATION_FIELDS = ("eval", "sample")
#: For an untrained row, what its evaluation is also made of: the verifier of an
#: inference-time sampler (or the evaluation's rewards) and the resolution it samples at.
UNTRAINED_EVALUATION_FIELDS = (*EVALUATION_FIELDS, "rewards", "train.height", "train.width")
#: The sections an untrained row never uses (it trains nothing).
TRAINING_ONLY = ("method", "data", "train")


def _only(data: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The dotted ``fields`` of ``data`` (those it has), as nested data."""
    out: dict[str, Any] = {}
    for dotted in fields:
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            holder = out
            for key in parents:
                holder = holder.setdefault(key, {})
            holder[last] = node[last]
    return out


def _saved_differences(
    plan: RowPlan, saved: dict[str, Any], now: dict[str, Any]
) -> tuple[str | None, tuple[str, Any, Any] | None]:
    """Where a row's saved recipe and the study's differ: (why the folder holds another
    row's run, if it does; else the first evaluation setting that changed, if one did).

    Like ``dsharp train``'s resume, how long a row trains and how it checkpoints, logs,
    evaluates and samples may change (:data:`dsharp.resume.RESUMABLE_CHANGES`): a larger
    ``train.max_steps`` trains the row on from its newest checkpoint, and other evaluation
    settings score it again. An untrained row uses none of the training sections.
    """
    from dsharp.resume import RESUMABLE_CHANGES

    fields = EVALUATION_FIELDS if plan.trained else UNTRAINED_EVALUATION_FIELDS
    ignore = [*RESUMABLE_CHANGES, *fields, *(() if plan.trained else TRAINING_ONLY)]
    found = first_difference(saved, now, ignore=ignore)
    if found is not None:
        diff, was, new = found
        return f"differs from the study's recipe at {diff} (saved {was!r}, now {new!r})", None
    return None, first_difference(_only(saved, fields), _only(now, fields))


def plan_row(loaded: LoadedStudy, plan: RowPlan) -> RowPlan:
    """Fill in ``status`` (reuse / evaluate / evaluate again / train / resume from step N)
    and ``conflict`` (why the folder holds another run) from what the row's folder holds."""
    plan.conflict = None
    plan.evaluated_with = None
    saved_path = plan.run_dir / "recipe.yaml"
    latest = _latest_step(plan)
    fix = f"delete {plan.run_dir} or change output_dir"
    if saved_path.exists():
        saved = saved_recipe_data(saved_path)
        from dsharp.methods.factory import with_method_defaults

        now = recipe_to_dict(with_method_defaults(plan.recipe))
        if not isinstance(saved, dict):
            plan.conflict = f"{saved_path} is unreadable: {fix}"
        else:
            why, plan.evaluated_with = _saved_differences(plan, saved, now)
            if why is not None:
                plan.conflict = f"{saved_path} {why}: {fix}"
    elif latest is not None:
        plan.conflict = f"{plan.run_dir} holds checkpoints but no recipe.yaml: {fix}"
    max_steps = plan.recipe.train.max_steps
    if plan.conflict is None and plan.trained and latest is not None and latest > max_steps:
        plan.conflict = (
            f"{plan.run_dir} trained to step {latest}, past the study's train.max_steps "
            f"{max_steps}: raise it to at least {latest}, or {fix}"
        )
    result = read_row_eval(plan.eval_path) if plan.eval_path.exists() else None
    if plan.conflict is None and result is not None and result.get("trained") != plan.trained:
        was = "a trained" if result.get("trained") else "an untrained"
        plan.conflict = f"{plan.eval_path} is the evaluation of {was} row: {fix}"
    if plan.conflict is None and not plan.trained and latest is not None:
        plan.conflict = f"{plan.run_dir} holds a trained run but the row has train: false: {fix}"
    needs_eval = loaded.study.needs_eval
    final = _final_checkpoint(plan) if plan.trained else None
    if plan.trained and final is None:
        plan.status = f"resume from step {latest}" if latest is not None else "train"
    elif needs_eval and result is None:
        plan.status = "evaluate"
    elif needs_eval and final is not None and not _scores(result, final):
        plan.status = f"evaluate again (its eval.json scored {result.get('checkpoint')})"
    elif needs_eval and plan.evaluated_with is not None:
        diff, was, new = plan.evaluated_with
        plan.status = f"evaluate again ({diff}: {was!r} -> {new!r})"
    else:
        plan.status = "reuse"
    return plan


def plan_study(loaded: LoadedStudy) -> list[RowPlan]:
    """Every row's status and conflict, from the folders as they are now."""
    return [plan_row(loaded, plan) for plan in loaded.rows]


def select_rows(loaded: LoadedStudy, only: Sequence[str] | None) -> list[RowPlan]:
    """The rows ``--only`` names (labels, or comma-separated labels); all rows without it."""
    if not only:
        return list(loaded.rows)
    wanted = [part.strip() for item in only for part in item.split(",") if part.strip()]
    labels = {p.label: p for p in loaded.rows}
    if not wanted:  # `--only ""` selected nothing, and ran nothing, without a word
        raise RecipeError(
            f"no row label given (rows: {', '.join(labels)})",
            source=str(loaded.path),
            field="--only",
        )
    by_slug = {slug(p.label): p for p in loaded.rows}
    picked = []
    for name in wanted:
        plan = labels.get(name) or by_slug.get(slug(name))
        if plan is None:
            raise RecipeError(
                f"no row labelled {name!r} (rows: {', '.join(labels)})",
                source=str(loaded.path),
                field="--only",
            )
        if plan not in picked:
            picked.append(plan)
    return picked


# --------------------------------------------------------------------------- running


class StudyConflict(ValueError):
    """A row's folder holds a run of other settings."""


def _save_row_recipe(plan: RowPlan) -> None:
    """The row's recipe.yaml as the study now resolves it (as ``train`` saves it: the method's
    own defaults filled in, the model folder absolute), before its evaluation is written."""
    from dsharp.methods.factory import with_method_defaults
    from dsharp.model_names import absolute_model_source
    from dsharp.recipe_io import save_recipe

    recipe = with_method_defaults(plan.recipe)
    recipe.model.pretrained = absolute_model_source(recipe.model.pretrained)
    save_recipe(recipe, plan.run_dir / "recipe.yaml")


def _train_row(plan: RowPlan, progress: bool) -> None:
    from dsharp import engine
    from dsharp.launch import launcher_rank_zero

    recipe = plan.recipe.model_copy(deep=True)
    if plan.status.startswith("resume"):
        recipe.train.resume = "latest"
    # An evaluation of the shorter run goes first: were training stopped after its final
    # checkpoint but before the row is evaluated, that file must not pass for this run's.
    if launcher_rank_zero():
        plan.eval_path.unlink(missing_ok=True)
    engine.train(recipe, progress=progress)


def _evaluate_row(plan: RowPlan, progress: bool) -> dict[str, Any]:
    """Score the row's model as its recipe's eval section says; write eval.json atomically."""
    from dsharp.builders import build_model, load_run_model
    from dsharp.devices import pick_device
    from dsharp.io import atomic_write_json
    from dsharp.posttrain import evaluate_recipe

    device = pick_device("auto")
    # An evaluation of other settings goes first: were this one stopped after the recipe
    # below is saved, the row must read as not evaluated, not as evaluated with these.
    plan.eval_path.unlink(missing_ok=True)
    _save_row_recipe(plan)  # with the settings this evaluation uses
    checkpoint = None
    if plan.trained:
        checkpoint = _final_checkpoint(plan)
        model = load_run_model(checkpoint, device)[0]
    else:
        model = build_model(plan.recipe.model, device)
    model.unet.eval()
    result = evaluate_recipe(
        plan.recipe, model, progress=progress, progress_label=f"eval {plan.label}"
    )
    doc = {
        "label": plan.label,
        "row": slug(plan.label),
        "trained": plan.trained,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "model": str(checkpoint) if checkpoint else plan.recipe.model.pretrained,
        **result,
    }
    atomic_write_json(plan.eval_path, doc)
    return doc


def _agree_on_plans(plans: Sequence[RowPlan]) -> None:
    """Under a launcher, every process takes the first one's status and conflict of each
    row, so that all train the same rows together (a row one process took for finished
    would leave the others waiting in its training). The exchange also holds every process
    until all have planned, so none plans from a folder another has started writing."""
    from dsharp.launch import broadcast_from_main

    agreed = broadcast_from_main([(p.status, p.conflict) for p in plans])
    for plan, (status, conflict) in zip(plans, agreed, strict=True):
        plan.status, plan.conflict = status, conflict


def run_study(
    loaded: LoadedStudy,
    only: Sequence[str] | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> StudyOutcome | None:
    """Train and evaluate the rows that need it (all, or ``only``), then write the table or
    figure from every row that has finished. Raises ``StudyConflict`` before running
    anything if a row's folder holds a run of other settings.

    Under a launcher of several processes the rows train data-parallel, as ``dsharp train``
    does, one after another; then the first process alone evaluates them and writes the
    table or figure, while the others return None (an evaluation is not split between
    processes, and the others leave rather than wait on it)."""
    from dsharp.launch import launch_size, launcher_rank_zero, leave_process_group

    plans = plan_study(loaded)
    several = launch_size() > 1
    if several:
        _agree_on_plans(plans)
    main = launcher_rank_zero()
    selected = select_rows(loaded, only)
    for plan in plans:
        if plan.conflict:
            raise StudyConflict(f"{loaded.path}: rows.{plan.index} ({plan.label}): {plan.conflict}")
    to_evaluate = []
    for plan in selected:
        if plan.status == "reuse":
            continue
        trains = plan.trained and not plan.status.startswith("evaluate")
        if main and (trains or not several):
            echo(f"[{plan.label}] {plan.status} -> {plan.run_dir}")
        if trains:
            _train_row(plan, progress)
        if several:  # evaluated below, once every row has trained
            to_evaluate.append((plan, "evaluate" if trains else plan.status))
            continue
        if loaded.study.needs_eval:
            _evaluate_row(plan, progress)
        plan_row(loaded, plan)
    if several:  # every row has trained: none of what follows is collective
        leave_process_group()
    if not main:
        return None
    for plan, status in to_evaluate:
        if loaded.study.needs_eval:
            echo(f"[{plan.label}] {status} -> {plan.run_dir}")
            _evaluate_row(plan, progress)
        plan_row(loaded, plan)
    from dsharp.study_outputs import write_outputs

    return write_outputs(loaded, echo=echo)
