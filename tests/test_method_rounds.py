"""A round of samples in progress kept in a checkpoint (dsharp.method_rounds)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dsharp.method_rounds import load_round, round_file, save_round


class _Rounds:
    """A stand-in for a round method: keeps whatever it is given back."""

    def __init__(self, state=None):
        self.state, self.loaded = state, None

    def round_state(self):
        return self.state

    def load_round_state(self, state):
        self.loaded = state


def test_a_round_in_progress_is_saved_per_process_and_given_back(tmp_path):
    state = {"plan": [torch.tensor([[1, 2]])], "rounds": 3}
    save_round(_Rounds({"rounds": 0}), tmp_path, 0)
    save_round(_Rounds(state), tmp_path, 1)
    assert round_file(tmp_path, 1).is_file() and not round_file(tmp_path, 2).exists()
    method = _Rounds()
    assert load_round(method, tmp_path, 1, 2, "cpu")
    assert method.loaded["rounds"] == 3 and torch.equal(method.loaded["plan"][0], state["plan"][0])


def test_between_rounds_or_without_rounds_nothing_is_kept(tmp_path):
    save_round(_Rounds(None), tmp_path, 0)
    save_round(SimpleNamespace(), tmp_path, 0)  # a method without rounds
    assert list(tmp_path.iterdir()) == []
    assert not load_round(_Rounds(), tmp_path, 0, 1, "cpu")


def test_a_damaged_round_file_names_it_and_the_way_on(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    round_file(checkpoint, 0).write_bytes(b"not a torch file")
    with pytest.raises(ValueError) as err:
        load_round(_Rounds(), checkpoint, 0, 1, "cpu")
    message = str(err.value)
    assert message.startswith(f"train.resume: {round_file(checkpoint, 0)}: cannot be loaded (")
    assert "\n" not in message and message.endswith("train again in a new output_dir)")


@pytest.mark.parametrize("process", [0, 1])
def test_a_round_file_missing_for_one_process_of_two_is_refused_on_both(tmp_path, process):
    """A copy that missed one process's round: that process would sample a fresh round and
    wait in its gather for the other, which goes on with its kept round (a hang)."""
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    save_round(_Rounds({"rounds": 1}), checkpoint, 0)
    with pytest.raises(ValueError) as err:
        load_round(_Rounds(), checkpoint, process, 2, "cpu")
    message = str(err.value)
    assert message.startswith(f"train.resume: {round_file(checkpoint, 1)} is missing, though ")
    assert "method_round_0.pt is there" in message and "\n" not in message
