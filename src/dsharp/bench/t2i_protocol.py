"""How a T2I-CompBench evaluation departs from the benchmark's protocol, said beside the
paper's numbers (``dsharp compare --against paper``).

The paper's T2I-CompBench columns follow the benchmark: the ``val`` split, every prompt of a
category (300), 10 images per prompt, the benchmark's evaluators. A quick look (``--limit 2
--images-per-prompt 1``), other prompt files, or dsharp's stand-in evaluators (OWLv2 for
UniDet) still print a number and a delta beside them; these notes say what differs, so that
the delta is not read as the model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROTOCOL_SPLIT = "val"
PROTOCOL_IMAGES_PER_PROMPT = 10
#: Where a merged result (:func:`dsharp.bench.paper.merge_results`) keeps what its
#: T2I-CompBench evaluation said of itself, which the merge leaves out otherwise.
PROTOCOL_KEY = "t2i_protocol"
T2I_BENCH = "t2i-compbench"


def protocol_of(result: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{"gaps": [...], "substitutions": [...]}`` of an evaluation (empty lists for one that
    is not T2I-CompBench's), or what a merged result kept of it."""
    kept = result.get(PROTOCOL_KEY)
    if isinstance(kept, Mapping):
        return {"gaps": list(kept.get("gaps") or []), "substitutions": _texts(kept)}
    if result.get("bench") != T2I_BENCH:
        return {"gaps": [], "substitutions": []}
    return {"gaps": protocol_gaps(result), "substitutions": _texts(result)}


def merge_protocols(protocols: Sequence[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """The gaps and substitutions of several evaluations whose columns one merged result
    shows, each said once: none of them may be left unsaid because another came later."""
    return {
        key: list(dict.fromkeys(text for p in protocols for text in p.get(key) or []))
        for key in ("gaps", "substitutions")
    }


def _texts(record: Mapping[str, Any]) -> list[str]:
    value = record.get("substitutions")
    return [str(v) for v in value] if isinstance(value, list) else []


def protocol_gaps(result: Mapping[str, Any]) -> list[str]:
    """How a T2I-CompBench result was measured otherwise than the benchmark's protocol (the
    split, prompts per category, images per prompt, prompt files), in words; empty when it
    was not, or does not say."""
    gaps = []
    split = result.get("split")
    if isinstance(split, str) and split != PROTOCOL_SPLIT:
        gaps.append(f"the {split} split, not {PROTOCOL_SPLIT}")
    files = (result.get("data") or {}).get("files") or {}
    per_category = result.get("t2i_compbench") or {}
    fewer = []
    for category, stats in per_category.items():
        total = (files.get(f"{category}_{split}.txt") or {}).get("n")
        used = stats.get("n_prompts") if isinstance(stats, Mapping) else None
        if isinstance(total, int) and isinstance(used, int) and used < total:
            fewer.append(f"{category} {used} of {total}")
    if fewer:
        gaps.append(f"prompts per category {', '.join(fewer)} (--limit {result.get('limit')})")
    per_prompt = result.get("images_per_prompt")
    if isinstance(per_prompt, int) and per_prompt != PROTOCOL_IMAGES_PER_PROMPT:
        images = "image" if per_prompt == 1 else "images"
        gaps.append(f"{per_prompt} {images} per prompt, not {PROTOCOL_IMAGES_PER_PROMPT}")
    other = [name for name, f in files.items() if (f or {}).get("matches_snapshot") is False]
    if other:
        gaps.append(f"prompt files other than the pinned snapshot's ({', '.join(other)})")
    return gaps


def protocol_notes(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """One line per result whose T2I-CompBench columns were measured otherwise than the
    paper's, and one per set of evaluator substitutions (shared by the results it names);
    none where the table has no T2I-CompBench column (``columns``: the paper table's)."""
    if not any(str(c).startswith("t2i_") for c in columns):
        return []
    notes = []
    substituted: dict[str, list[str]] = {}
    for label, result in results.items():
        protocol = protocol_of(result)
        if protocol["gaps"]:
            notes.append(
                f"{label}: its T2I-CompBench columns were measured with "
                f"{'; '.join(protocol['gaps'])}; the paper's follow the benchmark "
                f"({PROTOCOL_SPLIT} split, every prompt, {PROTOCOL_IMAGES_PER_PROMPT} images "
                "per prompt), so its delta is not the model's alone"
            )
        for text in protocol["substitutions"]:
            substituted.setdefault(text, []).append(label)
    for text, labels in substituted.items():
        notes.append(f"{', '.join(labels)}: T2I-CompBench scored otherwise than the paper: {text}")
    return notes
