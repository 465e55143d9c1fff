"""`dsharp compare` says when its sources were drawn differently (sampler, seeds, prompts):
a table of them still prints, but a gap may not be the model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.comparability import comparability_notes


def _result(steps: int = 25, seeds=(0, 1), prompts=("a red circle",)) -> dict:
    sample = {"method": "default", "steps": steps, "guidance": 5.0, "eta": 0.0}
    sample |= {"height": None, "width": None, "options": {}}
    images = [{"prompt": p, "seed": s, "score": 0.5} for p in prompts for s in seeds]
    return {"overall": 0.5, "sample": sample, "seeds": list(seeds), "images": images}


def test_the_same_drawing_gives_no_note():
    assert comparability_notes([("a", _result()), ("b", _result())]) == []
    assert comparability_notes([("a", _result())]) == []


def test_each_difference_is_named_with_each_sources_value():
    notes = comparability_notes(
        [("a", _result()), ("b", _result(steps=5, seeds=(0,), prompts=("a blue square",)))]
    )
    assert notes == [
        "sampling differs in steps (a: 25, b: 5): a gap may be the sampler's",
        "seeds differ (a: [0, 1], b: [0])",
        "prompt sets differ (a: 1, b: 1 prompts): a gap may be the prompts'",
    ]


def test_fields_an_evaluation_does_not_record_are_not_compared():
    older = {"overall": 0.4, "metrics": {}}
    assert comparability_notes([("a", _result()), ("old", older)]) == []


def test_compare_prints_the_notes_on_stderr(tmp_path: Path):
    paths = []
    for name, steps in (("base", 25), ("quick", 5)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_result(steps=steps)))
    result = CliRunner().invoke(app, ["compare", *map(str, paths), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "note: sampling differs in steps (base: 25, quick: 5)" in result.stderr


# Spelled out here rather than imported, so that a key dropped from the code fails its case.
DRAWING_FIELDS = {
    "method": "demon",
    "steps": 5,
    "guidance": 1.0,
    "eta": 1.0,
    "height": 48,
    "width": 48,
    "options": {"K": 4},
}


@pytest.mark.parametrize("field", sorted(DRAWING_FIELDS))
def test_every_sampling_field_that_differs_is_noted(field: str):
    other = _result()
    other["sample"][field] = DRAWING_FIELDS[field]
    notes = comparability_notes([("a", _result()), ("b", other)])
    assert len(notes) == 1 and f"sampling differs in {field} (a: " in notes[0], notes


def _scored(rewards=None, bench=None, shift=0.0) -> dict:
    result = _result()
    for image in result["images"]:
        image["score"] += shift
    if rewards is not None:
        result["rewards"] = list(rewards)
    if bench is not None:
        result["bench"] = bench
    return result


def test_other_rewards_or_another_bench_are_noted():
    notes = comparability_notes(
        [("a", _scored(["shapes"], "shapes")), ("b", _scored(["shapes_soft"], "t2i-compbench"))]
    )
    assert notes == [
        "rewards differ (a: shapes, b: shapes_soft): the scores are not on one scale",
        "benches differ (a: shapes, b: t2i-compbench): a gap may be the bench's",
    ]
    same = [("a", _scored(["shapes", "clip"], None)), ("b", _scored(["clip", "shapes"], None))]
    assert comparability_notes(same) == []
    prompt_file = comparability_notes([("a", _scored(bench="shapes")), ("b", _scored())])
    assert prompt_file == []  # b does not record its bench: not compared
    bench_result = _scored(bench="shapes") | {"reward": "shapes_soft"}  # a reward bench's own
    notes = comparability_notes([("a", _scored(["shapes"])), ("b", bench_result)])
    assert notes == ["rewards differ (a: shapes, b: shapes_soft): the scores are not on one scale"]


def _write(tmp_path: Path, name: str, result: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return path


def _compare(tmp_path: Path, *args):
    out = ["--out", str(tmp_path / "out"), "--no-plot"]
    return CliRunner().invoke(app, ["compare", *map(str, args), *out])


def test_compare_notes_other_rewards_and_benches_on_stderr(tmp_path: Path):
    base = _write(tmp_path, "base", _scored(["shapes"], "shapes"))
    soft = _write(tmp_path, "soft", _scored(["shapes_soft"], "shapes"))
    result = _compare(tmp_path, base, soft)
    assert result.exit_code == 0, result.output
    assert "note: rewards differ (base: shapes, soft: shapes_soft)" in result.stderr


def test_paired_refuses_images_scored_by_other_rewards_as_a_bad_setting(tmp_path: Path):
    """One model's images scored by shapes and by shapes_soft would read as a sure gain."""
    base = _write(tmp_path, "base", _scored(["shapes"], "shapes"))
    soft = _write(tmp_path, "soft", _scored(["shapes_soft"], "shapes", shift=0.4))
    result = _compare(tmp_path, "--paired", base, soft)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: --paired: {base} is scored by shapes, {soft} by shapes_soft: images scored "
        "by different rewards cannot be paired (compare them without --paired)"
    )
    assert not (tmp_path / "out" / "compare.md").exists()


