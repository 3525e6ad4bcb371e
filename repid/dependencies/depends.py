"""Depends: a value computed for the actor per message, FastAPI style."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Depends:
    """Marks an actor parameter whose value comes from calling `fn` for each message.

    `fn` may be sync or async and may itself take `Depends(...)` or `MessageDependency`
    parameters. Sync functions run in a thread (`run_in_process=True`: in a process).
    `override(other)` swaps the function, e.g. in tests; `override(other,
    run_in_process=True)` runs the replacement in a process.
    """

    __slots__ = ("_fn", "_in_process", "_override", "_override_in_process")

    def __init__(self, fn: Callable[..., Any], *, run_in_process: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"Depends takes a function, not {fn!r}")
        self._fn = fn
        self._in_process = run_in_process
        self._override: Callable[..., Any] | None = None
        self._override_in_process = False

    def __repr__(self) -> str:
        return f"Depends({getattr(self.fn, '__qualname__', self.fn)!r})"

    @property
    def fn(self) -> Callable[..., Any]:
        """The function in force: the override if set, else the original."""
        return self._override or self._fn

    @property
    def run_in_process(self) -> bool:
        """Whether the function in force runs in a process (when it is sync)."""
        return self._override_in_process if self._override is not None else self._in_process

    def override(self, fn: Callable[..., Any] | None, *, run_in_process: bool = False) -> None:
        """Use `fn` instead of the original function, in a process if `run_in_process`
        (None restores the original)."""
        if fn is not None and not callable(fn):
            raise TypeError(f"Depends.override takes a function or None, not {fn!r}")
        self._override = fn
        self._override_in_process = run_in_process
