"""What goes wrong in shapes-world images? (docs/dsharp-mini-notes.md reports the numbers)

Reads the images ``dsharp eval --bench shapes --prompts FILE --seeds N --images DIR`` kept
(``00000-seed0.png``, ... in prompt-major order) and, per category and per kind of prompt
(``held-out``: it names a colour-shape pair pretraining never showed dsharp-mini; ``seen``),
says what became of each object group the prompt names:

- ``exact``: an object of the named colour and shape is there;
- ``other colour``: the shape is there only in the colour of *another* group of the prompt
  (the colours were bound to the wrong shapes);
- ``third colour``: the shape is there only in a colour the prompt does not name;
- ``no shape``: no object of that shape (a wrong or unrecognised shape, or nothing).

and, for prompts with a relation, how often the relation holds when both of its objects are
there (``relation | both``). No model is loaded: the verifier reads the PNGs.

    python scripts/shapes_failures.py --prompts FILE --seeds 2 DIR [DIR ...]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from dsharp.commands.errors import require_counts, run_script
from dsharp.data import read_prompt_file
from dsharp.evaluate import get_bench
from dsharp.shapes.grammar import Constraints, category_of, parse
from dsharp.shapes.prompts import HELD_OUT_PAIRS
from dsharp.shapes.verifier import verify_batch
from dsharp.sheets import SHEET_PNG

OUTCOMES = ("exact", "other colour", "third colour", "no shape")


def group_outcome(constraints: Constraints, index: int, objects: list[dict]) -> str:
    """What became of group ``index`` of the prompt among the detected ``objects``."""
    group = constraints.groups[index]
    colours = {o["colour"] for o in objects if o["shape"] == group.shape}
    if group.colour in colours:
        return "exact"
    if not colours:
        return "no shape"
    others = {g.colour for i, g in enumerate(constraints.groups) if i != index}
    return "other colour" if colours & others else "third colour"


def summarise(folder: Path, prompts: list[str], seeds: int) -> dict[tuple[str, str], Counter]:
    """Counters per ``(category, held-out|seen)``: group outcomes (also split by whether the
    group itself is a held-out pair), relations with both objects present and met, scores."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder")
    files = sorted(f for f in folder.glob("*.png") if f.name != SHEET_PNG)  # not the sheet
    if len(files) != len(prompts) * seeds:
        raise ValueError(
            f"{folder}: {len(files)} images, expected {len(prompts)} prompts x {seeds} seeds"
        )
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    # the shapes bench's own held-out / seen labels, so the two always agree
    pairs_of = get_bench("shapes").groupings["pairs"]
    per_image = [prompts[i // seeds] for i in range(len(files))]
    scores, infos = verify_batch(images, per_image)
    stats: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for prompt, score, info in zip(per_image, scores.tolist(), infos, strict=True):
        constraints = parse(prompt)
        counter = stats[(category_of(constraints), pairs_of(prompt))]
        counter["images"] += 1
        counter["score"] += score
        outcomes = [
            group_outcome(constraints, index, info["objects"])
            for index in range(len(constraints.groups))
        ]
        for group, outcome in zip(constraints.groups, outcomes, strict=True):
            counter[outcome] += 1
            counter["groups"] += 1
            if (group.colour, group.shape) in HELD_OUT_PAIRS:
                counter[f"held {outcome}"] += 1
                counter["held groups"] += 1
        checked = [c for c in info["constraints"] if c["kind"] == "relation"]
        for relation, result in zip(constraints.relations, checked, strict=True):
            both = outcomes[relation.left] == outcomes[relation.right] == "exact"
            counter["relations both"] += both
            counter["relations met"] += result["ok"]
    return stats


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="image folders of dsharp eval")
    parser.add_argument("--prompts", type=Path, required=True, help="the eval's prompt file")
    parser.add_argument("--seeds", type=int, default=2, help="the eval's --seeds")
    args = parser.parse_args()
    require_counts({"--seeds": args.seeds})
    prompts = read_prompt_file(args.prompts)
    head = "category   prompts   images  score " + " ".join(f"{o:>12}" for o in OUTCOMES)
    head += "  relation|both"
    for folder in args.folders:
        stats = summarise(folder, prompts, args.seeds)
        print(f"== {folder}  (group outcomes as shares of the groups named)")
        print(head)
        for (category, kind), c in sorted(stats.items()):
            shares = " ".join(f"{_share(c[o], c['groups']):>12}" for o in OUTCOMES)
            relation = _share(c["relations met"], c["relations both"])
            print(
                f"{category:10s} {kind:9s} {c['images']:6d} {c['score'] / c['images']:6.3f} "
                f"{shares}  {relation:>13}"
            )
        held = Counter()
        for (category, _), c in stats.items():
            if category in ("single", "counting"):
                continue
            for outcome in OUTCOMES:
                held[outcome] += c[f"held {outcome}"]
            held["groups"] += c["held groups"]
        counts = ", ".join(f"{o} {held[o]}" for o in OUTCOMES)
        print(f"held-out pairs in prompts of two or more groups: {counts} (of {held['groups']})")


if __name__ == "__main__":
    run_script(main)
