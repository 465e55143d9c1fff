"""transformers' and diffusers' per-load progress bars: off while dsharp loads a model, and
the caller's settings as they were after (the Python API printed a "Loading weights" bar for
each text encoder and reward model, where ``dsharp`` prints none)."""

from __future__ import annotations

import threading

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

import dsharp
from dsharp.library_bars import library_bars_off
from dsharp.rewards._weights import from_pretrained


def _bars() -> tuple[bool, bool]:
    return (
        transformers_logging.is_progress_bar_enabled(),
        diffusers_logging.is_progress_bar_enabled(),
    )


@pytest.fixture
def bars_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both libraries' bars on, as in a notebook (the test process may have imported
    transformers with the hub's bars off), and no DSHARP_VERBOSE."""
    monkeypatch.delenv("DSHARP_VERBOSE", raising=False)
    monkeypatch.setattr(transformers_logging, "_tqdm_active", True)
    monkeypatch.setattr(diffusers_logging, "_tqdm_active", True)


def test_load_model_prints_no_library_bar_and_leaves_them_on(bars_on, tiny_sd_dir, capsys):
    capsys.readouterr()
    dsharp.load_model(tiny_sd_dir, device="cpu")
    assert "Loading weights" not in capsys.readouterr().err
    assert _bars() == (True, True)


def test_a_reward_model_loads_with_the_bars_off_and_back_after(bars_on, tmp_path):
    seen = []
    from_pretrained("pickscore", "model", lambda target: seen.append(_bars()), str(tmp_path))
    assert seen == [(False, False)]
    assert _bars() == (True, True)


def test_bars_the_caller_turned_off_stay_off_and_an_error_still_restores(bars_on, monkeypatch):
    monkeypatch.setattr(diffusers_logging, "_tqdm_active", False)
    with pytest.raises(RuntimeError, match="load failed"), library_bars_off():
        assert _bars() == (False, False)
        raise RuntimeError("load failed")
    assert _bars() == (True, False)


def test_dsharp_verbose_keeps_the_bars_as_for_the_command(bars_on, monkeypatch):
    monkeypatch.setenv("DSHARP_VERBOSE", "1")
    with library_bars_off():
        assert _bars() == (True, True)


def test_loads_that_overlap_in_two_threads_leave_the_bars_as_the_caller_had_them(bars_on):
    """Each load put back the flag it found: where the first of two overlapping loads (one
    per thread) finished first, the second put back its "off" and the bars stayed off."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first() -> None:
        with library_bars_off():
            first_in.set()
            second_in.wait(5)
        seen.append(_bars())  # the second still loads: still off
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with library_bars_off():
            second_in.set()
            first_out.wait(5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [(False, False)]
    assert _bars() == (True, True)
