"""Small helpers shared by the plugins; no optional dependency is imported here."""

from __future__ import annotations


def error_type(exc: BaseException) -> str:
    """The exception's type as a low-cardinality label: `ValueError`, `myapp.errors.Boom`."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