def test_paired_still_pairs_an_older_evaluation_that_does_not_record_its_rewards(tmp_path):
    base = _write(tmp_path, "base", _scored(["shapes"], "shapes"))
    older = _write(tmp_path, "older", _scored(shift=0.25))
    result = _compare(tmp_path, "--paired", base, older)
    assert result.exit_code == 0, result.output
    assert "0.2500" in (tmp_path / "out" / "compare.md").read_text()


def test_a_reward_reported_only_does_not_make_two_evaluations_differ(tmp_path: Path):
    """A recipe's eval.rewards may add a weight-0 reward, reported beside the score but not
    in it: the images' scores are on one scale with an evaluation that lacks it."""
    plain = _scored(["shapes"], "shapes") | {"reward_weights": {"shapes": 1.0}}
    monitored = _scored(["shapes", "shapes_soft"], "shapes", shift=0.25)
    monitored["reward_weights"] = {"shapes": 1.0, "shapes_soft": 0.0}
    assert comparability_notes([("a", plain), ("b", monitored)]) == []
    base, other = _write(tmp_path, "base", plain), _write(tmp_path, "other", monitored)
    result = _compare(tmp_path, "--paired", base, other)
    assert result.exit_code == 0, result.output
    # a file from before reward_weights were recorded: a shared reward may be the scoring one
    older = _write(tmp_path, "older", {k: v for k, v in monitored.items() if k != "reward_weights"})
    assert _compare(tmp_path, "--paired", base, older).exit_code == 0
    # the weights say the scores are another reward's: refused
    soft = monitored | {"reward_weights": {"shapes": 0.0, "shapes_soft": 1.0}}
    result = _compare(tmp_path, "--paired", base, _write(tmp_path, "soft", soft))
    assert result.exit_code == 2 and "is scored by shapes, " in result.stderr


def _with_specs(options: dict | None = None, shift=0.0, **spec) -> dict:
    """An evaluation scored by shapes set up with ``options`` (as dsharp eval records it)."""
    result = _scored(["shapes"], "shapes", shift=shift)
    result["reward_weights"] = {"shapes": spec.get("weight", 1.0)}
    recorded = {"name": "shapes", "weight": 1.0, "normalize": "none", "on_error": "raise"}
    result["reward_specs"] = {"shapes": recorded | spec | {"options": options or {}}}
    return result


def test_paired_refuses_one_reward_set_up_with_other_options(tmp_path: Path):
    """`shapes` and `shapes binary=true` are other scorers of the same images: paired, they
    read as a confident loss (audit F1)."""
    partial = _write(tmp_path, "partial", _with_specs())
    binary = _write(tmp_path, "binary", _with_specs({"binary": True}, shift=-0.15))
    result = _compare(tmp_path, "--paired", partial, binary)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: --paired: {partial} and {binary} are scored with other reward settings "
        f"(shapes option binary: not set in {partial}, true in {binary}): images scored "
        "differently cannot be paired (compare them without --paired)"
    )
    assert not (tmp_path / "out" / "compare.md").exists()
    plain = _compare(tmp_path, partial, binary)
    assert plain.exit_code == 0, plain.output
    assert (
        "note: reward settings differ (shapes option binary: not set in partial, true in "
        "binary): the scores are not on one scale"
    ) in plain.stderr


