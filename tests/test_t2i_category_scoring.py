"""Which evaluator scores each T2I-CompBench category, how the complex 3-in-1 mean is
taken, the spatial object rule, and the detector's box frame. No evaluator model: the
scorer's three component scorers are replaced by constants."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dsharp.bench.spatial import Detection, find_relation, image_score, relation_objects
from dsharp.bench.t2i_compbench import _summarise_category
from dsharp.bench.t2i_data import normalize
from dsharp.bench.t2i_scoring import EvaluatorOptions, T2IScorer
from dsharp.rewards.base import RewardImages

BLIP, CLIP, SPATIAL = 0.2, 0.8, 0.5


def _scorer(clip_texts: list[str] | None = None) -> T2IScorer:
    scorer = T2IScorer(EvaluatorOptions(noun_phrases="rules"))
    scorer.blip_scores = lambda images, prompts: [BLIP] * len(prompts)

    def clip_scores(images, texts):
        if clip_texts is not None:
            clip_texts.extend(texts)
        return [CLIP] * len(texts)

    scorer.clip_scores = clip_scores
    scorer.spatial_scores = lambda images, prompts: ([SPATIAL] * len(prompts), [{}] * len(prompts))
    return scorer


def _images(n: int) -> RewardImages:
    return RewardImages(torch.zeros(n, 3, 8, 8))


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("color", BLIP),
        ("shape", BLIP),
        ("texture", BLIP),
        ("non_spatial", CLIP),
        ("spatial", SPATIAL),
    ],
)
def test_each_category_takes_its_benchmark_score(category, expected):
    """Each category takes its own benchmark score (non_spatial: CLIP, not BLIP-VQA)."""
    scores, parts, _ = _scorer().score(category, _images(2), ["a red car", "a blue cup"])
    assert scores == [expected, expected]


def test_complex_is_the_mean_of_the_parts_its_subset_names():
    """A two-part complex prompt scores the mean of its two parts, not two thirds of their
    sum."""
    action, spatial, other = "a man rides a horse", "a cat on the left of a dog", "a thing"
    subsets = {"action": {normalize(action)}, "spatial": {normalize(spatial)}}
    scores, parts, details = _scorer().score(
        "complex", _images(3), [action, spatial, other], subsets
    )
    assert scores[0] == pytest.approx((BLIP + CLIP) / 2)
    assert scores[1] == pytest.approx((BLIP + SPATIAL) / 2)
    assert scores[2] == pytest.approx((BLIP + SPATIAL + CLIP) / 3)
    assert math.isnan(parts["spatial"][0]) and math.isnan(parts["clip"][1])


def test_complex_clip_text_drops_adjectives():
    """Upstream scores a complex prompt's CLIP part on the prompt without its adjectives."""
    texts: list[str] = []
    prompt = "a fluffy brown dog chases a small red ball"
    _scorer(texts).score("complex", _images(1), [prompt], {"action": {normalize(prompt)}})
    assert texts and "fluffy" not in texts[0] and "red" not in texts[0]
    assert "dog" in texts[0] and "ball" in texts[0]


def test_spatial_first_object_is_the_noun_nearest_before_the_relation():
    """A relation's first object is the noun nearest before it, not the prompt's first."""
    prompt = "in a kitchen, a cat on the left of a dog"
    relation = find_relation(prompt)
    assert relation_objects(prompt, relation, "rules") == ("cat", "dog")


def test_upstream_on_top_of_only_zeroes_the_phrase_upstream_misses():
    """The upstream flag zeroes only the phrase upstream misses, not every 'top' relation."""
    prompt = "a cup on the top of a table"
    relation = find_relation(prompt)
    assert relation.phrase == "on the top of"
    cup, table = Detection((20, 0, 40, 20), 0.9), Detection((10, 40, 50, 60), 0.9)
    plain, _ = image_score(relation, cup, table, 64, 64)
    upstream, _ = image_score(relation, cup, table, 64, 64, upstream_on_top_of=True)
    assert plain == upstream == pytest.approx(0.95)  # 0.25 * 0.9 * 2 + 1 / 2
    on_top = find_relation("a cup on top of a table")
    assert image_score(on_top, cup, table, 64, 64, upstream_on_top_of=True)[0] == 0.0  # 0.45 < 0.5


def test_complex_part_means_skip_the_parts_a_prompt_does_not_take():
    """A part a prompt does not take is NaN in its row; the reported part mean ignores it
    rather than turning NaN."""
    rows = [
        {
            "scores": [0.5],
            "parts": {"blip": [0.2], "spatial": [math.nan], "clip": [0.8]},
            "detail": [{"parts": ["blip", "clip"]}],
        },
        {
            "scores": [0.35],
            "parts": {"blip": [0.2], "spatial": [0.5], "clip": [math.nan]},
            "detail": [{"parts": ["blip", "spatial"]}],
        },
    ]
    summary = _summarise_category("complex", rows)
    assert summary["parts"]["spatial"]["mean"] == pytest.approx(0.5)
    assert summary["parts"]["clip"]["mean"] == pytest.approx(0.8)
    assert summary["parts"]["spatial"]["n"] == 1


