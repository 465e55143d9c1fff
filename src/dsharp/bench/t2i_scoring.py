"""T2I-CompBench scoring per category, as the benchmark defines it.

* color, shape, texture: BLIP-VQA (the ``compositional`` reward): one ``"{noun phrase}?"``
  question per noun phrase (at most 8), image score = product of P(yes); BLIP at 480 px as
  upstream.
* spatial: an open-vocabulary detector (OWLv2, :mod:`dsharp.bench.detector`) in place of
  UniDet, with the benchmark's position rule (:mod:`dsharp.bench.spatial`).
* non_spatial: CLIP ViT-B/32 (OpenAI weights) cosine of image and prompt.
* complex ("3-in-1"): the mean of BLIP-VQA and, by the prompt's subset list,
  ``complex_<split>_spatial`` -> BLIP + spatial; ``complex_<split>_action`` -> BLIP + CLIP;
  otherwise (``complex_<split>_spatialaction``, and any prompt in no list, as upstream) all
  three. For complex, CLIP sees the prompt without its adjectives (upstream drops spaCy ADJ
  tokens; without spaCy, the word list of :mod:`dsharp.bench.words`), and the spatial objects
  are the nouns around the relation phrase.

Evaluator models are options (hub ids or local folders), see :class:`EvaluatorOptions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dsharp.bench.detector import DEFAULT_DETECTOR, DEFAULT_QUERY
from dsharp.bench.spatial import find_relation, image_score, relation_objects
from dsharp.bench.t2i_data import normalize
from dsharp.bench.words import drop_adjectives
from dsharp.rewards.base import RewardImages

ATTRIBUTE_CATEGORIES = ("color", "shape", "texture")


@dataclass
class EvaluatorOptions:
    """Which evaluator models score T2I-CompBench, and how. Keys of ``evaluator_options``."""

    blip_model: str = "Salesforce/blip-vqa-capfilt-large"
    blip_processor: str | None = None
    blip_image_size: int | None = 480
    max_phrases: int = 8
    noun_phrases: str = "auto"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    detector_model: str = DEFAULT_DETECTOR
    detector_processor: str | None = None
    detector_threshold: float = 0.1
    detector_query: str = DEFAULT_QUERY
    upstream_on_top_of: bool = False
    device: str = "auto"

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> EvaluatorOptions:
        """Options from a dict; an unknown key is an error listing the accepted ones."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"t2i-compbench evaluator option(s) {', '.join(unknown)} unknown "
                f"(accepted: {', '.join(sorted(known))})"
            )
        out = cls(**options)
        if not isinstance(out.upstream_on_top_of, bool):
            raise ValueError(
                "t2i-compbench evaluator option 'upstream_on_top_of' must be true or false, "
                f"got {out.upstream_on_top_of!r}"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parts_of_complex(prompt: str, subsets: dict[str, set[str]]) -> tuple[str, ...]:
    """Which scores the 3-in-1 average of a complex prompt takes (see the module docstring)."""
    key = normalize(prompt)
    if key in subsets.get("spatial", set()):
        return ("blip", "spatial")
    if key in subsets.get("action", set()):
        return ("blip", "clip")
    return ("blip", "spatial", "clip")


class T2IScorer:
    """Scores generated images per category; evaluator models are built on first use."""

    def __init__(self, options: EvaluatorOptions):
        from dsharp.rewards.noun_phrases import resolve_method

        self.options = options
        self.method = resolve_method(options.noun_phrases)

    # ---------------------------------------------------------------- evaluators

    def prepare(self, categories: Sequence[str]) -> None:
        """Build the evaluators ``categories`` need now, so that a bad model option fails
        before any image is generated."""
        cats = set(categories)
        if cats & {*ATTRIBUTE_CATEGORIES, "complex"}:
            _ = self.blip
        if cats & {"non_spatial", "complex"}:
            _ = self.clip
        if cats & {"spatial", "complex"}:
            _ = self.detector

    @staticmethod
    def _build(what: str, build: Any) -> Any:
        """``build()``, with errors saying which evaluator (and so which options) failed."""
        from dsharp.rewards.base import RewardError

        try:
            return build()
        except (RewardError, ValueError) as e:
            raise type(e)(f"t2i-compbench {what} evaluator: {e}") from e

    @cached_property
    def blip(self) -> Any:
        from dsharp.rewards.compositional import build_compositional_reward

        o = self.options
        return self._build(
            "BLIP-VQA (blip_* options)",
            lambda: build_compositional_reward(
                model=o.blip_model,
                processor=o.blip_processor,
                noun_phrases=self.method,
                max_phrases=o.max_phrases,
                image_size=o.blip_image_size,
                device=o.device,
            ),
        )

    @cached_property
    def clip(self) -> Any:
        from dsharp.rewards.clip import build_clip_reward

        o = self.options
        return self._build(
            "CLIP (clip_* options)",
            lambda: build_clip_reward(
                model=o.clip_model, pretrained=o.clip_pretrained, scale=1.0, device=o.device
            ),
        )

    @cached_property
    def detector(self) -> Any:
        from dsharp.bench.detector import build_detector

        o = self.options
        return self._build(
            "detector",
            lambda: build_detector(
                model=o.detector_model,
                processor=o.detector_processor,
                threshold=o.detector_threshold,
                query_template=o.detector_query,
                device=o.device,
            ),
        )

    # ---------------------------------------------------------------- scores

    def blip_scores(self, images: RewardImages, prompts: Sequence[str]) -> list[float]:
        scores, _ = self.blip(images, list(prompts), [{} for _ in prompts])
        return [float(s) for s in scores.cpu()]

    def clip_scores(self, images: RewardImages, texts: Sequence[str]) -> list[float]:
        scores, _ = self.clip(images, list(texts), [{} for _ in texts])
        return [float(s) for s in scores.detach().cpu()]

    def clip_text(self, prompt: str) -> str:
        """The complex category's CLIP text: the prompt without adjectives."""
        if self.method == "spacy":
            from dsharp.rewards.noun_phrases import _spacy_pipeline

            return " ".join(t.text for t in _spacy_pipeline()(prompt) if t.pos_ != "ADJ")
        return drop_adjectives(prompt)

    def spatial_scores(
        self, images: RewardImages, prompts: Sequence[str]
    ) -> tuple[list[float], list[dict[str, Any]]]:
        """Spatial score of each image, and what was found (relation, objects, detections)."""
        height, width = images.tensor.shape[-2:]
        relations = [find_relation(p) for p in prompts]
        objects = [
            relation_objects(p, r, self.method) if r is not None else None
            for p, r in zip(prompts, relations, strict=True)
        ]
        wanted = [i for i, o in enumerate(objects) if o is not None]
        found: dict[int, list] = {}
        if wanted:
            subset = RewardImages(images.tensor[wanted])
            boxes = self.detector.best_boxes(subset, [list(objects[i]) for i in wanted])
            found = dict(zip(wanted, boxes, strict=True))
        scores, details = [], []
        for i, relation in enumerate(relations):
            first, second = found.get(i, [None, None])
            score, position = image_score(
                relation,
                first,
                second,
                width,
                height,
                upstream_on_top_of=self.options.upstream_on_top_of,
            )
            scores.append(score)
            details.append(
                {
                    "relation": relation.phrase if relation else None,
                    "objects": list(objects[i]) if objects[i] else None,
                    "detected": [d.score if d else None for d in (first, second)],
                    "position": position,
                }
            )
        return scores, details

    def score(
        self,
        category: str,
        images: RewardImages,
        prompts: Sequence[str],
        subsets: dict[str, set[str]] | None = None,
    ) -> tuple[list[float], dict[str, list[float]], list[dict[str, Any]]]:
        """``(scores, parts, details)`` for images of ``category``; ``parts`` holds the
        component scores (``blip``, ``spatial``, ``clip``; NaN where a part does not apply)."""
        n = len(prompts)
        if category in ATTRIBUTE_CATEGORIES:
            scores = self.blip_scores(images, prompts)
            return scores, {"blip": scores}, [{} for _ in prompts]
        if category == "non_spatial":
            scores = self.clip_scores(images, prompts)
            return scores, {"clip": scores}, [{} for _ in prompts]
        if category == "spatial":
            scores, details = self.spatial_scores(images, prompts)
            return scores, {"spatial": scores}, details
        if category != "complex":
            raise ValueError(f"unknown T2I-CompBench category {category!r}")
        which = [parts_of_complex(p, subsets or {}) for p in prompts]
        nan = float("nan")
        parts: dict[str, list[float]] = {
            "blip": self.blip_scores(images, prompts),
            "spatial": [nan] * n,
            "clip": [nan] * n,
        }
        details: list[dict[str, Any]] = [{"parts": list(w)} for w in which]
        spatial_idx = [i for i, w in enumerate(which) if "spatial" in w]
        if spatial_idx:
            sub = RewardImages(images.tensor[spatial_idx])
            values, info = self.spatial_scores(sub, [prompts[i] for i in spatial_idx])
            for i, v, d in zip(spatial_idx, values, info, strict=True):
                parts["spatial"][i] = v
                details[i]["spatial"] = d
        clip_idx = [i for i, w in enumerate(which) if "clip" in w]
        if clip_idx:
            sub = RewardImages(images.tensor[clip_idx])
            values = self.clip_scores(sub, [self.clip_text(prompts[i]) for i in clip_idx])
            for i, v in zip(clip_idx, values, strict=True):
                parts["clip"][i] = v
        scores = [sum(parts[k][i] for k in w) / len(w) for i, w in enumerate(which)]
        return scores, parts, details


def describe_evaluators(
    options: EvaluatorOptions, categories: Sequence[str], method: str
) -> tuple[dict[str, Any], list[str]]:
    """The evaluator models the categories use, and the substitutions to state."""
    evaluators: dict[str, Any] = {}
    notes: list[str] = []
    cats = set(categories)
    if cats & {"color", "shape", "texture", "complex"}:
        evaluators["blip_vqa"] = {
            "model": options.blip_model,
            "image_size": options.blip_image_size,
            "max_phrases": options.max_phrases,
            "noun_phrases": method,
        }
    if method == "rules" and cats & {*ATTRIBUTE_CATEGORIES, "spatial", "complex"}:
        notes.append(_rules_note(cats, chosen=options.noun_phrases == "rules"))
    if cats & {"non_spatial", "complex"}:
        evaluators["clip"] = {"model": options.clip_model, "pretrained": options.clip_pretrained}
    if cats & {"spatial", "complex"}:
        evaluators["detector"] = {
            "model": options.detector_model,
            "architecture": "OWLv2 (transformers Owlv2ForObjectDetection)",
            "threshold": options.detector_threshold,
            "query_template": options.detector_query,
            "noun_phrases": method,
        }
        notes.append(
            "spatial: the benchmark's UniDet detector is replaced by the open-vocabulary "
            f"detector OWLv2 ({options.detector_model}, best box per object noun, found when "
            f"score >= {options.detector_threshold}); the benchmark's position rule and score "
            "formula are kept"
        )
        if not options.upstream_on_top_of:
            notes.append(
                "spatial: 'on top of' is scored as 'on the top of' (upstream scores it 0; "
                "set upstream_on_top_of=true to reproduce)"
            )
    return evaluators, notes


def _rules_note(categories: set[str], chosen: bool) -> str:
    """The substitution rule-based noun phrases make (in place of spaCy), naming what of
    the evaluated categories it changes: the spatial objects lean on it as much as BLIP's
    questions, and complex's CLIP text drops adjectives by a word list instead of tags.
    ``chosen``: the option asked for the rules (else spaCy is missing)."""
    uses = []
    if categories & {*ATTRIBUTE_CATEGORIES, "complex"}:
        uses.append("BLIP-VQA's noun phrases")
    if categories & {"spatial", "complex"}:
        uses.append("the spatial rule's two object nouns")
    if "complex" in categories:
        uses.append(
            "the words complex's CLIP text keeps (adjectives dropped by a word list, not by "
            "part-of-speech tags)"
        )
    listed = f"{', '.join(uses[:-1])} and {uses[-1]}" if len(uses) > 1 else uses[0]
    why = "noun_phrases=rules" if chosen else "spaCy en_core_web_sm is not installed"
    return f"noun phrases: {why}, so dsharp's rule-based extractor picks {listed}"
