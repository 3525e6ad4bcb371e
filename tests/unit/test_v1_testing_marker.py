"""The pytest plugin as the repid 1.x testing guide uses it: test files run by a fresh
pytest (pytester), the way a user runs them.

Each inner test asserts one behaviour; the outer test checks that every inner test
passed (or failed/errored as it should), so a broken behaviour names its inner test.
"""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"

#: an app module, as in the guide: one router, an async and a sync actor
APP = '''
from repid import Job, Router

router = Router()


@router.actor
async def double(x: int) -> int:
    return x * 2


@router.actor(queue="other")
def shout(text: str) -> str:
    return text.upper()


@router.actor
async def fan_out(n: int) -> None:
    for i in range(n):
        await Job("shout", queue="other", args={"text": f"t{i}"}).enqueue()
'''


def passed_lines(names: list[str]) -> list[str]:
    """fnmatch patterns of `-v` lines saying these tests passed (`[` escaped)."""
    return [f"*::{name.replace('[', '[[]')} PASSED*" for name in names]


def run(pytester: pytest.Pytester, *args: str, **files: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(myapp=APP, **files)
    return pytester.runpytest("-p", "no:cacheprovider", "--strict-markers", "-v", *args)


FUNCTION_MARKERS = '''
import sys

import pytest

from repid import Job, NoConnectionError, Queue, QueueNotDeclaredError, Repid, Worker
from myapp import router


@pytest.mark.repid
async def test_marker_only_binds_an_app():
    await Queue().declare()
    job = Job("double", args={"x": 21})
    await job.enqueue()
    # no routers: the job waits until a worker takes it
    assert (await job.result) is None
    await Worker(routers=[router], messages_limit=1).run()
    assert (await job.result).data == 42


@pytest.mark.repid
def test_marker_only_on_a_sync_test():
    connection = Repid.get_magic_connection()
    assert connection is not None and connection.is_open


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)
async def test_with_args_runs_the_actor_inside_enqueue(repid_get_mocked_actor):
    mocked = repid_get_mocked_actor("double")
    mocked.assert_not_called()
    job = Job("double", args={"x": 1})
    await job.enqueue()
    mocked.assert_called_once_with(x=1)
    assert (await job.result).data == 2


@pytest.mark.repid.with_args(routers=[router])
async def test_routers_with_an_explicit_declare():
    await Queue().declare()
    job = Job("double", args={"x": 5})
    await job.enqueue()
    assert (await job.result).data == 10


@pytest.mark.repid.with_args(routers=[router])
async def test_nested_jobs_run_before_the_outer_enqueue_returns(repid_get_mocked_actor):
    await Job("fan_out", args={"n": 3}).enqueue()
    shout = repid_get_mocked_actor("shout")
    assert sorted(c.kwargs["text"] for c in shout.call_args_list) == ["t0", "t1", "t2"]


@pytest.mark.repid.with_args(routers=[router])
async def test_jobs_no_actor_handles_stay_in_the_queue(repid_get_in_memory_queue):
    first = await Job("nobody", args={"n": 1}).enqueue()
    second = await Job("nobody", args={"n": 2}).enqueue()
    job = Job("double", args={"x": 3})
    await job.enqueue()
    assert (await job.result).data == 6
    queue = repid_get_in_memory_queue("default")
    assert queue.simple.qsize() == 2 and not queue.processing
    # untouched, in the order they came
    assert [queue.simple.get_nowait()[2].key.id_ for _ in range(2)] == [first.id_, second.id_]


@pytest.mark.repid
async def test_in_memory_queue_by_queue_object(repid_get_in_memory_queue):
    job = Job("double", args={"x": 1})
    assert repid_get_in_memory_queue(job.queue) is None
    await job.queue.declare()
    for _ in range(10):
        await job.enqueue()
    assert repid_get_in_memory_queue(job.queue).simple.qsize() == 10
    assert repid_get_in_memory_queue("default") is repid_get_in_memory_queue(job.queue)


@pytest.mark.repid.with_args(autoconnection=False)
async def test_autoconnection_false_binds_nothing():
    assert Repid.get_magic_connection() is None
    with pytest.raises(NoConnectionError):
        await Job("double", args={"x": 1}).enqueue()


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=False)
async def test_declare_false_leaves_queues_undeclared(repid_get_in_memory_queue):
    assert repid_get_in_memory_queue("default") is None


async def test_unmarked_test_has_nothing_bound():
    assert Repid.get_magic_connection() is None
    with pytest.raises(NoConnectionError):
        await Job("double", args={"x": 1}).enqueue()


def test_unmarked_sync_test_has_nothing_bound():
    assert Repid.get_magic_connection() is None


@pytest.mark.parametrize("bound", [pytest.param(True, marks=pytest.mark.repid), False])
def test_a_marked_parameter_alone_is_bound(bound):
    assert (Repid.get_magic_connection() is not None) is bound
'''

FUNCTION_TESTS = [
    "test_marker_only_binds_an_app", "test_marker_only_on_a_sync_test",
    "test_with_args_runs_the_actor_inside_enqueue", "test_routers_with_an_explicit_declare",
    "test_nested_jobs_run_before_the_outer_enqueue_returns",
    "test_jobs_no_actor_handles_stay_in_the_queue", "test_in_memory_queue_by_queue_object",
    "test_autoconnection_false_binds_nothing", "test_declare_false_leaves_queues_undeclared",
    "test_unmarked_test_has_nothing_bound", "test_unmarked_sync_test_has_nothing_bound",
    "test_a_marked_parameter_alone_is_bound[True]",
    "test_a_marked_parameter_alone_is_bound[False]",
]


def test_function_markers_as_the_v1_guide_shows(pytester: pytest.Pytester) -> None:
    result = run(pytester, test_functions=FUNCTION_MARKERS)
    result.assert_outcomes(passed=len(FUNCTION_TESTS))
    result.stdout.fnmatch_lines(passed_lines(FUNCTION_TESTS),
                                consecutive=False)


MODULE_AND_CLASS_MARKERS = '''
import sys

import pytest

from repid import Job, NoConnectionError, Queue, Repid
from myapp import router

pytestmark = pytest.mark.repid.with_args(routers=[router])


async def test_module_marker_binds_and_runs_jobs():
    job = Job("double", args={"x": 4})
    await job.enqueue()
    assert (await job.result).data == 8


def test_module_marker_on_a_sync_test():
    assert Repid.get_magic_connection() is not None


@pytest.mark.repid.with_args(autoconnection=False)
async def test_function_marker_is_nearer_than_the_module():
    assert Repid.get_magic_connection() is None
    with pytest.raises(NoConnectionError):
        await Queue().declare()


@pytest.mark.repid
async def test_function_marker_keeps_the_modules_routers(repid_get_mocked_actor):
    await Job("double", args={"x": 1}).enqueue()
    repid_get_mocked_actor("double").assert_called_once_with(x=1)


@pytest.mark.repid.with_args(autoconnection=False)
class TestClassMarker:
    async def test_class_marker_is_nearer_than_the_module(self):
        assert Repid.get_magic_connection() is None

    @pytest.mark.repid
    async def test_function_marker_is_nearer_than_the_class(self):
        job = Job("double", args={"x": 7})
        await job.enqueue()
        assert (await job.result).data == 14


class TestUnmarkedClass:
    def test_module_marker_reaches_into_classes(self):
        assert Repid.get_magic_connection() is not None
'''

MODULE_TESTS = [
    "test_module_marker_binds_and_runs_jobs", "test_module_marker_on_a_sync_test",
    "test_function_marker_is_nearer_than_the_module",
    "test_function_marker_keeps_the_modules_routers",
    "TestClassMarker::test_class_marker_is_nearer_than_the_module",
    "TestClassMarker::test_function_marker_is_nearer_than_the_class",
    "TestUnmarkedClass::test_module_marker_reaches_into_classes",
]


def test_module_and_class_markers(pytester: pytest.Pytester) -> None:
    result = run(pytester, test_module=MODULE_AND_CLASS_MARKERS)
    result.assert_outcomes(passed=len(MODULE_TESTS))
    result.stdout.fnmatch_lines(passed_lines(MODULE_TESTS),
                                consecutive=False)


DECLARE_FROM_THE_NEAREST_MARKER_THAT_SETS_IT = '''
import sys

import pytest

from repid import Job, QueueNotDeclaredError
from myapp import router

pytestmark = pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=False)


@pytest.mark.repid.with_args(autoconnection=True)
async def test_a_marker_without_declare_keeps_the_modules_choice(repid_get_in_memory_queue):
    assert repid_get_in_memory_queue("default") is None


@pytest.mark.repid.with_args(declare_all_known_queues=True)
async def test_a_marker_with_declare_overrides_it():
    job = Job("double", args={"x": 1})
    await job.enqueue()
    assert (await job.result).data == 2
'''


def test_declare_comes_from_the_nearest_marker_setting_it(pytester: pytest.Pytester) -> None:
    run(pytester, test_declare=DECLARE_FROM_THE_NEAREST_MARKER_THAT_SETS_IT).assert_outcomes(
        passed=2)


FIXTURES_SEE_THE_APP = '''
import sys

import pytest

from repid import Job, Queue, Repid


@pytest.fixture
async def declared():
    await Queue("jobs").declare()  # the test's own fixtures find the app bound
    return "jobs"


@pytest.mark.repid
async def test_a_fixture_of_the_test_uses_the_app(declared, repid_get_in_memory_queue):
    await Job("any", queue=declared).enqueue()
    assert repid_get_in_memory_queue("jobs").simple.qsize() == 1


class TestASuiteThatResetsTheBinding:
    @pytest.fixture(autouse=True)
    def unbinds_everything(self):
        Repid.bind(None)  # runs after the plugin made the app
        yield

    @pytest.mark.repid
    def test_the_body_finds_the_app_bound_again(self, repid_connection):
        assert Repid.get_magic_connection() is repid_connection
'''


def test_fixtures_of_a_marked_test_find_the_app(pytester: pytest.Pytester) -> None:
    run(pytester, test_fixtures=FIXTURES_SEE_THE_APP).assert_outcomes(passed=2)


BAD_MARKERS = '''
import sys

import pytest

from myapp import router


@pytest.mark.repid.with_args(routers=[router], no_such_option=True)
def test_unknown_argument():
    pass


@pytest.mark.repid.with_args(routers=router)
def test_routers_not_a_list():
    pass


@pytest.mark.repid(router)
def test_positional_argument():
    pass
'''


def test_marker_mistakes_fail_at_setup_saying_how_to_fix(pytester: pytest.Pytester) -> None:
    result = run(pytester, test_bad=BAD_MARKERS)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*unknown arguments [[]'no_such_option']; it takes routers, declare_all_known_queues, "
        "autoconnection*",
        "*routers must be a list of repid.Router*write with_args(routers=[[]router])*",
        "*keyword arguments only*write @pytest.mark.repid.with_args(routers=[[]router])*",
    ], consecutive=False)


