"""Ctrl-C and SIGTERM during training: the first asks for a stop, a second Ctrl-C stops now."""

import signal

import pytest

from dsharp.interrupts import StopRequests


def test_first_signal_asks_a_second_ctrl_c_raises_and_handlers_come_back(capsys):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopRequests() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # what a scheduler sends before killing a job
        assert stop.requested
        assert "SIGTERM: stopping after this step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_without_a_signal_nothing_is_requested():
    with StopRequests() as stop:
        pass
    assert not stop.requested
