"""In-process CLI runs change process-wide state, as a program may: undo it after each test."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore the cwd, sys.path, DSN variables, signal handlers and logging handlers."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("REPID_BROKER_DSN", "REPID_ARGS_BUCKET_DSN", "REPID_RESULTS_BUCKET_DSN"):
        monkeypatch.delenv(name, raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    loggers = [logging.getLogger(), logging.getLogger("repid")]
    logging_handlers = [list(logger.handlers) for logger in loggers]
    levels = [logger.level for logger in loggers]  # `repid worker` sets the root's level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    for logger, saved, level in zip(loggers, logging_handlers, levels, strict=True):
        logger.handlers[:] = saved
        logger.setLevel(level)
