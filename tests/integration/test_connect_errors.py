"""A mistake in how a broker is reached gets an answer that names it and says how to fix
it, at once, on the real servers: an unknown RabbitMQ vhost or one the user may not open,
a wrong RabbitMQ login, a wrong Redis password, a missing one, and a password given to a
Redis that checks none (refused: the user believes the server is protected). A queue name
nobody declared is "not declared" on every broker, never an empty queue."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from broker_kinds import message_broker

from repid import (
    Connection,
    Queue,
    RabbitMessageBroker,
    RedisBucketBroker,
    RedisMessageBroker,
)
from repid.brokers.base import MessageBroker
from repid.errors import BrokerConnectionError, QueueNotDeclaredError
from tests.servers.redis_server import PrivateRedis, available, free_port

pytestmark = pytest.mark.integration

#: a refused login is reported within this many seconds (the retries would take far longer)
AT_ONCE = 3.0
PASSWORD = "s3cret-Pw"
WRONG = "wr0ng-Pw"


def _with(dsn: str, *, user: str | None = None, password: str | None = None,
          path: str | None = None) -> str:
    """`dsn` with another user, password or path."""
    parts = urlsplit(dsn)
    user = parts.username if user is None else user
    password = parts.password if password is None else password
    auth = f"{user or ''}:{password}@" if password else (f"{user}@" if user else "")
    netloc = f"{auth}{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc,
                                     path=parts.path if path is None else path))


async def _refused(broker: MessageBroker | RedisBucketBroker) -> str:
    """The message of the BrokerConnectionError connecting raises, checked to come at once."""
    started = time.monotonic()
    with pytest.raises(BrokerConnectionError) as info:
        await asyncio.wait_for(broker.connect(), 30)
    assert time.monotonic() - started < AT_ONCE
    return str(info.value)


# --- RabbitMQ ---

async def test_rabbit_unknown_vhost_is_named(amqp_dsn: str) -> None:
    vhost = f"repid-missing-{uuid.uuid4().hex[:8]}"
    message = await _refused(RabbitMessageBroker(_with(amqp_dsn, path=f"/{vhost}")))
    user = urlsplit(amqp_dsn).username
    assert f"refused to open virtual host {vhost!r} for user {user!r}" in message
    assert "does not exist, or the user has no access to it" in message
    assert f"rabbitmqctl add_vhost {vhost}" in message
    assert f"rabbitmqctl set_permissions -p {vhost} {user}" in message
    password = urlsplit(amqp_dsn).password
    assert password and f":{password}@" not in message


@pytest.fixture
def vhost_without_access() -> Iterator[str]:
    """A vhost that exists and that no user may open (rabbitmqctl grants nobody)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on PATH")
    vhost = f"repid-closed-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True,
                   timeout=60)
    try:
        yield vhost
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True,
                       timeout=60)


async def test_rabbit_vhost_without_access_is_named(amqp_dsn: str,
                                                    vhost_without_access: str) -> None:
    vhost = vhost_without_access
    message = await _refused(RabbitMessageBroker(_with(amqp_dsn, path=f"/{vhost}")))
    assert f"refused to open virtual host {vhost!r}" in message
    assert "set_permissions" in message


async def test_rabbit_wrong_password_says_access_refused(amqp_dsn: str) -> None:
    message = await _refused(RabbitMessageBroker(_with(amqp_dsn, password=WRONG)))
    user = urlsplit(amqp_dsn).username
    assert f"refused the login of user {user!r}: wrong user or password " \
           "(ACCESS_REFUSED)" in message
    assert WRONG not in message
    assert "***" in message


# --- Redis ---

@pytest.fixture
def protected_redis() -> Iterator[str]:
    """A private Redis whose default user needs PASSWORD, and whose ACL user `bob` has no
    password (any is accepted); its DSN without credentials."""
    why = available()
    if why:
        pytest.skip(why)
    with PrivateRedis(free_port()) as server:
        admin = redis.Redis(port=server.port)
        admin.execute_command("ACL", "SETUSER", "bob", "on", "nopass", "~*", "&*", "+@all")
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        yield server.dsn


async def test_redis_right_password_connects(protected_redis: str) -> None:
    broker = RedisMessageBroker(_with(protected_redis, password=PASSWORD))
    await asyncio.wait_for(broker.connect(), 10)
    await broker.disconnect()


@pytest.mark.parametrize("kind", [RedisMessageBroker, RedisBucketBroker])
async def test_redis_wrong_password_is_refused_at_once(
        protected_redis: str, kind: type[RedisMessageBroker | RedisBucketBroker]) -> None:
    # with 30 retries redis-py would retry the login for a minute
    message = await _refused(kind(_with(protected_redis, password=WRONG), retries=30))
    assert "Redis refused the credentials of the default user (WRONGPASS:" in message
    assert "cannot reach" not in message
    assert WRONG not in message


async def test_redis_missing_password_says_noauth(protected_redis: str) -> None:
    message = await _refused(RedisMessageBroker(protected_redis, retries=30))
    assert "Redis needs a password and the DSN gives none (NOAUTH:" in message
    assert "redis://:PASSWORD@host:6379/0" in message


async def test_redis_password_for_a_redis_without_one_is_refused(redis_dsn: str) -> None:
    if urlsplit(redis_dsn).password:
        pytest.skip("the shared Redis has a password")
    message = await _refused(RedisMessageBroker(_with(redis_dsn, password=PASSWORD)))
    assert "the DSN gives a password, but Redis checks no password for its default user" \
        in message
    assert "requirepass" in message and "remove it from the DSN" in message
    assert PASSWORD not in message


async def test_redis_password_for_a_user_without_one_is_refused(protected_redis: str) -> None:
    message = await _refused(RedisMessageBroker(
        _with(protected_redis, user="bob", password=WRONG)))
    assert "Redis checks no password for user 'bob'" in message
    assert WRONG not in message


# --- a queue nobody declared ---

@pytest.fixture(params=["in_memory", "redis", "rabbitmq"])
async def connection(request: pytest.FixtureRequest) -> AsyncIterator[Connection]:
    connection = Connection(message_broker(request.param, request))
    await asyncio.wait_for(connection.connect(), 15)
    try:
        yield connection
    finally:
        await connection.disconnect()


async def test_stats_of_an_undeclared_queue_says_so(connection: Connection) -> None:
    name = f"typo-{uuid.uuid4().hex[:8]}"
    with pytest.raises(QueueNotDeclaredError) as info:
        await asyncio.wait_for(Queue(name, _connection=connection).stats(), 15)
    assert info.value.queue == name
    assert name in str(info.value)
    await asyncio.wait_for(connection.message_broker.queue_declare(name), 15)
    try:
        stats = await asyncio.wait_for(Queue(name, _connection=connection).stats(), 15)
        assert stats["ready"] == 0 and stats["dead"] == 0
    finally:
        await connection.message_broker.queue_delete(name)
