"""T2I-CompBench: prompt files (CRLF, checksums, cache, download, offline), the spatial rule,
the OWLv2 wrapper, the 3-in-1 parts, and a resumable end-to-end run with tiny models."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from dsharp.bench import t2i_data
from dsharp.bench.spatial import (
    Detection,
    find_relation,
    image_score,
    position_score,
    relation_objects,
    to_reference_frame,
)
from dsharp.bench.t2i_data import (
    CATEGORIES,
    T2IDataError,
    expected_sha256,
    load_prompt_set,
    sha256_bytes,
)
from dsharp.bench.t2i_scoring import EvaluatorOptions, parts_of_complex
from dsharp.bench.words import drop_adjectives
from dsharp.rewards.noun_phrases import rule_noun_phrases
from spying import Call, record_calls

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "t2i-compbench"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"T2I-CompBench prompt files not found at {SHARED}"
)


def _lines(name: str) -> list[str]:
    return [x.strip() for x in (SHARED / name).read_text(encoding="utf-8").splitlines() if x]


# --------------------------------------------------------------------------- prompt files


@needs_shared
def test_val_prompt_files_read_despite_crlf():
    raw = (SHARED / "color_val.txt").read_bytes()
    assert b"\r\n" in raw  # the premise: the files use CRLF
    ps = load_prompt_set(CATEGORIES, "val", SHARED)
    assert ps.source == "data_dir"
    for category in CATEGORIES:
        prompts = ps.prompts[category]
        assert len(prompts) == 300
        assert all(p == p.strip() and "\r" not in p and p for p in prompts)
    assert {k: len(v) for k, v in ps.complex_subsets.items()} == {
        "spatial": 58,
        "action": 212,
        "spatialaction": 30,
    }
    assert all(f["matches_snapshot"] for f in ps.describe()["files"].values())


@needs_shared
def test_checksum_file_matches_the_shared_snapshot():
    names = sorted(p.name for p in SHARED.glob("*.txt"))
    listed = json.loads(t2i_data.CHECKSUMS_FILE.read_text())["files"]
    assert sorted(listed) == names
    for name in names:
        assert expected_sha256(name) == sha256_bytes((SHARED / name).read_bytes()), name


@needs_shared
def test_data_dir_missing_file_is_named(tmp_path):
    shutil.copy(SHARED / "color_val.txt", tmp_path)
    with pytest.raises(FileNotFoundError, match="shape_val.txt"):
        load_prompt_set(["color", "shape"], "val", tmp_path)
    shutil.copy(SHARED / "complex_val.txt", tmp_path)
    with pytest.raises(FileNotFoundError, match="complex_val_spatial.txt"):
        load_prompt_set(["complex"], "val", tmp_path)
    with pytest.raises(NotADirectoryError, match="no such folder"):
        load_prompt_set(["color"], "val", tmp_path / "nowhere")


def test_unknown_category_and_split():
    with pytest.raises(ValueError, match="unknown category 'colour'"):
        load_prompt_set(["colour"], "val")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_prompt_set(["color"], "test")


def _serve_shared(calls: list[str]):
    def fetch(url: str) -> bytes:
        calls.append(url)
        return (SHARED / url.rsplit("/", 1)[1]).read_bytes()

    return fetch


@needs_shared
def test_download_fills_verified_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []
    monkeypatch.setattr(t2i_data, "fetch", _serve_shared(calls))
    ps = load_prompt_set(["color", "complex"], "val")
    expected = ["color_val.txt", "complex_val.txt"] + [
        f"complex_val_{s}.txt" for s in ("spatial", "action", "spatialaction")
    ]
    assert [u.rsplit("/", 1)[1] for u in calls] == expected
    assert all(t2i_data.snapshot_commit() in u for u in calls)
    assert all(u.startswith("https://raw.githubusercontent.com/Karine-Huang/") for u in calls)
    cache = tmp_path / "cache" / "t2i-compbench"
    for name in expected:
        assert (cache / name).read_bytes() == (SHARED / name).read_bytes()
    assert ps.source == "cache" and len(ps.prompts["color"]) == 300
    load_prompt_set(["color", "complex"], "val")  # served from the cache
    assert len(calls) == len(expected)
    (cache / "color_val.txt").write_bytes(b"damaged")  # a bad cached copy is replaced
    load_prompt_set(["color"], "val")
    assert len(calls) == len(expected) + 1
    assert (cache / "color_val.txt").read_bytes() == (SHARED / "color_val.txt").read_bytes()


@needs_shared
def test_download_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(t2i_data, "fetch", lambda url: _serve_shared([])(url) + b"tampered")
    with pytest.raises(T2IDataError, match=r"shape_val\.txt .*checksum mismatch"):
        load_prompt_set(["shape"], "val")
    assert not (tmp_path / "cache" / "t2i-compbench" / "shape_val.txt").exists()


def test_offline_download_says_to_pass_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))

    def offline(url: str) -> bytes:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(t2i_data, "fetch", offline)
    with pytest.raises(T2IDataError) as err:
        load_prompt_set(["texture"], "val")
    message = str(err.value)
    assert "\n" not in message
    assert "texture_val.txt" in message and "pass --data DIR" in message


# --------------------------------------------------------------------------- noun phrases


@needs_shared
def test_rule_noun_phrases_on_simple_attribute_prompts():
    """Every two-object prompt of the attribute files ("a red apple and a green cup") gives
    exactly its two noun phrases."""
    simple = re.compile(r"^(an? [\w-]+ [\w-]+) and (an? [\w-]+ [\w-]+)$", re.IGNORECASE)
    checked = 0
    for name in ("color_val.txt", "shape_val.txt", "texture_val.txt"):
        for prompt in _lines(name):
            phrases = rule_noun_phrases(prompt)
            assert 1 <= len(phrases) <= 8, prompt
            match = simple.match(prompt)
            if match:
                assert phrases == [match.group(1), match.group(2)], prompt
                checked += 1
    assert checked > 300


@needs_shared
def test_spatial_objects_on_every_spatial_prompt():
    form = re.compile(r"^an? (.+?) (on side of|next to|near|on the \w+ of) an? (.+)$")
    for prompt in _lines("spatial_val.txt") + _lines("spatial_train.txt"):
        relation = find_relation(prompt)
        match = form.match(prompt)
        assert relation is not None and relation.phrase == match.group(2)
        expected = (match.group(1).split()[-1], match.group(3).split()[-1])
        assert relation_objects(prompt, relation, "rules") == expected, prompt


@needs_shared
def test_spatial_objects_on_complex_spatial_prompts():
    found = 0
    for name in ("complex_val_spatial.txt", "complex_val_spatialaction.txt"):
        for prompt in _lines(name):
            relation = find_relation(prompt)
            if relation is None:
                continue
            objects = relation_objects(prompt, relation, "rules")
            assert objects is not None and all(objects), prompt
            found += 1
    assert found >= 85
    prompt = "The soft yellow duckling swam next to the sleek black swan."
    assert relation_objects(prompt, find_relation(prompt), "rules") == ("duckling", "swan")
    prompt = "The bright yellow sunflower stood tall next to the soft green grass."
    assert relation_objects(prompt, find_relation(prompt), "rules") == ("sunflower", "grass")


def test_find_relation_order_and_whole_words():
    assert find_relation("a dog near a cat").kind == "near"
    assert find_relation("a dog on the left of a cat").kind == "left"
    assert find_relation("the cat on top of the box").phrase == "on top of"
    assert find_relation("a nearby dog and a cat") is None
    # the benchmark's search order: "next to" is found before "on the left of"
    assert find_relation("a dog on the left of a cat next to a box").phrase == "next to"


def test_drop_adjectives_for_complex_clip_text():
    text = drop_adjectives("The fluffy white cat sat next to the soft, red pillow.")
    assert text == "The cat sat next to the pillow."


@needs_shared
def test_complex_parts_follow_the_subset_files():
    ps = load_prompt_set(["complex"], "val", SHARED)
    counts: dict[tuple, int] = {}
    for prompt in ps.prompts["complex"]:
        parts = parts_of_complex(prompt, ps.complex_subsets)
        counts[parts] = counts.get(parts, 0) + 1
    assert counts == {
        ("blip", "spatial"): 58,
        ("blip", "clip"): 212,
        ("blip", "spatial", "clip"): 30,
    }
    assert parts_of_complex("a prompt in no list", ps.complex_subsets) == (
        "blip",
        "spatial",
        "clip",
    )


# --------------------------------------------------------------------------- the rule


def _box(cx: float, cy: float, half: float = 20.0) -> tuple[float, float, float, float]:
    return (cx - half, cy - half, cx + half, cy + half)


def test_position_rule_directions():
    # obj1 at the left, obj2 at the right: "obj1 on the left of obj2"
    left, right = _box(100, 240), _box(380, 240)
    assert position_score("left", left, right) == 1.0
    assert position_score("right", left, right) == 0.0
    assert position_score("right", right, left) == 1.0
    top, bottom = _box(240, 100), _box(240, 380)  # image y grows downwards
    assert position_score("top", top, bottom) == 1.0
    assert position_score("bottom", top, bottom) == 0.0
    assert position_score("bottom", bottom, top) == 1.0
    # mostly vertical displacement does not count as "left of"
    assert position_score("left", _box(100, 100), _box(150, 400)) == 0.0
    assert position_score("unknown", left, right) == 0.0


def test_position_rule_overlap_and_distance():
    a, b = (0.0, 0.0, 100.0, 100.0), (50.0, 0.0, 150.0, 100.0)  # iou = 1/3
    assert position_score("left", a, b) == pytest.approx(0.1 / (1 / 3))
    near_a, far_b = _box(0, 0), _box(300, 400)
    assert position_score("near", near_a, far_b) == pytest.approx(150 / 400)
    assert position_score("near", _box(0, 0), _box(100, 400)) == 1.0  # |dx| < 150


def test_image_score_combines_confidences_and_cuts_below_half():
    relation = find_relation("a cat on the left of a dog")
    cat, dog = Detection(_box(10, 32, 5), 0.4), Detection(_box(54, 32, 5), 0.6)
    score, position = image_score(relation, cat, dog, 64, 64)
    assert position == 1.0 and score == pytest.approx(0.25 * 0.4 + 0.25 * 0.6 + 0.5)
    score, position = image_score(relation, dog, cat, 64, 64)  # wrong side
    assert position == 0.0 and score == 0.0  # 0.25 < 0.5 -> 0
    assert image_score(relation, cat, None, 64, 64) == (0.0, None)  # 0.1 -> 0
    assert image_score(relation, None, None, 64, 64) == (0.0, None)
    on_top = find_relation("a cat on top of a dog")
    high, low = Detection(_box(32, 10, 5), 0.5), Detection(_box(32, 54, 5), 0.5)
    assert image_score(on_top, high, low, 64, 64)[0] == pytest.approx(0.75)
    assert image_score(on_top, high, low, 64, 64, upstream_on_top_of=True)[0] == 0.0


def test_reference_frame_scales_to_unidet_short_side():
    assert to_reference_frame((0, 0, 64, 32), 128, 64) == pytest.approx((0, 0, 479, 239.5))


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory) -> dict:
    from dsharp.testing.tiny_rewards import make_tiny_t2i_evaluators

    return make_tiny_t2i_evaluators(tmp_path_factory.mktemp("t2i-evaluators"))


@pytest.fixture(scope="module")
def tiny_model(tiny_sd_dir):
    from dsharp.models import load_model

    return load_model(str(tiny_sd_dir))


def test_owlv2_detector_boxes(evaluators):
    from dsharp.bench.detector import build_detector
    from dsharp.rewards.base import RewardImages

    detector = build_detector(model=evaluators["detector_model"], threshold=0.0, device="cpu")
    torch.manual_seed(0)
    images = RewardImages(torch.rand(2, 3, 48, 64))
    found = detector.best_boxes(images, [["cat", "dog"], ["lamp", "giraffe"]])
    assert [len(row) for row in found] == [2, 2]
    for row in found:
        for det in row:
            x0, y0, x1, y1 = det.box
            assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 48
            assert 0.0 <= det.score <= 1.0
    scores = sorted(det.score for row in found for det in row)
    detector.threshold = (scores[0] + scores[-1]) / 2 if scores[0] < scores[-1] else 1.0
    again = detector.best_boxes(images, [["cat", "dog"], ["lamp", "giraffe"]])
    for row, row_again in zip(found, again, strict=True):
        for det, det_again in zip(row, row_again, strict=True):
            assert det_again == (det if det.score >= detector.threshold else None)
    with pytest.raises(ValueError, match="detector_query"):
        build_detector(model=evaluators["detector_model"], query_template="a photo")


def test_evaluator_options_are_checked():
    with pytest.raises(ValueError, match=r"blip_modle.*accepted: .*blip_model"):
        EvaluatorOptions.from_dict({"blip_modle": "x"})


def _run(model, evaluators, out_dir, **kw):
    from dsharp.bench import run_t2i_compbench
    from dsharp.generate import SampleSettings

    args = {
        "categories": None,
        "limit": 2,
        "images_per_prompt": 1,
        "data_dir": SHARED,
        "settings": SampleSettings(steps=2),
        "evaluator_options": evaluators,
        "out_dir": out_dir,
        "batch_size": 4,
        **kw,
    }
    return run_t2i_compbench(model, **args)


@needs_shared
def test_run_all_categories_and_resume(tiny_model, evaluators, tmp_path, monkeypatch):
    from dsharp.io import json_safe

    out = tmp_path / "t2i"
    result = _run(tiny_model, evaluators, out, keep_images=True)
    assert set(result["metrics"]) == {f"t2i_{c}" for c in CATEGORIES}
    for c in CATEGORIES:
        stats = result["t2i_compbench"][c]
        assert stats["n"] == 2 and stats["n_prompts"] == 2
        assert 0.0 <= stats["mean"] <= 1.0
    assert result["n_images"] == 12
    assert result["evaluators"]["blip_vqa"]["model"] == evaluators["blip_model"]
    assert result["evaluators"]["clip"]["model"] == evaluators["clip_model"]
    assert result["evaluators"]["detector"]["model"] == evaluators["detector_model"]
    assert any("UniDet" in s and "OWLv2" in s for s in result["substitutions"])
    json.dumps(json_safe(result), allow_nan=False)
    assert len((out / "partial.jsonl").read_text().splitlines()) == 12
    assert (out / "images" / "spatial" / "0000_0.png").is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("a resumed evaluation must not generate again")

    monkeypatch.setattr("dsharp.generate.generate", no_generation)
    again = _run(tiny_model, evaluators, out, keep_images=True)
    assert again["metrics"] == result["metrics"]


@needs_shared
def test_interrupted_run_resumes_where_it_stopped(tiny_model, evaluators, tmp_path, monkeypatch):
    from dsharp.bench.t2i_scoring import T2IScorer

    out = tmp_path / "t2i"
    real_score = T2IScorer.score

    def crash_on_spatial(self, category, *args, **kwargs):
        if category == "spatial":
            raise KeyboardInterrupt
        return real_score(self, category, *args, **kwargs)

    monkeypatch.setattr(T2IScorer, "score", crash_on_spatial)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model, evaluators, out, categories="color,spatial")
    rows = [json.loads(x) for x in (out / "partial.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == ["color", "color"]
    with (out / "partial.jsonl").open("a") as fh:  # a torn line from a crash mid-append
        fh.write('{"category": "spat')
    monkeypatch.setattr(T2IScorer, "score", real_score)

    calls = _record_generate(monkeypatch)
    result = _run(tiny_model, evaluators, out, categories="color,spatial")
    spatial = _lines("spatial_val.txt")  # --limit 2 spreads through the list
    assert _prompts_of(calls) == [spatial[0], spatial[len(spatial) // 2]]
    assert result["t2i_compbench"]["color"]["n"] == 2
    assert result["t2i_compbench"]["spatial"]["n"] == 2
    rows = [json.loads(x) for x in (out / "partial.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == ["color"] * 2 + ["spatial"] * 2


def _record_generate(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """The calls of ``dsharp.generate.generate`` the test makes from here on."""
    import dsharp.generate

    return record_calls(monkeypatch, dsharp.generate, "generate")


def _prompts_of(calls: list[Call]) -> list[str]:
    """The prompts those calls generated images for, in order."""
    return [prompt for call in calls for prompt in call.args[1]]


def test_limit_spreads_through_a_category_and_a_resume_reuses_only_the_rows_it_shares(
    tiny_model, evaluators, tmp_path, monkeypatch
):
    """--limit spreads evenly through each category (as for other benches), not the first N;
    a rerun with another limit generates only the prompts it has not scored."""
    data = tmp_path / "data"
    data.mkdir()
    prompts = ["a red book", "a blue cup", "a green apple", "a yellow car", "a white dog"]
    (data / "color_val.txt").write_text("\n".join(prompts) + "\n")
    calls = _record_generate(monkeypatch)
    out = tmp_path / "t2i"
    result = _run(tiny_model, evaluators, out, categories="color", limit=2, data_dir=data)
    assert _prompts_of(calls) == [prompts[0], prompts[2]]
    assert result["t2i_compbench"]["color"]["n_prompts"] == 2
    calls.clear()
    result = _run(tiny_model, evaluators, out, categories="color", limit=3, data_dir=data)
    assert _prompts_of(calls) == [prompts[1], prompts[3]]  # prompts[0] reused, [2] left out
    assert result["t2i_compbench"]["color"]["n_prompts"] == 3
    assert result["t2i_compbench"]["color"]["n"] == 3


def test_results_keep_each_images_score_so_that_two_evaluations_pair(
    tiny_model, evaluators, tmp_path, monkeypatch
):
    """Each image's prompt, seed, score and category are kept (also by a resumed run, from
    its saved rows), so `dsharp compare --paired` pairs two T2I-CompBench evaluations; an
    evaluation written before they were kept is said to predate them."""
    from dsharp.paired import paired_difference

    data = tmp_path / "data"
    data.mkdir()
    (data / "color_val.txt").write_text("a red book\na blue cup\n")
    (data / "shape_val.txt").write_text("a round clock\n")
    out = tmp_path / "t2i"
    args = {"categories": "color,shape", "images_per_prompt": 2, "data_dir": data}
    result = _run(tiny_model, evaluators, out, **args)
    images = result["images"]
    assert [(i["prompt"], i["seed"], i["category"]) for i in images] == [
        ("a red book", 0, "color"),
        ("a red book", 1, "color"),
        ("a blue cup", 0, "color"),
        ("a blue cup", 1, "color"),
        ("a round clock", 0, "shape"),
        ("a round clock", 1, "shape"),
    ]
    color = [i["score"] for i in images if i["category"] == "color"]
    assert result["metrics"]["t2i_color"]["mean"] == pytest.approx(sum(color) / len(color))

    def no_generation(*args, **kwargs):
        raise AssertionError("a resumed evaluation must not generate again")

    monkeypatch.setattr("dsharp.generate.generate", no_generation)
    again = _run(tiny_model, evaluators, out, **args)
    assert again["images"] == images
    paired = paired_difference(result, again)
    assert paired["delta"] == 0.0 and paired["n_images"] == 6
    assert set(paired["categories"]) == {"color", "shape"}

    older = {k: v for k, v in result.items() if k != "images"}
    with pytest.raises(ValueError) as err:
        paired_difference(older, again, ("old", "new"))
    assert "T2I-CompBench evaluation predates" in str(err.value)
    assert str(out) in str(err.value) and "re-run" not in str(err.value)


@needs_shared
def test_resume_refuses_other_settings(tiny_model, evaluators, tmp_path):
    from dsharp.generate import SampleSettings

    out = tmp_path / "t2i"
    _run(tiny_model, evaluators, out, categories="color", limit=1)
    with pytest.raises(ValueError, match="other settings.*sample"):
        _run(
            tiny_model,
            evaluators,
            out,
            categories="color",
            limit=1,
            settings=SampleSettings(steps=3),
        )


def test_bad_run_arguments(tiny_model, evaluators):
    with pytest.raises(ValueError, match="unknown category 'sizes'"):
        _run(tiny_model, evaluators, None, categories="color,sizes")
    with pytest.raises(ValueError, match="--images-per-prompt"):
        _run(tiny_model, evaluators, None, images_per_prompt=0)
    with pytest.raises(ValueError, match="output folder"):
        _run(tiny_model, evaluators, None, keep_images=True)


@needs_shared
def test_bad_evaluator_fails_before_generation(tiny_model, evaluators, tmp_path, monkeypatch):
    from dsharp.rewards.base import RewardError

    def no_generation(*args, **kwargs):
        raise AssertionError("evaluators must be checked before generating")

    monkeypatch.setattr("dsharp.generate.generate", no_generation)
    options = {**evaluators, "detector_model": str(tmp_path / "missing-owlv2")}
    with pytest.raises(RewardError, match="detector evaluator: .*detector_model.*folder not found"):
        _run(tiny_model, options, None, categories="spatial")


def test_overall_is_nan_and_names_the_categories_left_without_a_score():
    from dsharp.bench.t2i_compbench import overall_of

    assert overall_of({"color": 0.5, "shape": 0.25}) == (0.375, [])
    overall, unscored = overall_of({"color": 0.5, "shape": float("nan")})
    assert math.isnan(overall) and unscored == ["shape"]
