"""What each Python type becomes as a job argument (docs/guide/args_and_results.md): the
types JSON cannot carry are converted as repid 1.x did and come back as the annotated type
with pydantic, arrive as their JSON form with `BasicConverter` (as in 1.x), and anything
else is refused at enqueue with a message naming the argument, its type and what to send
instead. Run through a real Worker on the in-memory broker."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pydantic
import pytest

from repid import BasicConverter, Job, Router
from repid.serializer import to_json


class Level(enum.Enum):
    LOW = 1
    HIGH = 3


@dataclass
class Point:
    x: int
    when: datetime


class Account(pydantic.BaseModel):
    user_id: int
    since: date


WHEN = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
UID = UUID(int=7)
SENT: dict[str, Any] = {
    "when": WHEN, "day": date(2030, 1, 2), "at": time(3, 4, 5), "wait": timedelta(seconds=90.5),
    "uid": UID, "level": Level.HIGH, "tags": {"a", "b"}, "frozen": frozenset({1, 2}),
    "pair": (1, 2), "point": Point(1, WHEN), "account": Account(user_id=7, since=date(2030, 1, 2)),
    "ratio": float("nan"), "limit": float("inf"), "names": {1: "one"},
}
#: what `BasicConverter` (no validation, as in repid 1.x) passes on: the JSON form
JSON_FORM: dict[str, Any] = {
    "when": "2030-01-02T03:04:05.600000+00:00", "day": "2030-01-02", "at": "03:04:05",
    "wait": 90.5, "uid": str(UID), "level": 3, "frozen": [1, 2], "pair": [1, 2],
    "point": {"x": 1, "when": "2030-01-02T03:04:05.600000+00:00"},
    "account": {"user_id": 7, "since": "2030-01-02"}, "limit": math.inf, "names": {"1": "one"},
}


async def test_annotated_types_come_back_with_pydantic(make_conn: Any, run_worker: Any) -> None:
    conn = await make_conn()
    router = Router()
    got: dict[str, Any] = {}

    @router.actor
    async def typed(when: datetime, day: date, at: time, wait: timedelta, uid: UUID,
                    level: Level, tags: set[str], frozen: frozenset[int], pair: tuple[int, int],
                    point: Point, account: Account, ratio: float, limit: float,
                    names: dict[int, str]) -> None:
        got.update({name: value for name, value in locals().items() if name in SENT})

    await Job("typed", args=SENT, _connection=conn).enqueue()
    await run_worker(conn, router)
    ratio = got.pop("ratio")
    assert isinstance(ratio, float) and math.isnan(ratio)
    expected = {name: value for name, value in SENT.items() if name != "ratio"}
    assert got == expected
    assert {name: type(value) for name, value in got.items()} == {
        name: type(value) for name, value in expected.items()}


async def test_basic_converter_passes_the_json_form(make_conn: Any, run_worker: Any) -> None:
    conn = await make_conn()
    router = Router()
    got: dict[str, Any] = {}

    @router.actor(converter=BasicConverter)
    async def plain(**kwargs: Any) -> None:
        got.update(kwargs)

    await Job("plain", args=SENT, _connection=conn).enqueue()
    await run_worker(conn, router)
    assert sorted(got.pop("tags")) == ["a", "b"]  # a set's order is not kept
    assert math.isnan(got.pop("ratio"))  # written NaN, read back as in repid 1.x
    assert got == JSON_FORM


@pytest.mark.parametrize(("args", "message"), [
    ({"data": b"\x00"}, "argument 'data' is bytes, which JSON cannot carry: send text "
                        "(value.decode()) or base64 (base64.b64encode(value).decode()"),
    ({"amount": Decimal("1.10")}, "argument 'amount' is Decimal, which JSON cannot carry: "
                                  "send str(value), exact, and annotate the parameter "
                                  "Decimal"),
    ({"z": 1j}, "argument 'z' is complex, which JSON cannot carry: send [value.real, "
                "value.imag]"),
    ({"items": [1, {"blob": bytearray(b"x")}]},
     "argument 'items'[1]['blob'] is bytearray, which JSON cannot carry"),
    ({"point": Point(1, WHEN), "other": object()},
     "argument 'other' is object, which JSON cannot carry: convert it to plain data"),
    ({"by": {(1, 2): "x"}}, "argument 'by'[(1, 2)] is a tuple key, but a JSON object's keys "
                            "are strings"),
    ([1, Decimal(2)], "argument #1 is Decimal, which JSON cannot carry"),
])
def test_refused_at_enqueue_naming_the_argument(args: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        Job("any", args=args)
    assert str(info.value).startswith(message)


def test_a_result_json_cannot_carry_says_where() -> None:
    with pytest.raises(TypeError) as info:
        to_json({"rows": [{"id": 1, "raw": b"x"}]})
    assert str(info.value).startswith(
        "value is not JSON-serializable: value['rows'][0]['raw'] is bytes, which JSON "
        "cannot carry: send text")
    assert json.loads(to_json({"at": time(1, 2), "level": Level.LOW})) == {
        "at": "01:02:00", "level": 1}
