"""What the command line names: import paths, and connections built from DSN variables.

Every problem here becomes a `CliError`: one line on stderr and exit code 2. A DSN is
only ever shown masked (`repid.brokers._dsn.mask_dsn`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import click

from repid.app import Repid
from repid.brokers._dsn import dsn_secrets, mask_dsn
from repid.brokers.base import BucketBroker, MessageBroker
from repid.brokers.in_memory import InMemoryBucketBroker, InMemoryMessageBroker
from repid.connection import Connection
from repid.errors import BrokerConnectionError
from repid.router import Router
from repid.worker import Worker

logger = logging.getLogger("repid.cli")

BROKER_ENV = "REPID_BROKER_DSN"
ARGS_BUCKET_ENV = "REPID_ARGS_BUCKET_DSN"
RESULTS_BUCKET_ENV = "REPID_RESULTS_BUCKET_DSN"
#: RabbitMQ's management API, for the in-flight counts of `repid queues stats`
RABBITMQ_MANAGEMENT_ENV = "REPID_RABBITMQ_MANAGEMENT_URL"
DSN_ENVS = (BROKER_ENV, ARGS_BUCKET_ENV, RESULTS_BUCKET_ENV)
MIN_BARE_SECRET = 6

MESSAGE_SCHEMES = {"redis": "redis", "rediss": "redis", "unix": "redis", "amqp": "amqp",
                   "amqps": "amqp", "memory": "memory",
                   "redis+cluster": "redis", "rediss+cluster": "redis",
                   "redis+sentinel": "redis"}
BUCKET_SCHEMES = {"redis": "redis", "rediss": "redis", "unix": "redis", "memory": "memory",
                  "redis+cluster": "redis", "rediss+cluster": "redis",
                  "redis+sentinel": "redis"}
HOSTLESS_SCHEMES = ("memory", "unix")


class CliError(click.ClickException):
    """A problem with what the user asked for: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(scrub(" ".join(message.split())))


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every DSN from the environment, and its password, masked."""
    env = os.environ if environ is None else environ
    for name in DSN_ENVS:
        dsn = env.get(name)
        if not dsn:
            continue
        text = text.replace(dsn, safe_dsn(dsn))
        for secret in dsn_secrets(dsn):
            text = text.replace(f":{secret}@", ":***@").replace(f"={secret}", "=***")
            if len(secret) >= MIN_BARE_SECRET:
                # a short secret would match ordinary words; it is only masked in a DSN
                text = text.replace(secret, "***")
    return text


def safe_dsn(dsn: str) -> str:
    """`dsn` with its password masked; not shown at all when it cannot be parsed as a URL
    (its password could not be told apart)."""
    return mask_dsn(dsn) if "://" in dsn else "value hidden"


# --- import paths ------------------------------------------------------------------------


def _import_module(module_name: str, path: str) -> ModuleType:
    """Import `module_name` (a dotted name or a file path), or raise a one-line CliError."""
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        file = Path(module_name)
        if file.suffix != ".py" or not file.is_file():
            raise CliError(f"cannot import {path!r}: no such file {module_name!r}")
        directory, module_name = str(file.resolve().parent), file.stem
    else:
        directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CliError(f"cannot import {path!r}: no module named {missing!r} (run from "
                           "the directory that contains it, or install it)") from None
        raise CliError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") \
            from None
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise CliError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") \
            from None


def import_object(path: str) -> object:
    """The object named by `MODULE:ATTRIBUTE` (MODULE may also be a path to a .py file)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"{path!r} is not an import path: use MODULE:ATTRIBUTE, "
                       "e.g. myapp.tasks:worker")
    found: object = _import_module(module_name, path)
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CliError(f"cannot import {path!r}: module {module_name!r} has no "
                           f"attribute {attribute!r}") from None
    return found


