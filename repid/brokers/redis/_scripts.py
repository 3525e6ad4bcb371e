"""The Lua scripts that change a message's state, loaded from `lua/` and run atomically.

Every state change of a message (enqueue, take, ack, nack, reject, requeue, release, the
return of an expired lease, the promotion of a due delayed message) is one script run, so
Redis applies it whole or not at all: there is no moment at which a crash leaves a message
in no structure. Times are the Redis server's clock (`TIME`), in milliseconds, except a
message's ready time, which the producer computes. What each script takes and returns is
written at the top of its file.

A script is assembled once, at import: a header naming the queue's keys (generated from
`keys.QueueKey`, so the Lua never writes a KEYS index) and the constants below, then the
shared parts it needs (`base.lua`, `common.lua`), then its own file. A lease is short (the
broker's `lease_time`) and the consumer holding the message extends it (EXTEND) while the
job runs, so a dead worker's messages come back within a lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

from repid.brokers.redis._client import AnyRedis, CommandHead, Producer
from repid.brokers.redis._keys import ENQUEUE_KEYS, QueueKey, lua_header

#: at most this many wake-up tokens wait in a queue's wake list
WAKE_TOKENS_MAX = 64

#: the option of redis-py's `execute_command` that reads one reply without decoding it
UNDECODED: dict[str, Any] = {NEVER_DECODE: True}

_LUA = resources.files("repid.brokers.redis") / "lua"


def _read(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text(encoding="utf-8")


def assemble(name: str, parts: Sequence[str], keys: int = len(QueueKey)) -> str:
    """The source of script `name`: the header for its first `keys` keys and the
    constants, then the shared `parts`, then `lua/<name>.lua`."""
    header = lua_header(keys) + f"local WAKE_TOKENS_MAX = {WAKE_TOKENS_MAX}\n"
    return "\n".join([header, *(_read(part) for part in parts), _read(name)])


class Script:
    """A Lua script run by its SHA1; when Redis does not have it (NOSCRIPT: a restarted
    server or cluster node), run once by its source with EVAL, which loads it into the
    server that ran it (on a cluster, the node of the script's keys, whatever the state of
    the other nodes)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: AnyRedis | Producer, keys: Sequence[str | bytes],
                       args: Sequence[str | bytes | int | float], *, raw: bool = False) -> Any:
        """Run the script (by its source after a Redis restart: see the class docstring).

        `raw`: the reply's strings stay bytes (only with a client, not a `Producer`), for
        replies that may carry text that is not UTF-8."""
        options = UNDECODED if raw else {}
        try:
            return await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "EVALSHA", self.sha, len(keys), *keys, *args, **options)
        except NoScriptError:
            return await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "EVAL", self.source, len(keys), *keys, *args, **options)

    def head(self, keys: Sequence[str], *args: str) -> CommandHead:
        """The start of a run with these keys and first arguments, packed once (for a
        caller that runs the script with them again and again: `run_with_head`)."""
        return CommandHead("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run_with_head(self, client: Producer, head: CommandHead,
                            args: Sequence[str | bytes]) -> Any:
        """Run the script from `head` (made by `head`), with `args` after it."""
        try:
            return await client.execute_with_head(head, args)
        except NoScriptError:
            return await client.execute_command("EVAL", self.source, *head.args[2:], *args)


def _load(name: str, *parts: str, keys: int = len(QueueKey)) -> Script:
    return Script(name, assemble(name, parts, keys))


ENQUEUE = _load("enqueue", "base", keys=ENQUEUE_KEYS)
TAKE = _load("take", "base", "common")
SETTLE = _load("settle", "base", "common")
EXTEND = _load("extend", "base")
MAINTAIN = _load("maintain", "base", "common")
STATS = _load("stats", "base", "common")
