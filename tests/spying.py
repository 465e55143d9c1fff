"""Recording what code under test hands a function it calls, for tests that check the
arguments (which trajectory comes first, which tensor carries gradients) rather than only
the final value, where a swapped argument could give the same number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any


def record_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Call]:
    """Wrap ``owner.name`` (a module's function, a class's method or an instance's) for the
    test, and return the list that each call's arguments and result are appended to."""
    calls: list[Call] = []
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls.append(Call(args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls
