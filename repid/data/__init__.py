"""Plain data shared by the core and the brokers: keys, parameters, buckets."""

from repid.data.buckets import ArgsBucket, BucketT, ResultBucket, decode_bucket
from repid.data.category import MessageCategory
from repid.data.key import RoutingKey
from repid.data.parameters import (
    DelayProperties,
    Parameters,
    ResultProperties,
    RetriesProperties,
    utcnow,
)
from repid.data.priorities import PrioritiesT
from repid.data.stash import Stash, StashKey

__all__ = [
    "ArgsBucket",
    "BucketT",
    "DelayProperties",
    "MessageCategory",
    "Parameters",
    "PrioritiesT",
    "ResultBucket",
    "ResultProperties",
    "RetriesProperties",
    "RoutingKey",
    "Stash",
    "StashKey",
    "decode_bucket",
    "utcnow",
]
