"""Converters: from a message's payload to an actor's arguments, and from its return value
to JSON.

The default converter maps the payload's JSON object to the actor's parameters by name
and validates each against its type hint: with pydantic when it is installed (values are
coerced, e.g. "1" to 1 for an `int`), otherwise by checking that required arguments are
present and no unknown ones are given.

An `ArgumentsError` names the actor, the arguments, their types and what was expected, but
never an argument's value (it may be a secret, and errors end up in logs and results):
pydantic's errors are rebuilt without their `input_value`, and not chained.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, Protocol

from repid.dependencies.hints import hints_of
from repid.errors import PayloadDecodeError
from repid.serializer import to_json


class ArgumentsError(PayloadDecodeError):
    """The payload's arguments do not fit the actor's parameters."""


def describe_invalid(exc: Exception, data: dict[str, Any]) -> str:
    """What was wrong, without any value: `'n' (given str): Input should be a valid
    integer [int_parsing]` for each error of a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__  # its text may quote a value: not shown
    try:
        found = errors(include_input=False, include_url=False, include_context=False)
    except TypeError:  # an `errors` that is not pydantic's
        return type(exc).__name__
    parts = []
    for error in found:
        loc = tuple(error.get("loc", ()))
        given = (f" (given {type(data[loc[0]]).__name__})"
                 if loc and isinstance(loc[0], str) and loc[0] in data else "")
        where = ".".join(str(part) for part in loc) or "arguments"
        parts.append(f"{where!r}{given}: {error.get('msg', '')} [{error.get('type', '')}]")
    return "; ".join(parts) or type(exc).__name__


class ConverterT(Protocol):
    """Turns a payload into call arguments and a return value into a JSON string."""

    def __init__(self, fn: Callable[..., Any], skip: frozenset[str]) -> None: ...

    def convert_inputs(self, payload: str) -> tuple[list[Any], dict[str, Any]]: ...

    def convert_outputs(self, value: Any) -> str: ...


class DefaultConverter:
    """By-name argument mapping, validated by type hints (pydantic when installed).

    `skip` names the parameters filled by dependency injection, not by the payload.
    """

    def __init__(self, fn: Callable[..., Any], skip: frozenset[str] = frozenset()) -> None:
        self.name = getattr(fn, "__qualname__", repr(fn))
        signature = inspect.signature(fn)
        self.params = [p for p in signature.parameters.values() if p.name not in skip
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        self.var_keyword = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        self.names = frozenset(p.name for p in self.params)
        self.required = frozenset(p.name for p in self.params if p.default is p.empty)
        self.model = self._pydantic_model(fn)

    def _pydantic_model(self, fn: Callable[..., Any]) -> Any:
        try:
            import pydantic
        except ImportError:
            return None
        hints = hints_of(fn)
        fields: dict[str, Any] = {}
        for p in self.params:
            annotation = hints.get(p.name, Any)
            fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
        if not fields:
            return None
        try:
            return pydantic.create_model(
                f"{self.name}Args", __config__=pydantic.ConfigDict(
                    arbitrary_types_allowed=True, extra="allow"), **fields)
        except Exception:  # a hint pydantic cannot handle: fall back to name checks
            return None

    def convert_inputs(self, payload: str) -> tuple[list[Any], dict[str, Any]]:
        if not payload:
            data: Any = {}
        else:
            try:
                data = json.loads(payload)
            except ValueError as exc:
                raise PayloadDecodeError(f"payload is not JSON: {exc}") from exc
        if isinstance(data, list):
            if len(data) > len(self.params):
                raise ArgumentsError(f"{self.name} takes {len(self.params)} arguments, "
                                     f"the job gave {len(data)}")
            data = dict(zip((p.name for p in self.params), data, strict=False))
        if not isinstance(data, dict):
            raise ArgumentsError(f"payload must be a JSON object of arguments, got "
                                 f"{type(data).__name__}")
        missing = self.required - data.keys()
        if missing:
            raise ArgumentsError(f"{self.name} is missing required arguments "
                                 f"{sorted(missing)}")
        unknown = data.keys() - self.names
        if unknown and not self.var_keyword:
            raise ArgumentsError(f"{self.name} got unknown arguments {sorted(unknown)}; it "
                                 f"takes {sorted(self.names)}")
        if self.model is not None:
            try:
                validated = self.model.model_validate(data)
            except Exception as exc:
                raise ArgumentsError(f"arguments of {self.name} are invalid: "
                                     f"{describe_invalid(exc, data)}") from None
            kwargs = {name: getattr(validated, name) for name in self.names}
            kwargs.update({k: v for k, v in data.items() if k in unknown})
            return [], kwargs
        return [], data

    def convert_outputs(self, value: Any) -> str:
        return to_json(value)
