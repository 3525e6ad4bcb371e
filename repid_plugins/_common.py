"""Small helpers shared by the plugins; no optional dependency is imported here."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def error_type(exc: BaseException) -> str:
    """The exception's type as a low-cardinality label: `ValueError`, `myapp.errors.Boom`."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class BoundedMap(Generic[K, V]):
    """A dict that forgets its oldest entries past `limit`, so per-message state kept
    between hooks (a run and the settle that follows) cannot grow without bound."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        if len(data) > self.limit:
            data.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
