"""A round of samples in progress kept in a checkpoint (dsharp.method_rounds)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dsharp.method_rounds import load_round, round_file, save_round
from older_rounds import older_round


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


def test_a_round_kept_in_an_older_format_is_left_unread_and_said(tmp_path):
    """A round file an older dsharp pickled (its classes) could only be read by an unpickler
    that runs code: it is not loaded, as a checkpoint without a round, and the reason names
    it (the resume's note), on every process alike."""
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    torch.save(older_round(), round_file(checkpoint, 1))
    save_round(_Rounds({"rounds": 1}), checkpoint, 0)  # one process's in today's format
    for process in (0, 1):
        method = _Rounds()
        outcome = load_round(method, checkpoint, process, 2, "cpu")
        assert not outcome and method.loaded is None
        assert outcome.unread == (
            f"{round_file(checkpoint, 1)} keeps the round in an older dsharp's format, "
            "which is not loaded"
        )


def test_a_round_of_another_format_version_is_left_unread(tmp_path):
    torch.save({"format": 99, "state": {"rounds": 1}}, round_file(tmp_path, 0))
    method = _Rounds()
    outcome = load_round(method, tmp_path, 0, 1, "cpu")
    assert not outcome and method.loaded is None
    assert outcome.unread.startswith(f"{round_file(tmp_path, 0)} keeps the round in format 99, ")


class _RunsCode:
    """Unpickled, it creates a file: what a checkpoint someone shares could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_round_file_that_would_run_code_on_load_is_refused_without_running_it(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"rounds": 1, "payload": _RunsCode(marker)}, round_file(checkpoint, 0))
    method = _Rounds()
    with pytest.raises(ValueError) as err:
        load_round(method, checkpoint, 0, 1, "cpu")
    assert not marker.exists() and method.loaded is None
    message = str(err.value)
    assert message.startswith(f"train.resume: {round_file(checkpoint, 0)}: cannot be loaded (")
    assert f"it pickles {open.__module__}.open, " in message and "\n" not in message


def test_a_round_file_without_a_format_version_is_refused(tmp_path):
    torch.save({"rounds": 1}, round_file(tmp_path, 0))  # tensors alone, but not dsharp's layout
    with pytest.raises(ValueError, match="no format version: not a round file of dsharp's"):
        load_round(_Rounds(), tmp_path, 0, 1, "cpu")


def test_a_sampled_round_with_sdxl_conditioning_comes_back_from_plain_values(tmp_path):
    """SDXL's extra conditioning (pooled embeddings, time ids) and no negative prompt."""
    from dsharp.methods.ddpo import SampledRound

    rnd = SampledRound.from_plain(older_round()["round"].to_plain())
    rnd.cond.added = {"text_embeds": torch.rand(2, 5), "time_ids": torch.rand(2, 6)}
    rnd.uncond = None
    torch.save(rnd.to_plain(), tmp_path / "round.pt")
    back = SampledRound.from_plain(torch.load(tmp_path / "round.pt", weights_only=True))
    assert back.prompts == rnd.prompts and back.uncond is None
    assert back.cond.added.keys() == rnd.cond.added.keys()
    assert all(torch.equal(back.cond.added[k], v) for k, v in rnd.cond.added.items())
    assert torch.equal(back.latents, rnd.latents) and torch.equal(back.rewards, rnd.rewards)


@pytest.mark.parametrize("process", [0, 1])
def test_a_round_is_given_back_on_the_device_of_one_of_several_cpu_processes(tmp_path, process):
    """Under a launch of several CPU processes accelerate's device is ``cpu:<process>``,
    a location torch.load cannot restore to: every resume inside a round failed there."""
    save_round(_Rounds({"plan": [torch.tensor([[1]])], "rounds": 1}), tmp_path, process)
    save_round(_Rounds({"rounds": 2}), tmp_path, 1 - process)
    method = _Rounds()
    assert load_round(method, tmp_path, process, 2, torch.device("cpu", process))
    assert method.loaded["rounds"] == 1 and method.loaded["plan"][0].device.type == "cpu"
