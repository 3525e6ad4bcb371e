"""Depends: a value computed for the actor per message, FastAPI style."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Depends:
    """Marks an actor parameter whose value comes from calling `fn` for each message.

    `fn` may be sync or async and may itself take `Depends(...)` or `MessageDependency`
    parameters. Sync functions run in a thread (`run_in_process=True`: in a process).
    `override(other)` swaps the function, e.g. in tests.
    """

    __slots__ = ("_fn", "_override", "run_in_process")

    def __init__(self, fn: Callable[..., Any], *, run_in_process: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"Depends takes a function, not {fn!r}")
        self._fn = fn
        self._override: Callable[..., Any] | None = None
        self.run_in_process = run_in_process

    def __repr__(self) -> str:
        return f"Depends({getattr(self.fn, '__qualname__', self.fn)!r})"

    @property
    def fn(self) -> Callable[..., Any]:
        """The function in force: the override if set, else the original."""
        return self._override or self._fn

    def override(self, fn: Callable[..., Any] | None) -> None:
        """Use `fn` instead of the original function (None restores it)."""
        self._override = fn
