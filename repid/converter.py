"""Converters: from a message's payload to an actor's arguments, and from its return value
to JSON.

As in repid 1.x, `DefaultConverter(fn)` gives a `PydanticConverter` when pydantic is
installed and a `BasicConverter` otherwise. Both map the payload's JSON object to the
actor's parameters by name (a JSON array: in order), refuse a payload missing a required
argument, and ignore arguments the actor does not take, with a debug log naming them (a
producer deployed before its workers must not dead-letter their jobs); an actor taking
`**kwargs` receives them instead. The pydantic converter also validates and coerces each
argument by its type hint (`"1"` becomes `1` for an `int`), takes a `pydantic.Field`
default (`Field(alias="activity")`: the argument is sent as `activity`), and passes the
return value through its return annotation, so a `-> Model` actor's result keeps only the
model's fields.

An `ArgumentsError` names the actor, the arguments, their types and what was expected, but
never an argument's value (it may be a secret, and errors end up in logs and results):
pydantic's errors are rebuilt without their `input_value`, and not chained.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

from repid.dependencies.hints import hints_of
from repid.dependencies.resolver import Injection, injections_of
from repid.errors import PayloadDecodeError
from repid.serializer import to_json

logger = logging.getLogger("repid.converter")

#: positional arguments and keyword arguments of one call
Params = tuple[list[Any], dict[str, Any]]


class ArgumentsError(PayloadDecodeError):
    """The payload's arguments do not fit the actor's parameters."""


def describe_invalid(exc: Exception, data: dict[str, Any], whole: str = "arguments") -> str:
    """What was wrong, without any value: `'n' (given str): Input should be a valid
    integer [int_parsing]` for each error of a pydantic ValidationError (`whole` names
    an error about the value as a whole)."""
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
        where = ".".join(str(part) for part in loc) or whole
        parts.append(f"{where!r}{given}: {error.get('msg', '')} [{error.get('type', '')}]")
    return "; ".join(parts) or type(exc).__name__


class ConverterT(Protocol):
    """Turns a payload into call arguments and a return value into a JSON string.

    A converter class is built as `cls(fn, skip)` when it takes two arguments (`skip`:
    the names of the parameters repid injects), else as `cls(fn)`, like repid 1.x's."""

    def convert_inputs(self, data: str) -> Params: ...

    def convert_outputs(self, data: Any) -> str: ...


def make_converter(cls: Callable[..., ConverterT], fn: Callable[..., Any],
                   skip: frozenset[str]) -> ConverterT:
    """Build the converter of one actor: `cls(fn, skip)`, or `cls(fn)` for a converter
    written for repid 1.x, which takes the function alone."""
    try:
        inspect.signature(cls).bind(fn, skip)
    except TypeError:
        return cls(fn)
    except ValueError:  # no signature to read (a builtin): the current form
        pass
    return cls(fn, skip)


def pydantic_installed() -> bool:
    return importlib.util.find_spec("pydantic") is not None


def _decode(data: str) -> Any:
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PayloadDecodeError(f"payload is not JSON: {exc}") from exc


class DefaultConverter:
    """`DefaultConverter(fn)` is a `PydanticConverter` when pydantic is installed, a
    `BasicConverter` otherwise (as in repid 1.x).

    `skip` names the parameters filled by dependency injection, not by the payload;
    None works them out from `fn`.
    """

    def __new__(cls, fn: Callable[..., Any],
                skip: Collection[str] | None = None) -> DefaultConverter:
        chosen: type[DefaultConverter] = cls
        if cls is DefaultConverter:
            chosen = PydanticConverter if pydantic_installed() else BasicConverter
        return object.__new__(chosen)

    def __init__(self, fn: Callable[..., Any], skip: Collection[str] | None = None) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.injections: dict[str, Injection] = {i.name: i for i in injections_of(fn)}
        skipped = frozenset(self.injections) if skip is None else frozenset(skip)
        signature = inspect.signature(fn)
        self.params = [p for p in signature.parameters.values() if p.name not in skipped
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        self.positional_only = [p.name for p in self.params if p.kind is p.POSITIONAL_ONLY]
        self.var_keyword = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        self.names = frozenset(p.name for p in self.params)
        #: parameter name -> the keys the payload may give it under (its aliases, if any)
        self.keys: dict[str, tuple[str, ...]] = {p.name: (p.name,) for p in self.params}
        self.required = frozenset(p.name for p in self.params if p.default is p.empty)
        self._known = frozenset(self.names)

    @property
    def dependencies(self) -> dict[str, Injection]:
        """The parameters repid injects (a dependency or the message), by name."""
        return self.injections

    def convert_inputs(self, data: str) -> Params:
        given = self._arguments(_decode(data))
        if not given and not self.params:  # an actor that takes nothing, given nothing
            return [], {}
        return self._call_args(self._validate(given), given)

    def convert_outputs(self, data: Any) -> str:
        return to_json(data)

    def _arguments(self, data: Any) -> dict[str, Any]:
        """The payload as a dict of payload keys, checked for missing arguments."""
        if isinstance(data, list):
            if len(data) > len(self.params):
                raise ArgumentsError(f"{self.name} takes {len(self.params)} arguments, "
                                     f"the job gave {len(data)}")
            data = dict(zip((self.keys[p.name][0] for p in self.params), data, strict=False))
        if not isinstance(data, dict):
            raise ArgumentsError(f"payload must be a JSON object of arguments, got "
                                 f"{type(data).__name__}")
        missing = self.required and [self.keys[name][0] for name in self.required
                                     if not any(key in data for key in self.keys[name])]
        if missing:
            raise ArgumentsError(f"{self.name} is missing required arguments "
                                 f"{sorted(missing)}")
        return data

    def _validate(self, given: dict[str, Any]) -> dict[str, Any]:
        """Parameter name -> value, for the parameters the payload gives."""
        return {name: given[name] for name in self.names if name in given}

    def _call_args(self, values: dict[str, Any], given: dict[str, Any]) -> Params:
        """Positional-only parameters in order, the rest by name; payload keys the actor
        does not take go to its `**kwargs`, or are dropped with a debug log."""
        unknown = given.keys() - self._known
        if unknown:
            if self.var_keyword:
                values.update((key, given[key]) for key in unknown)
            else:
                logger.debug("%s ignores arguments it does not take: %s (it takes %s)",
                             self.name, sorted(unknown), sorted(self._known))
        if not self.positional_only:
            return [], values
        args = [values.pop(name) for name in self.positional_only if name in values]
        return args, values


class BasicConverter(DefaultConverter):
    """Arguments by name, checked for presence only: no type validation."""


class PydanticConverter(DefaultConverter):
    """Arguments validated and coerced by their type hints, results by the return
    annotation (needs pydantic: `pip install 'repid[pydantic]'`)."""

    def __init__(self, fn: Callable[..., Any], skip: Collection[str] | None = None) -> None:
        if not pydantic_installed():
            raise ImportError("PydanticConverter needs pydantic: pip install "
                              "'repid[pydantic]', or use BasicConverter")
        super().__init__(fn, skip)
        hints = hints_of(fn)
        self.model = self._input_model(hints)
        self.output = self._output_adapter(hints)

    def _input_model(self, hints: dict[str, Any]) -> Any:
        import pydantic

        fields: dict[str, Any] = {}
        for p in self.params:
            annotation = hints.get(p.name, Any)
            fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
        if not fields:
            return None
        try:
            model = pydantic.create_model(
                f"{self.name}Args", __config__=pydantic.ConfigDict(
                    arbitrary_types_allowed=True, extra="ignore"), **fields)
        except Exception:  # a hint pydantic cannot handle: fall back to name checks
            return None
        self.keys = {name: _payload_keys(name, info)
                     for name, info in model.model_fields.items()}
        self.required = frozenset(name for name, info in model.model_fields.items()
                                  if info.is_required())
        self._known = frozenset(key for keys in self.keys.values() for key in keys)
        return model

    def _output_adapter(self, hints: dict[str, Any]) -> Any:
        """A pydantic TypeAdapter of the return annotation; None when there is none (or
        it is None) or pydantic cannot handle it: the value is then encoded as it is."""
        import pydantic

        annotation = hints.get("return", inspect.Signature.empty)
        if annotation in (inspect.Signature.empty, None, type(None)):
            return None
        try:
            return pydantic.TypeAdapter(annotation)
        except Exception:  # e.g. a class pydantic has no schema for
            return None

    def _validate(self, given: dict[str, Any]) -> dict[str, Any]:
        if self.model is None:
            return super()._validate(given)
        try:
            validated = self.model.model_validate(given)
        except Exception as exc:
            raise ArgumentsError(f"arguments of {self.name} are invalid: "
                                 f"{describe_invalid(exc, given)}") from None
        return {name: getattr(validated, name) for name in self.names}

    def convert_outputs(self, data: Any) -> str:
        if self.output is None:
            return to_json(data)
        try:
            validated = self.output.validate_python(data)
        except Exception as exc:
            raise ValueError(f"the result of {self.name} does not fit its return "
                             f"annotation: {describe_invalid(exc, {}, 'result')}") from None
        try:
            encoded: bytes = self.output.dump_json(validated)
        except Exception:  # pydantic cannot encode it: the plain encoder names the type
            return to_json(validated)
        return encoded.decode()


def _payload_keys(name: str, info: Any) -> tuple[str, ...]:
    """The keys a pydantic field is read from: its validation alias (each choice of an
    `AliasChoices`, the first step of an `AliasPath`), else its alias, else its name."""
    import pydantic

    found = info.validation_alias
    if isinstance(found, str):
        return (found,)
    if isinstance(found, pydantic.AliasPath):
        return (str(found.path[0]),)
    if isinstance(found, pydantic.AliasChoices):
        return tuple(str(c if isinstance(c, str) else c.path[0]) for c in found.choices)
    return (info.alias or name,)