def test_detector_boxes_of_a_wide_image_scale_by_its_longer_side():
    """OWLv2 pads to a square of the longer side, so a normalised box at (0.5, 0.25) of a
    64x32 (w x h) image is centred at x=32, y=16."""
    from dsharp.bench.detector import OpenVocabDetector

    class Inputs(dict):
        def to(self, device):
            return self

    def processor(text, images, **kw):
        return Inputs()

    def model(**kw):
        logits = torch.full((1, 2, 2), -10.0)
        logits[0, 0, :] = 5.0  # patch 0 is the best for both queries
        boxes = torch.tensor([[[0.5, 0.25, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]]])
        return SimpleNamespace(logits=logits, pred_boxes=boxes)

    model.config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=16))
    det = OpenVocabDetector(model, processor, torch.device("cpu"), 0.1, "{}", {})
    images = RewardImages(torch.zeros(1, 3, 32, 64))  # height 32, width 64
    (row,) = det.best_boxes(images, [["cat", "dog"]])
    assert row[0].box == pytest.approx((16.0, 0.0, 48.0, 32.0))


class _IndexScorer:
    """Scores image i of a batch as i: a row that gets another prompt's images shows it."""

    def prepare(self, categories):
        pass

    def score(self, category, images, prompts, subsets=None):
        values = [float(i) for i in range(len(prompts))]
        return values, {"blip": values}, [{} for _ in prompts]


def _fake_generate(calls):
    from dsharp.generate import Generated

    def generate(model, prompts, seeds, settings, **kw):
        calls.append((list(prompts), list(seeds)))
        return Generated(images=torch.zeros(len(prompts), 3, 8, 8), nfe_per_image=1.0)

    return generate


def test_each_prompt_row_gets_its_own_images_scores(monkeypatch):
    """With two seeds, prompt 0 owns images 0-1 and prompt 1 images 2-3 of a chunk."""
    import dsharp.generate
    from dsharp.bench.t2i_compbench import _generate_rows
    from dsharp.generate import SampleSettings

    monkeypatch.setattr(dsharp.generate, "generate", _fake_generate([]))
    rows = list(
        _generate_rows(
            None,
            "color",
            [(0, "a red car"), (1, "a blue cup")],
            [0, 1],
            SampleSettings(),
            _IndexScorer(),
            SimpleNamespace(complex_subsets={}),
            8,
            None,
        )
    )
    assert [r["scores"] for r in rows] == [[0.0, 1.0], [2.0, 3.0]]


def test_seed_base_reaches_the_generated_images(monkeypatch):
    """Seeds are seed_base .. seed_base + N - 1, in the result and in what is generated."""
    import dsharp.bench.t2i_compbench as tc
    import dsharp.generate

    calls: list = []
    monkeypatch.setattr(dsharp.generate, "generate", _fake_generate(calls))
    prompt_set = SimpleNamespace(
        prompts={"color": ["a red car"]}, complex_subsets={}, describe=lambda: {}
    )
    monkeypatch.setattr(tc, "load_prompt_set", lambda cats, split, data_dir: prompt_set)
    monkeypatch.setattr(
        tc,
        "T2IScorer",
        lambda options: SimpleNamespace(
            method="rules", prepare=lambda cats: None, score=_IndexScorer().score
        ),
    )
    out = tc.run_t2i_compbench(
        None,
        categories="color",
        images_per_prompt=2,
        seed_base=7,
        evaluator_options={"noun_phrases": "rules"},
        model_id="m",
    )
    assert out["seeds"] == [7, 8]
    assert calls == [(["a red car", "a red car"], [7, 8])]


@pytest.mark.parametrize(
    ("categories", "named"),
    [
        (["spatial"], ["the spatial rule's two object nouns"]),
        (["color"], ["BLIP-VQA's noun phrases"]),
        (
            ["complex"],
            ["BLIP-VQA's noun phrases", "object nouns", "complex's CLIP text keeps"],
        ),
    ],
)
def test_rule_based_noun_phrases_are_stated_for_every_category_they_change(categories, named):
    """The spatial objects are found by the noun phrase method too: a spatial-only
    evaluation without spaCy stated no substitution for them."""
    from dsharp.bench.t2i_scoring import describe_evaluators

    _, notes = describe_evaluators(EvaluatorOptions(), categories, "rules")
    stated = [n for n in notes if n.startswith("noun phrases: ")]
    assert len(stated) == 1 and "spaCy en_core_web_sm is not installed" in stated[0]
    assert all(part in stated[0] for part in named), stated[0]
    _, chosen = describe_evaluators(EvaluatorOptions(noun_phrases="rules"), categories, "rules")
    assert any(n.startswith("noun phrases: noun_phrases=rules, so ") for n in chosen)
    _, with_spacy = describe_evaluators(EvaluatorOptions(), categories, "spacy")
    assert not any(n.startswith("noun phrases") for n in with_spacy)
    _, clip_only = describe_evaluators(EvaluatorOptions(), ["non_spatial"], "rules")
    assert clip_only == []
