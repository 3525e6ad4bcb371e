"""Several RabbitMQ nodes for one broker: a DSN naming several hosts or a list of DSNs
becomes one DSN per node, a single-host DSN is kept as written, a malformed host list is
refused saying what is wrong, and no password reaches a message or a repr."""

from __future__ import annotations

import pytest

from repid import RabbitMessageBroker
from repid.brokers._dsn import mask_dsn
from repid.brokers.rabbitmq._hosts import HostRing, node_dsns


@pytest.mark.parametrize(("given", "nodes"), [
    ("amqp://guest:guest@127.0.0.1:5710,127.0.0.1:5711,127.0.0.1:5712/",
     ("amqp://guest:guest@127.0.0.1:5710/", "amqp://guest:guest@127.0.0.1:5711/",
      "amqp://guest:guest@127.0.0.1:5712/")),
    ("amqps://u:p@h1,[::1]:5671,h3/vh?heartbeat=30",
     ("amqps://u:p@h1/vh?heartbeat=30", "amqps://u:p@[::1]:5671/vh?heartbeat=30",
      "amqps://u:p@h3/vh?heartbeat=30")),
    (["amqp://a:b@h1/", "amqp://c:d@h2,h3:5673/"],
     ("amqp://a:b@h1/", "amqp://c:d@h2/", "amqp://c:d@h3:5673/")),
])
def test_several_hosts_become_one_dsn_per_node(given: str | list[str],
                                               nodes: tuple[str, ...]) -> None:
    assert node_dsns(given) == nodes


@pytest.mark.parametrize("dsn", [
    "amqp://guest:guest@localhost:5672/",
    "amqp://u:pa,ss@h/",  # a comma in a password is no host list
    "AMQPS://guest:guest@localhost:5671/%2F?heartbeat=5",
    "amqp://localhost",
])
def test_a_single_host_dsn_is_kept_as_written(dsn: str) -> None:
    assert node_dsns(dsn) == (dsn,)
    broker = RabbitMessageBroker(dsn)
    assert broker.dsn == dsn and broker.dsns == (dsn,)


@pytest.mark.parametrize(("dsn", "says"), [
    ("amqp://u:s3cret@h1,,h2/", "an empty host"),
    ("amqp://u:s3cret@h1,h2,/", "an empty host"),
    ("amqp://u:s3cret@h1,h2:99999/", "a bad port in 'h2:99999'"),
    ("amqp://u:s3cret@h1,h2:x/", "a bad port in 'h2:x'"),
    ("amqp://u:s3cret@h1,:5672/", "a port without a host"),
    ("amqp://u:s3cret@h1, h2/", "a host with a space in it"),
    ("amqp://u:s3cret@h1,[::1/", "a malformed IPv6 host"),
    ("amqp://u:s3cret@h1,u:s3cret@h2/", "names a user more than once"),
])
def test_a_malformed_host_list_says_what_is_wrong(dsn: str, says: str) -> None:
    with pytest.raises(ValueError, match="RabbitMessageBroker") as info:
        RabbitMessageBroker(dsn)
    assert says in str(info.value)
    assert "host1:5672,host2:5672" in str(info.value)  # how to write it
    assert "s3cret" not in str(info.value)


def test_a_list_must_be_of_rabbitmq_dsns_on_one_vhost() -> None:
    with pytest.raises(ValueError, match="empty list"):
        RabbitMessageBroker([])
    with pytest.raises(ValueError, match="is a Redis DSN"):
        RabbitMessageBroker(["amqp://h1/", "redis://h2/"])
    with pytest.raises(ValueError, match="dsn is an empty str"):
        RabbitMessageBroker(["amqp://h1/", ""])
    with pytest.raises(ValueError, match="different virtual hosts") as info:
        RabbitMessageBroker(["amqp://u:s3cret@h1/a", "amqp://u:s3cret@h2/b"])
    assert "s3cret" not in str(info.value)


def test_no_password_in_a_repr_of_several_nodes() -> None:
    one = RabbitMessageBroker("amqp://u:s3cret@h1:5672,h2:5672/?token=t0k")
    assert repr(one) == "RabbitMessageBroker(dsn='amqp://u:***@h1:5672,h2:5672/?token=***')"
    listed = RabbitMessageBroker(["amqp://u:s3cret@h1/", "amqp://v:other@h2/"])
    assert repr(listed) == ("RabbitMessageBroker(dsn=['amqp://u:***@h1/', "
                            "'amqp://v:***@h2/'])")
    assert listed.dsn == "amqp://u:s3cret@h1/"  # the first node's DSN


@pytest.mark.parametrize(("dsn", "masked"), [
    ("amqp://guest:guest@127.0.0.1:5710,127.0.0.1:5711/",
     "amqp://guest:***@127.0.0.1:5710,127.0.0.1:5711/"),
    ("amqp://u:p%40x@[::1]:5710,h2/v?token=1&a=b#pwd=2",
     "amqp://u:***@[::1]:5710,h2/v?token=***&a=b#pwd=***"),
    ("amqp://u:s3cret@h1,[::1/", "amqp://u:***@h1,[::1/"),  # urlsplit would refuse it
    ("amqp://h1,h2", "amqp://h1,h2"),
])
def test_mask_dsn_masks_a_dsn_of_several_hosts(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_the_ring_moves_to_the_next_node_and_wraps_round() -> None:
    ring = HostRing(["a", "b", "c"])
    assert ring.current == "a"
    assert [ring.advance() for _ in range(4)] == ["b", "c", "a", "b"]
    single = HostRing(["only"])
    assert single.advance() == "only" and len(single) == 1
    with pytest.raises(ValueError):
        HostRing([])
