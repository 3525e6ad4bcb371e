"""Type hints of a function, resolved one parameter at a time.

`typing.get_type_hints` fails as a whole when one string annotation cannot be evaluated
(a name local to a function, under `from __future__ import annotations`); here only that
parameter falls back to its raw annotation and the others keep their types.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints


def hints_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> its resolved annotation (or the raw one if it cannot be)."""
    with contextlib.suppress(Exception):
        return get_type_hints(fn, include_extras=True)
    target = inspect.unwrap(fn)
    namespace = dict(getattr(target, "__globals__", {}))
    hints: dict[str, Any] = {}
    for name, annotation in getattr(target, "__annotations__", {}).items():
        if isinstance(annotation, str):
            with contextlib.suppress(Exception):  # the code's own hints, as typing does
                annotation = eval(annotation, namespace)
        hints[name] = annotation
    return hints
