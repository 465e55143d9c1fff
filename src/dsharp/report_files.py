"""What a run's post-training report needs to be known without torch (:mod:`dsharp.posttrain`
loads it): whether a recipe asks for a report, and the file the report writes last."""

from __future__ import annotations

from typing import Any

#: The report's file written last (after eval-base.json, the grid, the curves and report.md),
#: with the step it scored: the report is whole where it is there.
FINAL_JSON = "eval-final.json"


def wants_report(recipe: Any) -> bool:
    """Whether training ends with an evaluation report: only when ``eval`` names something to
    evaluate on (a bench or prompts)."""
    ev = recipe.eval
    return bool(ev.bench or ev.prompts or ev.prompts_file)