def test_other_option_values_normalisation_or_weights_are_other_settings():
    def note(a: dict, b: dict) -> list[str]:
        return comparability_notes([("a", a), ("b", b)])

    clip_b32 = _with_specs({"model": "ViT-B-32", "api_key": "<redacted>"})
    clip_l14 = _with_specs({"model": "ViT-L-14", "api_key": "<redacted>"})
    assert note(clip_b32, clip_l14) == [
        'reward settings differ (shapes option model: "ViT-B-32" in a, "ViT-L-14" in b): '
        "the scores are not on one scale"
    ]
    assert note(clip_b32, _with_specs({"model": "ViT-B-32", "api_key": "<redacted>"})) == []
    # options that only say how a reward runs do not make its scores differ
    runs_elsewhere = {"device": "cuda", "api_key_env": "MY_KEY", "max_concurrency": 2}
    runs_elsewhere |= {"timeout_s": 5, "max_retries": 0, "cache_path": "none"}
    assert note(clip_b32, _with_specs({"model": "ViT-B-32", **runs_elsewhere})) == []
    zscore = _with_specs(normalize="batch_zscore")
    assert note(_with_specs(), zscore) == [
        "reward settings differ (shapes normalize: none in a, batch_zscore in b): the scores "
        "are not on one scale"
    ]
    # one reward's weight alone does not change its score (weight x score / |weight|) ...
    assert note(_with_specs(), _with_specs(weight=2.0)) == []
    # ... but its share of a sum of rewards does
    mixed = _with_specs()
    mixed["reward_specs"]["clip"] = {"name": "clip", "weight": 1.0, "options": {}}
    mixed["reward_weights"]["clip"] = 1.0
    heavier = _with_specs(weight=3.0)
    heavier["reward_specs"]["clip"] = {"name": "clip", "weight": 1.0, "options": {}}
    heavier["reward_weights"]["clip"] = 1.0
    assert note(mixed, heavier) == [
        "reward settings differ (clip weight: 0.5 of the score in a, 0.25 in b): the scores "
        "are not on one scale"
    ]
    # a weight-0 reward is reported only: its options do not change the score
    monitored = _with_specs()
    monitored["reward_specs"]["clip"] = {"name": "clip", "weight": 0.0, "options": {"x": 1}}
    monitored["reward_weights"]["clip"] = 0.0
    assert note(_with_specs(), monitored) == []


def _with_hidden(value: str, shift: float = 0.0) -> dict:
    """An evaluation scored by shapes with an option ``token`` saved as dsharp eval saves it
    (a name that looks secret: ``<redacted>``), and ``binary`` shown."""
    from dsharp.redaction import redact_reward_spec

    recorded = redact_reward_spec({"name": "shapes", "options": {"token": value, "binary": True}})
    return _with_specs(recorded["options"], shift=shift)


def test_options_hidden_in_both_evaluations_are_not_taken_for_alike(tmp_path: Path):
    """Two evaluations that saved an option as ``<redacted>`` read as set up alike (no note,
    and --paired paired them), whatever the hidden values were: a note says it is not known,
    and names no value."""
    a = _write(tmp_path, "a", _with_hidden("FAKEhiddenA"))
    b = _write(tmp_path, "b", _with_hidden("FAKEhiddenB", shift=0.2))
    expected = (
        "note: reward settings hidden (shapes option token: <redacted> in a, b, saved as a "
        "secret): whether the rewards were set up alike is not known"
    )
    for args in [(a, b), ("--paired", a, b)]:
        result = _compare(tmp_path, *args)
        assert result.exit_code == 0, result.output
        assert expected in result.stderr
        assert "FAKEhidden" not in result.output + (tmp_path / "out" / "compare.md").read_text()
    # one note for the sources that hide it; a shown difference is still named as one
    c = ("c", _with_hidden("FAKEhiddenC"))
    notes = comparability_notes([("a", _with_hidden("x1")), ("b", _with_hidden("x2")), c])
    assert notes == [expected.removeprefix("note: ").replace("a, b", "a, b, c")]
    shown = comparability_notes([("a", _with_hidden("x1")), ("b", _with_specs({"token": 5}))])
    assert shown == [
        "reward settings differ (shapes option binary: true in a, not set in b): the scores "
        "are not on one scale"
    ]


