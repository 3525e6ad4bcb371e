"""`Config`: repid 1.x's process-wide settings, of which the converter is kept.

`Config.CONVERTER = BasicConverter` (before the actors are registered) turns pydantic
validation off for every actor registered without its own `converter=`. 1.x's other
settings (the serializer and the data classes) are not settings here: assigning one raises
an error saying so instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repid.converter import ConverterT, DefaultConverter


class _Settings(type):
    """Refuses assignments to names that are not settings (a typo, or a 1.x setting that
    would do nothing)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if name.isupper() and not hasattr(cls, name):
            settings = sorted(n for n in vars(cls) if n.isupper())
            raise AttributeError(
                f"Config.{name} is not a setting of repid; the settings are {settings}. "
                "A custom serializer or data class is not supported: encode arguments "
                "yourself, or give actors a converter (Config.CONVERTER or converter=)")
        super().__setattr__(name, value)


class Config(metaclass=_Settings):
    """Process-wide settings, read when an actor is registered."""

    #: the converter class of actors registered without `converter=`; `DefaultConverter`
    #: validates with pydantic when it is installed, `BasicConverter` never does
    CONVERTER: Callable[..., ConverterT] = DefaultConverter
