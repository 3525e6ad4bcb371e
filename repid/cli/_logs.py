"""Logging set-up of the `repid` command: everything repid logs is under the `repid` logger."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """For `repid worker`: log to stderr at `level`, with the process id in each line."""
    logging.basicConfig(level=level.upper(), format=FORMAT)


def quiet_logging() -> None:
    """For the one-shot commands: repid's warnings only, and nothing from other libraries
    (a broker client's own connection errors would repeat the one-line error)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    ours = logging.getLogger("repid")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        ours.addHandler(handler)
