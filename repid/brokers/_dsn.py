"""Printing a DSN safely: no credential ever reaches a log line, an error or a repr.

`mask_dsn` replaces with `***`: the password of the user part, and the value of every
query parameter whose name looks like a credential (`password`, `passwd`, `pwd`, `token`,
`secret`, `api_key`, `credential`, ... anywhere in the name, any case, e.g.
`?ssl_password=` or `?AuthToken=`). A DSN naming several hosts after one user part
(`amqp://user:secret@h1:5672,h2:5672/`) is masked the same way, host by host as written.
A DSN that cannot be parsed is not shown at all.
`dsn_secrets` lists those values, to mask them in text that quotes them on their own (an
error message of a client library).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

#: a query parameter whose name contains one of these (lower-cased, `-` and `_` removed)
#: holds a credential
SECRET_WORDS = ("password", "passwd", "pwd", "pass", "token", "secret", "apikey",
                "credential", "privatekey", "signature")
MASK = "***"
UNPARSEABLE = "<unparseable dsn>"

_PARAM = re.compile(r"([^&;=]*)=([^&;]*)")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter `name` holds a credential."""
    folded = name.lower().replace("-", "").replace("_", "")
    return any(word in folded for word in SECRET_WORDS)


def _mask_query(query: str) -> str:
    def mask(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{name}={MASK}" if is_secret_name(name) else match.group(0)

    return _PARAM.sub(mask, query)


def split_netloc(dsn: str) -> tuple[str, str, str, str] | None:
    """(`scheme://`, user part with its `@` or "", host part, the rest from the path on) of
    `dsn`, split as written (no check, so it works where `urlsplit` refuses a host list
    such as `h1,[::1`); None when `dsn` has no `://`."""
    scheme, sep, after = dsn.partition("://")
    if not sep:
        return None
    end = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    user, at, hosts = after[:end].rpartition("@")
    return scheme + sep, user + at, hosts, after[end:]


def _mask_several_hosts(scheme: str, user: str, hosts: str, tail: str) -> str:
    if ":" in user:
        user = f"{user.split(':', 1)[0]}:{MASK}@"
    rest, hash_, fragment = tail.partition("#")
    path, question, query = rest.partition("?")
    return (f"{scheme}{user}{hosts}{path}{question}{_mask_query(query)}"
            f"{hash_}{_mask_query(fragment)}")


def mask_dsn(dsn: str) -> str:
    """`amqp://user:secret@host/?token=abc` -> `amqp://user:***@host/?token=***`; the same
    for several hosts: `amqp://user:secret@h1,h2/` -> `amqp://user:***@h1,h2/`."""
    parts_as_written = split_netloc(dsn)
    if parts_as_written is not None and "," in parts_as_written[2]:
        return _mask_several_hosts(*parts_as_written)
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:
        return UNPARSEABLE
    masked = parts._replace(query=_mask_query(parts.query),
                            fragment=_mask_query(parts.fragment))
    if password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        masked = masked._replace(netloc=f"{user.split(':', 1)[0]}:{MASK}@{host}")
    if masked == parts:
        return dsn  # nothing to hide: shown as given
    return urlunsplit(masked)


def dsn_secrets(dsn: str) -> set[str]:
    """The credentials in `dsn`, as written and percent-decoded: the password and the
    values of credential-like query parameters (empty for an unparseable DSN)."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:
        return set()
    found = set() if password is None else {password, unquote(password)}
    for text in (parts.query, parts.fragment):
        for match in _PARAM.finditer(text):
            if is_secret_name(match.group(1)) and match.group(2):
                found.add(match.group(2))
        found.update(value for name, value in parse_qsl(text, separator="&")
                     if is_secret_name(name) and value)
    return found - {""}


#: the DSN schemes of each system a broker connects to
SCHEMES: dict[str, tuple[str, ...]] = {
    "RabbitMQ": ("amqp", "amqps"),
    "Redis": ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster"),
}
#: the broker to use with a DSN of each system
BROKERS = {"RabbitMQ": "RabbitMessageBroker", "Redis": "RedisMessageBroker"}


def scheme_of(dsn: str) -> str:
    """The DSN's scheme, lower-cased (`""` when it has none: `localhost:6379`)."""
    if "://" not in dsn:
        return ""
    try:
        return urlsplit(dsn).scheme.lower()
    except ValueError:
        return ""


def system_of(scheme: str) -> str | None:
    """The system whose DSNs have this scheme (`"Redis"` for `rediss`), or None."""
    return next((system for system, schemes in SCHEMES.items() if scheme in schemes), None)


def require_dsn(dsn: object, owner: str, example: str) -> str:
    """`dsn` when it is a non-empty string with a scheme of the system `example` is a DSN
    of (`check_scheme`); else a `ValueError` saying what is wrong (a DSN read with
    `os.environ.get` from an unset variable is None: without this check a client would
    connect somewhere else, or fail with an unrelated message)."""
    if isinstance(dsn, str) and dsn.strip():
        check_scheme(dsn, owner, example)
        return dsn
    got = "None" if dsn is None else f"an empty {type(dsn).__name__}"
    raise ValueError(
        f"{owner} needs a DSN such as {example!r}, but its dsn is {got}. If it comes from "
        "the environment, the variable is not set: set it, or give a default, e.g. "
        f"os.environ.get('...', {example!r})")


def check_scheme(dsn: str, owner: str, example: str) -> None:
    """A `ValueError` unless `dsn`'s scheme is one of the system `example` is a DSN of,
    saying which schemes that system takes and, for another system's DSN, which broker
    it belongs to. The DSN is shown masked."""
    system = system_of(scheme_of(example))
    if system is None:
        return
    schemes = SCHEMES[system]
    scheme = scheme_of(dsn)
    if scheme in schemes:
        return
    other = system_of(scheme)
    if not scheme:
        why = "has no scheme"
    elif other is None:
        why = f"has the scheme {scheme}://"
    else:
        why = f"is a {other} DSN ({scheme}://)"
    advice = f"; for {other}, use {BROKERS[other]}" if other else ""
    accepted = ", ".join(f"{name}://" for name in schemes)
    raise ValueError(
        f"{owner} connects to {system} and needs a {system} DSN ({accepted}), such as "
        f"{example!r}, but its dsn {mask_dsn(dsn)!r} {why}{advice}")