def load_worker(path: str, queues: tuple[str, ...] = ()) -> Worker:
    """The Worker named by `path`, or a new Worker around the Router it names; with
    `queues`, keeping only the actors of those queues."""
    found = import_object(path)
    if isinstance(found, Worker):
        worker = found
    elif isinstance(found, Router):
        worker = Worker(routers=[found])
    else:
        raise CliError(f"{path!r} is a {type(found).__name__}, not a repid Worker or Router")
    if not worker.actors:
        raise CliError(f"{path!r} has no actors: register some with @router.actor")
    if queues:
        select_queues(worker, queues, path)
    return worker


def parse_queues(text: str | None) -> tuple[str, ...]:
    """The names of `--queues a,b` (spaces and empty names ignored); refused when it is
    given but names no queue (it would otherwise mean every queue)."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    if text is not None and not names:
        raise CliError(f"--queues {text!r} names no queue: give queue names separated by "
                       "commas, e.g. --queues emails,reports (leave it out for every queue)")
    return names


def select_queues(worker: Worker, queues: tuple[str, ...], path: str) -> None:
    """Keep only the actors of `worker` that read one of `queues`."""
    known = sorted(worker.topics_by_queue)
    unknown = [name for name in queues if name not in known]
    if unknown:
        raise CliError(f"--queues: {', '.join(map(repr, unknown))} not read by any actor of "
                       f"{path!r}; its queues are: {', '.join(known)}")
    worker.actors = {name: actor for name, actor in worker.actors.items()
                     if actor.queue in queues}


def load_app(path: str) -> Connection:
    """The Connection of the `Repid` or `Connection` that `--app` names."""
    found = import_object(path)
    if isinstance(found, Repid):
        return found.connection
    if isinstance(found, Connection):
        return found
    raise CliError(f"--app {path!r} is a {type(found).__name__}, not a repid Repid or "
                   "Connection")


# --- DSNs ----------------------------------------------------------------------------------


def _scheme(dsn: str, variable: str, allowed: Mapping[str, str]) -> str:
    """The broker kind a DSN's scheme selects, after checking that the DSN is well formed."""
    masked = safe_dsn(dsn)
    try:
        parts = urlsplit(dsn)
        if "," not in parts.netloc:  # several hosts (a cluster): the broker checks each
            parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise CliError(f"{variable} is malformed ({masked}): {exc}") from None
    scheme = parts.scheme.lower()
    if "://" not in dsn or not scheme:
        raise CliError(f"{variable} is malformed ({masked}): expected "
                       "SCHEME://[USER:PASSWORD@]HOST[:PORT][/PATH]")
    if scheme not in allowed:
        schemes = ", ".join(f"{s}://" for s in allowed)
        raise CliError(f"{variable} has an unsupported scheme {scheme!r} ({masked}): "
                       f"use {schemes}")
    if scheme not in HOSTLESS_SCHEMES and not parts.hostname:
        raise CliError(f"{variable} is malformed ({masked}): it names no host")
    return allowed[scheme]


def _extra(module: str, extra: str, variable: str) -> ModuleType:
    """Import a broker module, saying which extra to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CliError(f"{variable} needs an extra: pip install 'repid[{extra}]' ({exc})") \
            from None


def message_broker_from_dsn(dsn: str, variable: str = BROKER_ENV) -> MessageBroker:
    """A message broker for `dsn`: redis(s):// Redis, amqp(s):// RabbitMQ, memory:// in-memory."""
    kind = _scheme(dsn, variable, MESSAGE_SCHEMES)
    try:
        if kind == "redis":
            broker: MessageBroker = _extra("repid.brokers.redis", "redis",
                                           variable).RedisMessageBroker(dsn=dsn)
        elif kind == "amqp":
            broker = _extra("repid.brokers.rabbitmq", "amqp", variable).RabbitMessageBroker(
                dsn=dsn, management_url=os.environ.get(RABBITMQ_MANAGEMENT_ENV) or None)
        else:
            broker = InMemoryMessageBroker()
    except (ValueError, TypeError) as exc:
        raise CliError(f"{variable} is malformed ({safe_dsn(dsn)}): {exc}") from None
    return broker


