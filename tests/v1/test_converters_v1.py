"""repid 1.x converters: `BasicConverter`, `PydanticConverter` and `Config` from `repid`,
aliased arguments, results cut to their return model, converters written for 1.x
(`__init__(self, fn)`), and unknown arguments ignored (a producer deployed before its
workers). Each runs through a real Worker on the in-memory broker, one also on Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from repid import (
    BucketBroker,
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Queue,
    Repid,
    Router,
    Worker,
)
from repid.brokers.base import MessageBroker

TIMEOUT = 5


def _app(broker: MessageBroker | None = None,
         results: BucketBroker | None = None) -> Repid:
    return Repid(Connection(
        broker or InMemoryMessageBroker(),
        results_bucket_broker=results or InMemoryBucketBroker(use_result_bucket=True)))


async def _run_one(app: Repid, router: Router, name: str, args: Any,
                   queue: str = "default") -> Any:
    """Enqueue one job, run a worker for it, return its stored result."""
    async with app.magic(auto_disconnect=True):
        await Queue(queue).declare()
        job = Job(name, queue=queue, args=args)
        await job.enqueue()
        await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
        result = await job.result
        if queue != "default":
            await Queue(queue).delete()
    assert result is not None, "the worker stored no result"
    return result


@pytest.fixture
def restore_config() -> Iterator[None]:
    from repid import Config

    before = Config.CONVERTER
    yield
    Config.CONVERTER = before


# --- the converter classes and Config --------------------------------------------------


def test_default_converter_gives_the_pydantic_converter_when_pydantic_is_installed() -> None:
    from repid import BasicConverter, DefaultConverter, PydanticConverter

    def myfunc(a: int, b: str) -> str:
        return str(a) + b

    converter: object = DefaultConverter(myfunc)
    assert type(converter) is not BasicConverter
    assert type(converter) is PydanticConverter
    assert converter.convert_inputs('{"a": "1", "b": "x"}') == ([], {"a": 1, "b": "x"})
    assert type(BasicConverter(myfunc)) is BasicConverter


async def test_config_converter_basic_turns_pydantic_validation_off(
        restore_config: None) -> None:
    from repid import BasicConverter, Config, DefaultConverter

    Config.CONVERTER = BasicConverter
    router = Router()

    @router.actor
    async def typed(n: int) -> str:
        return type(n).__name__

    result = await _run_one(_app(), router, "typed", {"n": "5"})
    assert result.success and result.data == "str"  # not coerced to int
    Config.CONVERTER = DefaultConverter
    again = Router()

    @again.actor(name="typed")
    async def typed_again(n: int) -> str:
        return type(n).__name__

    result = await _run_one(_app(), again, "typed", {"n": "5"})
    assert result.success and result.data == "int"


def test_a_v1_setting_that_does_nothing_here_is_refused_not_ignored() -> None:
    from repid import Config

    with pytest.raises(AttributeError, match=r"Config\.SERIALIZER is not a setting.*CONVERTER"):
        Config.SERIALIZER = json.dumps
    assert not hasattr(Config, "SERIALIZER")


# --- pydantic: aliases and return models -----------------------------------------------


async def test_field_alias_is_how_the_argument_is_sent() -> None:
    router = Router()

    @router.actor
    async def some_repid_actor(
        user_id: int = 123,
        actions: list[str] = Field(alias="activity"),  # noqa: B008 - the v1 page's form
    ) -> dict[str, Any]:
        return {"user_id": user_id, "actions": actions}

    result = await _run_one(_app(), router, "some_repid_actor", {"activity": ["login"]})
    assert result.exception is None
    assert result.data == {"user_id": 123, "actions": ["login"]}


class MyReturnModel(BaseModel):
    user_id: int


async def test_return_model_keeps_only_its_fields_in_the_result() -> None:
    router = Router()

    @router.actor
    async def some_repid_actor(user_id: int, actions: list[str]) -> MyReturnModel:
        return dict(user_id=user_id, actions=actions)  # type: ignore[return-value]

    result = await _run_one(_app(), router, "some_repid_actor",
                            {"user_id": 123, "actions": ["First action"]})
    assert result.success and result.data == {"user_id": 123}


# --- a converter written for repid 1.x ---------------------------------------------------


class ShoutingConverter:
    """A 1.x-style converter: built from the function alone, with `dependencies`."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    @property
    def dependencies(self) -> dict[str, Any]:
        return {}

    def convert_inputs(self, data: str) -> tuple[list[Any], dict[str, Any]]:
        loaded = json.loads(data) if data else {}
        return [loaded["word"].upper()], {}

    def convert_outputs(self, data: Any) -> str:
        return json.dumps({"shouted": data})


def _shouting_router(queue: str = "default") -> Router:
    router = Router()

    @router.actor(queue=queue, converter=ShoutingConverter)
    async def shout(word: str) -> str:
        return word + "!"

    return router


async def test_v1_style_converter_runs_end_to_end() -> None:
    result = await _run_one(_app(), _shouting_router(), "shout", {"word": "hey"})
    assert result.exception is None
    assert result.data == {"shouted": "HEY!"}


@pytest.mark.integration
async def test_v1_style_converter_runs_end_to_end_on_redis(redis_dsn: str) -> None:
    from repid import RedisBucketBroker, RedisMessageBroker

    app = _app(RedisMessageBroker(dsn=redis_dsn),
               RedisBucketBroker(dsn=redis_dsn, use_result_bucket=True))
    queue = f"conv_{uuid.uuid4().hex[:8]}"  # the server is shared: a queue of its own
    result = await _run_one(app, _shouting_router(queue), "shout", {"word": "hey"},
                            queue=queue)
    assert result.data == {"shouted": "HEY!"}


# --- unknown arguments are ignored -------------------------------------------------------


@pytest.mark.parametrize("converter", ["BasicConverter", "PydanticConverter"])
async def test_unknown_arguments_are_ignored_and_named_in_a_debug_log(
        converter: str, caplog: pytest.LogCaptureFixture) -> None:
    import repid

    router = Router()

    @router.actor(converter=getattr(repid, converter))
    async def add(a: int, b: int = 2) -> int:
        return a + b

    with caplog.at_level(logging.DEBUG, logger="repid"):
        result = await _run_one(_app(), router, "add",
                                {"a": 1, "added_in_v2": "x", "also_new": 5})
    assert result.success and result.data == 3
    ignored = [r.getMessage() for r in caplog.records
               if "added_in_v2" in r.getMessage() and r.levelno == logging.DEBUG]
    assert ignored and "also_new" in ignored[0] and "'x'" not in ignored[0]