V1_IMPORTS = '''
import sys

import pytest

from repid import Job, QueueNotDeclaredError
from repid.testing import EventLog, GetEventLogT, GetInMemoryQueueT, GetMockedActorT
from myapp import router

pytestmark = pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=False)


async def test_the_v1_declare_fixture_declares_the_routers_queues(
        repid_declare_all_known_queues, repid_get_event_log: GetEventLogT,
        repid_get_mocked_actor: GetMockedActorT) -> None:
    await Job("shout", queue="other", args={"text": "a"}).enqueue()
    repid_get_mocked_actor("shout").assert_called_once_with(text="a")
    assert all(isinstance(e, EventLog) for e in repid_get_event_log())


async def test_without_it_the_queues_stay_undeclared(
        repid_get_in_memory_queue: GetInMemoryQueueT) -> None:
    assert repid_get_in_memory_queue("other") is None
    await Job("shout", queue="other", args={"text": "a"}).enqueue()  # declares it
    assert repid_get_in_memory_queue("other") is not None
'''


def test_v1_imports_and_the_declare_fixture(pytester: pytest.Pytester) -> None:
    run(pytester, test_imports=V1_IMPORTS).assert_outcomes(passed=2)


def test_fixtures_import_from_repid_testing_without_pytest_in_import_repid(
        pytester: pytest.Pytester) -> None:
    from repid.testing import plugin, repid_app, repid_get_mocked_actor

    assert repid_app is plugin.repid_app and repid_get_mocked_actor is plugin.repid_get_mocked_actor
    with pytest.raises(ImportError, match="cannot import name 'nope'"):
        from repid.testing import nope  # type: ignore[attr-defined]  # noqa: F401
    done = pytester.run(sys.executable, "-c",
                        "import sys, repid; assert 'pytest' not in sys.modules, 'pytest imported'")
    assert done.ret == 0, done.stderr.str()
