"""Redis Cluster DSNs taken apart (repid/brokers/redis/_cluster.py), without a server: the
nodes, the options, and each mistake refused with the DSN masked."""

from __future__ import annotations

from typing import Any

import pytest

from repid.brokers.redis._client import make_client
from repid.brokers.redis._cluster import is_cluster_dsn, parse_cluster_dsn
from repid.brokers.redis._keys import ENQUEUE_KEYS, QueueKey, index_key, queue_keys


def test_nodes_credentials_and_options() -> None:
    parsed = parse_cluster_dsn(
        "redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/?socket_timeout=2")
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert parsed.options["username"] == "app"
    assert parsed.options["password"] == "p@ss"
    assert parsed.options["socket_timeout"] == 2.0
    assert "ssl" not in parsed.options


def test_tls_and_a_plain_dsn() -> None:
    assert parse_cluster_dsn("rediss+cluster://h1:7000/0").options["ssl"] is True
    assert parse_cluster_dsn("redis://h1:7000/").nodes == (("h1", 7000),)
    assert is_cluster_dsn("REDIS+CLUSTER://h:1/") and not is_cluster_dsn("redis://h:1/")


@pytest.mark.parametrize(("dsn", "says"), [
    ("redis+cluster://:s3cret@h1:7000,h2:7001/2", "only database 0"),
    ("redis+cluster://:s3cret@h1:70x0/", "whose port is not a number"),
    ("redis+cluster://:s3cret@/", "names no node"),
    ("amqp://:s3cret@h1:7000/", "is not a Redis Cluster DSN"),
])
def test_mistakes_are_refused_masked(dsn: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_cluster_dsn(dsn)
    assert "s3cret" not in str(caught.value)


def test_make_client_dispatches_and_refuses_pool_options() -> None:
    common: dict[str, Any] = {"retries": 1, "socket_timeout": 1.0,
                              "socket_connect_timeout": 1.0, "client_name": None}
    client = make_client("redis://127.0.0.1:7100/0", extra={"cluster": True}, **common)
    assert type(client).__name__ == "RedisCluster"
    with pytest.raises(ValueError, match="pool_timeout does not apply"):
        make_client("redis+cluster://127.0.0.1:7100/", extra={"pool_timeout": 3}, **common)


def test_every_key_of_a_queue_shares_its_hash_tag() -> None:
    keys = queue_keys("repid", "emails")
    assert all(key.startswith("repid:{emails}:") for key in keys)
    assert keys[QueueKey.DECLARED] == "repid:{emails}:declared"
    assert ENQUEUE_KEYS == QueueKey.DECLARED + 1
    assert index_key("repid") == "repid:queues" and index_key("repid") not in keys
