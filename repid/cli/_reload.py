"""`--reload`: notice when a .py file under a directory is added, changed or removed.

A modification-time poll: no dependency, and cheap enough once a second for a project.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages", "build", "dist"})


def python_files(root: str) -> Iterator[str]:
    """Every .py file under `root`, skipping hidden, cache and virtualenv directories."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in SKIP_DIRS]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def snapshot(root: str) -> dict[str, int]:
    """Modification times of the .py files under `root`."""
    found = {}
    for path in python_files(root):
        try:
            found[path] = os.stat(path).st_mtime_ns
        except OSError:
            continue
    return found


def changed_file(before: dict[str, int], after: dict[str, int]) -> str | None:
    """A file added, removed or modified between two snapshots, if any."""
    for path, mtime in after.items():
        if before.get(path) != mtime:
            return path
    for path in before:
        if path not in after:
            return path
    return None
