"""The `redis+sentinel://` DSN (sentinels, service, database, the two logins), its masking,
and the checks of `confirm_replicas` / `replica_timeout`, without any server."""

from __future__ import annotations

import pytest

from repid import RedisMessageBroker
from repid.brokers._dsn import mask_dsn
from repid.brokers.redis._sentinel import DEFAULT_SENTINEL_PORT, parse_sentinel_dsn


def test_a_full_dsn_is_read_whole() -> None:
    parsed = parse_sentinel_dsn(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,[::1]:26381,sentinel-3/orders/2"
        "?sentinel_password=s3nt&socket_timeout=2.5")
    assert parsed.sentinels == (("10.0.0.1", 26380), ("::1", 26381),
                                ("sentinel-3", DEFAULT_SENTINEL_PORT))
    assert parsed.service == "orders"
    assert parsed.options == {"username": "app", "password": "p@ss", "db": 2,
                              "socket_timeout": 2.5}
    assert parsed.sentinel_options == {"password": "s3nt"}


def test_a_short_dsn_takes_the_defaults() -> None:
    parsed = parse_sentinel_dsn("redis+sentinel://127.0.0.1/mymaster")
    assert parsed.sentinels == (("127.0.0.1", 26379),)
    assert parsed.service == "mymaster"
    assert parsed.options == {} and parsed.sentinel_options == {}


@pytest.mark.parametrize(("dsn", "why"), [
    ("redis+sentinel://:s3cret@127.0.0.1:26379", "names no service"),
    ("redis+sentinel://:s3cret@/mymaster", "names no sentinel"),
    ("redis+sentinel://:s3cret@h:99999/mymaster", "bad port"),
    ("redis+sentinel://:s3cret@h/mymaster/zero", "path other than /SERVICE or /SERVICE/DB"),
    ("redis+sentinel://:s3cret@[::1/mymaster", "cannot be parsed"),
])
def test_a_malformed_dsn_says_what_is_wrong_and_hides_the_password(dsn: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_sentinel_dsn(dsn)
    text = str(caught.value)
    assert why in text
    assert "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT]" in text
    assert "s3cret" not in text


def test_both_passwords_are_masked() -> None:
    dsn = "redis+sentinel://u:m4ster@h1:26379,h2:26379/mymaster/0?sentinel_password=s3nt"
    assert mask_dsn(dsn) == ("redis+sentinel://u:***@h1:26379,h2:26379/mymaster/0"
                             "?sentinel_password=***")
    assert "m4ster" not in repr(RedisMessageBroker(dsn))


@pytest.mark.parametrize(("options", "why"), [
    ({"confirm_replicas": -1}, "confirm_replicas is -1"),
    ({"confirm_replicas": True}, "confirm_replicas is True"),
    ({"confirm_replicas": 1, "replica_timeout": 0}, "WAIT 0 would wait for ever"),
    ({"confirm_replicas": 1, "replica_timeout": 5.0}, "must be shorter than socket_timeout"),
])
def test_unworkable_replica_settings_are_refused(options: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RedisMessageBroker("redis://127.0.0.1:6379/0", **options)  # type: ignore[arg-type]


def test_confirm_replicas_is_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="not with Redis Cluster"):
        RedisMessageBroker("redis+cluster://127.0.0.1:7100", confirm_replicas=1)


def test_no_confirmation_is_the_default() -> None:
    RedisMessageBroker("redis+sentinel://127.0.0.1/mymaster", confirm_replicas=0,
                       replica_timeout=10.0)
