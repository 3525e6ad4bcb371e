"""Run it with: python examples/custom_plugin.py

A custom middleware plugin: time every actor run and tag every message with a header.

A plugin is any object whose methods are marked `@repid.hookimpl`. Around hooks are pluggy
wrappers (`wrapper=True`): code before `yield` runs before the broker call or actor run,
`yield` gives its result (or raises its exception), and locals such as a start time live
across it. The hooks and their arguments are listed in docs/hooks.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator

import repid
from repid import (
    ActorResult,
    Connection,
    InMemoryMessageBroker,
    Job,
    MessageDependency,
    Queue,
    Repid,
    Router,
    Worker,
)
from repid.data import Parameters
from repid.router import Actor


class TimingPlugin:
    """Adds an `x-enqueued-by` header to each message and prints how long each actor ran."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs: list[tuple[str, bool, float]] = []

    @repid.hookimpl(wrapper=True)
    def repid_enqueue(self, queue: str, params: Parameters) -> Generator[None, None, None]:
        """Before the message is sent: add a header (it reaches the actor unchanged)."""
        params.headers["x-enqueued-by"] = self.name
        result = yield
        print(f"[{self.name}] enqueued a message to queue {queue!r}")
        return result

    @repid.hookimpl(wrapper=True)
    def repid_actor_run(self, actor: Actor) -> Generator[None, ActorResult, ActorResult]:
        """Around each actor run: the result says whether it succeeded."""
        start = time.perf_counter()
        result = yield
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.runs.append((actor.name, result.success, elapsed_ms))
        print(f"[{self.name}] actor {actor.name} ran in {elapsed_ms:.1f} ms "
              f"(success={result.success})")
        return result


router = Router()


@router.actor
async def greet(name: str, message: MessageDependency) -> str:
    """An actor that reads the header the plugin added."""
    await asyncio.sleep(0.02)
    print(f"greet({name!r}) sees x-enqueued-by={message.parameters.headers['x-enqueued-by']}")
    return f"Hello, {name}!"


plugin = TimingPlugin("timing-plugin")
app = Repid(Connection(InMemoryMessageBroker(), plugins=[plugin]))


async def main() -> None:
    async with app.magic(auto_disconnect=True):
        await Queue().declare()
        for name in ("Ada", "Grace"):
            await Job("greet", args={"name": name}).enqueue()
        await Worker(routers=[router], messages_limit=2).run()
    print(f"plugin saw {len(plugin.runs)} actor runs")


if __name__ == "__main__":
    asyncio.run(main())
