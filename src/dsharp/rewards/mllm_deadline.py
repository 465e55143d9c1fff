"""One request to the grader's server bounded as a whole, and given up on an interrupt.

httpx gives neither: its timeout is per read (a server that trickles its reply never trips
it) and a blocking read cannot be interrupted. So :func:`call_within` runs the request in a
daemon thread and stops waiting for it at the deadline or when the batch is stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.05  # how often a wait for a reply looks at its deadline and at an interrupt


class PastDeadline(Exception):
    """An attempt that had no complete reply within ``timeout_s``."""


class Aborted(Exception):
    """An attempt given up because the batch was interrupted."""


def call_within(
    call: Callable[[], Any],
    timeout_s: float,
    abort: threading.Event,
    slots: threading.Semaphore | None = None,
) -> Any:
    """``call()``'s result (or its exception), given up with :class:`PastDeadline` once
    ``timeout_s`` has passed, or with :class:`Aborted` as soon as ``abort`` is set.

    It runs in a daemon thread because neither can be had from httpx: its timeout is per read
    (a server that sends a byte now and then never trips it) and a blocking read cannot be
    interrupted. A request given up on ends on its own (httpx's timeouts, or the reply) in the
    background, and never keeps the process from exiting. ``slots`` holds one slot per
    request until the request itself ends, so that abandoned requests still count against
    ``max_concurrency`` and cannot pile up on a slow server."""
    if slots is not None:
        while not slots.acquire(timeout=POLL_S):  # a slot frees when a request ends
            if abort.is_set():
                raise Aborted
    done = threading.Event()
    result: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            result.append((True, call()))
        except BaseException as e:  # handed to the waiting thread, which raises it
            result.append((False, e))
        finally:
            if slots is not None:
                slots.release()
            done.set()

    threading.Thread(target=run, name="dsharp-mllm-request", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(min(POLL_S, max(0.0, deadline - time.monotonic()))):
        if abort.is_set():
            raise Aborted
        if time.monotonic() >= deadline:
            raise PastDeadline
    ok, value = result[0]
    if ok:
        return value
    raise value
