"""The pytest plugin (entry point `repid`): the `repid` marker and the fixtures.

A test marked `@pytest.mark.repid` (on the function, its class, or its module through
`pytestmark`) runs with an in-memory app bound by magic, without asking for any fixture:
`await Queue().declare()` and `await Job(...).enqueue()` just work. The app is made
before any other function-scoped fixture of the test, so those fixtures find it bound
too, and it is bound again right before the test body runs, whatever a fixture did to
the binding. `@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True,
autoconnection=True)` tunes it (see `repid.testing.markers` for how markers on several
levels combine, and `repid.testing.app` for how enqueued jobs run right away through
mocks of the routers' actors). With `autoconnection=False` nothing is bound. A test with
no marker gets nothing bound, unless it asks for one of the fixtures below (they make the
app on demand, bound).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from unittest.mock import MagicMock

import pytest

from repid.app import Repid
from repid.brokers.in_memory import InMemoryQueue
from repid.connection import Connection
from repid.queue import Queue
from repid.testing.app import InMemoryTestApp
from repid.testing.markers import MARKER, MarkerSettings, settings_of
from repid.testing.types import EventLog, GetEventLogT, GetInMemoryQueueT, GetMockedActorT

#: the app of the running test, for the call hook
_APP = pytest.StashKey[InMemoryTestApp]()
_APP_FIXTURE = "_repid_test_app"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "repid: give the test an in-memory repid app, bound by magic; "
        "with_args(routers=[...], declare_all_known_queues=True, autoconnection=True)",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marked tests get the app first of their function-scoped fixtures. The list is
    replaced, not changed in place: parametrized tests share one."""
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker(MARKER) is not None:
            # first even when a requested fixture already depends on it
            item.fixturenames = [_APP_FIXTURE,
                                 *(n for n in item.fixturenames if n != _APP_FIXTURE)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Bind the test's app again right before its body, in case a fixture unbound it."""
    test_app = item.stash.get(_APP, None)
    if test_app is not None and test_app.settings.autoconnection:
        test_app.bind()
    return (yield)


@pytest.fixture
def _repid_test_app(request: pytest.FixtureRequest) -> Iterator[InMemoryTestApp]:
    settings = settings_of(request.node) or MarkerSettings()
    test_app = InMemoryTestApp(settings)
    request.node.stash[_APP] = test_app
    try:
        yield test_app
    finally:
        del request.node.stash[_APP]
        test_app.close()


@pytest.fixture
def repid_app(_repid_test_app: InMemoryTestApp) -> Repid:
    """A Repid app on in-memory brokers (message, args and results), bound for the test."""
    return _repid_test_app.app


@pytest.fixture
def repid_connection(_repid_test_app: InMemoryTestApp) -> Connection:
    """The Connection of `repid_app`."""
    return _repid_test_app.connection


@pytest.fixture
def repid_declare_all_known_queues(_repid_test_app: InMemoryTestApp) -> None:
    """Declare the queues of the routers' actors, as `declare_all_known_queues=True` does
    (for tests whose markers turned it off)."""
    _repid_test_app.declare_known_queues()


@pytest.fixture
def repid_get_mocked_actor(_repid_test_app: InMemoryTestApp) -> GetMockedActorT:
    """`get(name)`: the mock standing in for that actor (it still runs the real function)."""

    def get(name: str) -> MagicMock:
        try:
            return _repid_test_app.mocks[name]
        except KeyError:
            raise KeyError(f"no actor named {name!r} in the marker's routers; known: "
                           f"{sorted(_repid_test_app.mocks)}") from None

    return get


@pytest.fixture
def repid_get_event_log(_repid_test_app: InMemoryTestApp) -> GetEventLogT:
    """`get()`: every broker call and actor run so far, in call order."""

    def get() -> list[EventLog]:
        return list(_repid_test_app.events.events)

    return get


@pytest.fixture
def repid_get_in_memory_queue(_repid_test_app: InMemoryTestApp) -> GetInMemoryQueueT:
    """`get(queue)`: the in-memory queue (`simple.qsize()` counts waiting messages), or
    None before it is declared; `queue` is a name or a `Queue`."""

    def get(queue: Queue | str) -> InMemoryQueue | None:
        return _repid_test_app.broker.queues.get(queue.name if isinstance(queue, Queue)
                                                 else queue)

    return get
