"""Kept for one release: the repid 1.x subscriber adapter moved to `repid.middleware._v1`.

Import from `repid.middleware._v1`; this module only re-exports its names.
"""

from repid.middleware._v1 import (
    EVENTS,
    Subscriber,
    collect,
    is_async_callable,
    make_subscriber,
    off_loop,
    parse_name,
    v1_values,
)

__all__ = ["EVENTS", "Subscriber", "collect", "is_async_callable", "make_subscriber",
           "off_loop", "parse_name", "v1_values"]
