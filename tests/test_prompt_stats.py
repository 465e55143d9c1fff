"""DDPO's cross-round per-prompt reward statistics (ddpo-pytorch's tracker)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dsharp.methods.prompt_stats import PromptStatTracker


def _alone(prompts, rewards):
    return prompts, rewards


def _adv(tracker, rewards, prompts, gather=_alone):
    return tracker.advantages(torch.tensor(rewards), prompts, gather=gather).tolist()


SD3 = math.sqrt(8 / 3)  # population std of {1, 3, 5} and of {3, 5, 7}


def test_a_prompt_uses_its_buffer_once_it_holds_min_count_rewards_and_the_round_before():
    tracker = PromptStatTracker(buffer_size=3, min_count=2)
    # round 1: "a" holds 2 rewards (mean 2, std 1); "b" holds 1, so the round's {1, 3, 5}
    first = _adv(tracker, [1.0, 3.0, 5.0], ["a", "a", "b"])
    assert first == pytest.approx([-1.0, 1.0, 2 / SD3], rel=1e-5)
    # round 2: "a" now holds {1, 3, 5}, pooled across the rounds
    assert _adv(tracker, [5.0], ["a"]) == pytest.approx([2 / SD3], rel=1e-5)
    # round 3: the buffer keeps the last 3 ({3, 5, 7}: the 1 is gone), mean 5
    assert _adv(tracker, [7.0], ["a"]) == pytest.approx([2 / SD3], rel=1e-5)
    assert list(tracker.buffers["a"]) == [3.0, 5.0, 7.0]
    assert list(tracker.buffers["b"]) == [5.0]


def test_unscored_samples_get_nan_and_enter_no_statistic():
    tracker = PromptStatTracker(buffer_size=4, min_count=4)
    out = _adv(tracker, [1.0, float("nan"), 3.0], ["a", "a", "a"])
    assert out[0] == pytest.approx(-1.0, rel=1e-5) and out[2] == pytest.approx(1.0, rel=1e-5)
    assert math.isnan(out[1])
    assert list(tracker.buffers["a"]) == [1.0, 3.0]
    assert all(math.isnan(v) for v in _adv(tracker, [float("nan")], ["b"]))
    assert "b" not in tracker.buffers


def test_the_round_is_gathered_across_processes_before_the_update():
    """Another process's samples of the same prompt enter its buffer and the round's
    statistics; only this process's samples get advantages."""
    tracker = PromptStatTracker(buffer_size=4, min_count=3)

    def with_other_process(prompts, rewards):
        return [*prompts, "a", "c"], [*rewards, 5.0, 9.0]

    out = _adv(tracker, [1.0, 3.0], ["a", "a"], gather=with_other_process)
    assert out == pytest.approx([-2 / SD3, 0.0], abs=1e-5)  # "a" holds {1, 3, 5}
    assert list(tracker.buffers["c"]) == [9.0]


def test_the_state_round_trips_through_json_and_continues_alike():
    tracker = PromptStatTracker(buffer_size=3, min_count=2)
    _adv(tracker, [1.0, 2.0, 4.0, 8.0], ["a", "a", "b", "c"])
    restored = PromptStatTracker(buffer_size=3, min_count=2)
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    nxt = ([3.0, 16.0], ["a", "b"])
    assert _adv(restored, *nxt) == _adv(tracker, *nxt)
    with pytest.raises(ValueError, match="method_state.buffers: expected a mapping"):
        restored.load_state_dict({"buffers": [1, 2]})


@pytest.mark.parametrize(("size", "count"), [(0, 1), (4, 0), (4, 5)])
def test_impossible_sizes_are_refused(size, count):
    with pytest.raises(ValueError, match="need 1 <= min_count <= buffer_size"):
        PromptStatTracker(size, count)