def test_a_url_whose_credentials_alone_are_hidden_is_compared_by_the_rest():
    """A grader's ``base_url`` with its credentials (``https://user:KEY@proxy/v1``, sent as a
    header) is saved as ``https://<redacted>@proxy/v1``: two such evaluations got the hidden
    note at every compare, though who asks does not change the grade; another host is
    still a difference, and a value hidden whole still gets the note."""
    from dsharp.redaction import redact_reward_spec

    def graded(base_url: str) -> dict:
        options = {"model": "FAKEgrader", "base_url": base_url}
        return _with_specs(redact_reward_spec({"name": "shapes", "options": options})["options"])

    proxy = "https://fakeuser:FAKEpassword1@proxy.example/v1"
    assert comparability_notes([("a", graded(proxy)), ("b", graded(proxy))]) == []
    query = "https://proxy.example/v1?api-key=FAKEkey0123456789"
    assert comparability_notes([("a", graded(query)), ("b", graded(query))]) == []
    other = comparability_notes([("a", graded(proxy)), ("b", graded(proxy.replace("proxy", "x")))])
    assert [n.split(" (")[0] for n in other] == ["reward settings differ"]
    whole = comparability_notes([("a", _with_hidden("x1")), ("b", _with_hidden("x2"))])
    assert [n.split(" (")[0] for n in whole] == ["reward settings hidden"]


def test_an_older_evaluation_without_reward_settings_still_pairs_with_a_note(tmp_path: Path):
    new = _write(tmp_path, "new", _with_specs({"binary": True}))
    older = _write(tmp_path, "older", _scored(["shapes"], "shapes", shift=0.25))
    paired = _compare(tmp_path, "--paired", new, older)
    assert paired.exit_code == 0, paired.output
    expected = (
        "note: reward options not recorded (older: an older evaluation): whether the rewards "
        "were set up alike is not known"
    )
    assert expected in paired.stderr
    assert expected in _compare(tmp_path, new, older).stderr
    both_old = _compare(tmp_path, older, _write(tmp_path, "old2", _scored(["shapes"], "shapes")))
    assert both_old.exit_code == 0 and "not recorded" not in both_old.stderr


def _unscored(nan_prompts: tuple[str, ...], prompts=("a", "b", "c")) -> dict:
    result = _result(prompts=prompts)
    for image in result["images"]:
        image["score"] = None if image["prompt"] in nan_prompts else 0.5
    result["n_images"] = len(result["images"])
    result["n_scored"] = sum(image["score"] is not None for image in result["images"])
    return result


def test_unscored_images_are_noted_and_so_are_different_scored_sets():
    """Means over other images read as a gain (audit F3): nan.json left "b" unscored,
    nan2.json "c"."""
    notes = comparability_notes([("nan", _unscored(("b",))), ("nan2", _unscored(("c",)))])
    assert notes == [
        "the scored images differ (nan: 4 of 6, nan2: 4 of 6 scored): each mean is over other "
        "images (--paired compares the images both scored)"
    ]
    notes = comparability_notes([("x", _unscored(("b",))), ("y", _unscored(("b",)))])
    assert notes == [
        "some images are unscored (x: 4 of 6, y: 4 of 6 scored): each mean is over its scored "
        "images"
    ]
    notes = comparability_notes([("x", _unscored(())), ("y", _unscored(("b",)))])
    assert notes == [
        "the scored images differ (x: 6 of 6, y: 4 of 6 scored): each mean is over other "
        "images (--paired compares the images both scored)"
    ]
    assert comparability_notes([("x", _unscored(())), ("y", _unscored(()))]) == []
    # an older file without n_scored: counted from its images
    older = _unscored(("b",))
    del older["n_scored"]
    assert "x: 4 of 6, y: 4 of 6 scored" in comparability_notes([("x", older), ("y", older)])[0]
    # a NaN score (a JSON NaN literal in an older file) is unscored, as null is
    with_nan = json.loads(json.dumps(older))
    for image in with_nan["images"]:
        image["score"] = float("nan") if image["score"] is None else image["score"]
    assert comparability_notes([("x", older), ("y", with_nan)]) == [
        "some images are unscored (x: 4 of 6, y: 4 of 6 scored): each mean is over its scored "
        "images"
    ]