def bucket_broker_from_dsn(dsn: str, variable: str, use_result_bucket: bool) -> BucketBroker:
    """A bucket broker for `dsn`: redis(s):// Redis, memory:// in-memory."""
    kind = _scheme(dsn, variable, BUCKET_SCHEMES)
    try:
        if kind == "redis":
            broker: BucketBroker = _extra("repid.brokers.redis", "redis",
                                          variable).RedisBucketBroker(
                dsn=dsn, use_result_bucket=use_result_bucket)
        else:
            broker = InMemoryBucketBroker(use_result_bucket=use_result_bucket)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{variable} is malformed ({safe_dsn(dsn)}): {exc}") from None
    return broker


def connection_from_env(environ: Mapping[str, str] | None = None) -> Connection:
    """A Connection from REPID_BROKER_DSN and the optional bucket DSN variables."""
    env = os.environ if environ is None else environ
    dsn = env.get(BROKER_ENV, "").strip()
    if not dsn:
        raise CliError(f"no connection: pass --app MODULE:ATTRIBUTE (a Repid or Connection) "
                       f"or set {BROKER_ENV} (redis://, amqp:// or memory://)")
    message_broker = message_broker_from_dsn(dsn)
    args_dsn = env.get(ARGS_BUCKET_ENV, "").strip()
    results_dsn = env.get(RESULTS_BUCKET_ENV, "").strip()
    return Connection(
        message_broker,
        args_bucket_broker=bucket_broker_from_dsn(args_dsn, ARGS_BUCKET_ENV, False)
        if args_dsn else None,
        results_bucket_broker=bucket_broker_from_dsn(results_dsn, RESULTS_BUCKET_ENV, True)
        if results_dsn else None,
    )


def load_connection(app: str | None, worker: Worker | None = None) -> Connection:
    """The connection to use: `--app`, else the worker's own, else the DSN variables."""
    if app is not None:
        return load_app(app)
    own = worker.own_connection if worker is not None else None
    if own is not None:
        return own
    return connection_from_env()


def describe(connection: Connection) -> str:
    """A one-line description of a connection's brokers (their reprs mask passwords)."""
    parts = [repr(connection.message_broker)]
    if connection.args_bucket_broker is not None:
        parts.append(f"args: {connection.args_bucket_broker!r}")
    if connection.results_bucket_broker is not None:
        parts.append(f"results: {connection.results_bucket_broker!r}")
    return scrub(", ".join(parts))


async def connect(connection: Connection) -> None:
    """Connect, turning any failure into a one-line CliError naming the (masked) broker."""
    try:
        await connection.connect()
    except Exception as exc:
        try:
            await connection.disconnect()
        except Exception:
            logger.debug("disconnecting after a failed connect failed", exc_info=True)
        text = str(exc) or type(exc).__name__
        # repid's own connection errors name the server and say how to fix it: as they are
        if "cannot" not in text and not isinstance(exc, BrokerConnectionError):
            text = f"cannot connect to {describe(connection)}: {type(exc).__name__}: {text}"
        raise CliError(text) from None


def load_plugin(path: str) -> object:
    """The plugin `--plugin` names: an object, or a class called with no arguments."""
    found = import_object(path)
    if isinstance(found, type):
        try:
            return found()
        except Exception as exc:
            raise CliError(f"--plugin {path!r}: {found.__name__}() failed: "
                           f"{type(exc).__name__}: {exc}") from None
    return found


def register_plugins(connection: Connection, paths: tuple[str, ...]) -> None:
    """Register the `--plugin` objects on the connection's middleware."""
    for path in paths:
        plugin = load_plugin(path)
        try:
            connection.middleware.register(plugin)
        except Exception as exc:
            raise CliError(f"--plugin {path!r} cannot be registered: {type(exc).__name__}: "
                           f"{exc}") from None