def test_compare_shows_how_many_images_each_mean_is_over(tmp_path: Path):
    nan = _write(tmp_path, "nan", _unscored(("b",)))
    nan2 = _write(tmp_path, "nan2", _unscored(("c",)))
    result = _compare(tmp_path, nan, nan2)
    assert result.exit_code == 0, result.output
    assert "note: the scored images differ (nan: 4 of 6, nan2: 4 of 6 scored)" in result.stderr
    lines = (tmp_path / "out" / "compare.md").read_text().splitlines()
    assert lines[0] == "| run | overall | images | images scored |"
    assert lines[2:4] == ["| nan | 0.5000 | 6 | 4 |", "| nan2 | 0.5000 | 6 | 4 |"]
    # the notes go into the file too: read alone, it must not pass for a like-for-like table
    assert lines[4:7] == ["", "Notes:", ""]
    assert lines[7].startswith("- the scored images differ (nan: 4 of 6, nan2: 4 of 6 scored)")


def test_a_reward_named_twice_with_options_keyed_by_numbers_is_compared_not_a_crash():
    from dsharp.comparability import scoring_specs, spec_difference

    def named_twice(value: int) -> list:
        specs = {"r": {"name": "r", "options": {1: "x", "b": value}}}
        specs["r#1"] = {"name": "r", "options": {"z": 1}}
        return scoring_specs({"reward_specs": specs})

    assert spec_difference(("a", named_twice(2)), ("b", named_twice(2))) is None
    assert (
        spec_difference(("a", named_twice(2)), ("b", named_twice(3)))
        == "r option b: 2 in a, 3 in b"
    )


def test_paired_says_when_it_pairs_fewer_images_than_a_source_scored(tmp_path: Path):
    """Two seeds against three: the row's baseline score is a mean over the 2 images both
    drew, not the baseline's overall, and the table alone did not say so."""
    base = _write(tmp_path, "base", _result(seeds=(0, 1)))
    more = _write(tmp_path, "more", _result(seeds=(0, 1, 2)))
    result = _compare(tmp_path, "--paired", base, more)
    assert result.exit_code == 0, result.output
    note = (
        "more is paired with base on the 2 images both scored (base: 2, more: 3 scored): "
        "its baseline score, score and delta are over those images only"
    )
    assert f"note: {note}" in result.stderr
    assert f"- {note}" in (tmp_path / "out" / "compare.md").read_text()
    same = _compare(tmp_path, "--paired", base, _write(tmp_path, "same", _result()))
    assert same.exit_code == 0 and "paired with" not in same.stderr


def test_paired_notes_say_the_delta_is_over_the_shared_prompts_and_images(tmp_path: Path):
    """--paired compares the images both scored: 'a gap may be the prompts'' and 'each mean
    is over other images' were not true of its deltas; unpaired, they still are said."""
    base = _write(tmp_path, "base", _result(prompts=("a", "b")))
    other = _write(tmp_path, "other", _result(prompts=("a", "c", "d")))
    paired = _compare(tmp_path, "--paired", base, other)
    assert paired.exit_code == 0, paired.output
    note = (
        "prompt sets differ (base: 2, other: 3 prompts): each row's delta is over the "
        "prompts it shares with base"
    )
    assert f"note: {note}" in paired.stderr
    assert "a gap may be the prompts'" not in paired.stderr
    unpaired = _compare(tmp_path, base, other)
    assert "prompt sets differ (base: 2, other: 3 prompts): a gap may be the prompts'" in (
        unpaired.stderr
    )
    nan, nan2 = _unscored(("b",)), _unscored(("c",))
    assert comparability_notes([("nan", nan), ("nan2", nan2)], paired=True) == [
        "some images are unscored (nan: 4 of 6, nan2: 4 of 6 scored): each row's delta is "
        "over the images both it and nan scored"
    ]


def test_paired_markdown_says_ci95_is_a_half_width(tmp_path: Path):
    """compare.md read alone: a ci95 of 0.16 beside a delta of 0.12 could pass for the
    interval's lower end."""
    from dsharp.paired import PAIRED_LEGEND

    base, other = _write(tmp_path, "base", _result()), _write(tmp_path, "other", _result())
    assert _compare(tmp_path, "--paired", base, other).exit_code == 0
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert markdown.startswith(f"{PAIRED_LEGEND}\n\n| run | baseline |")
    assert "ci95: half-width of delta's 95% interval" in PAIRED_LEGEND
    assert _compare(tmp_path, base, other).exit_code == 0  # without --paired: no legend
    assert (tmp_path / "out" / "compare.md").read_text().startswith("| run |")
