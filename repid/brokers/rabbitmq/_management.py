"""What RabbitMQ reports only over its management HTTP API: a queue's unacknowledged
(in-flight) messages, and the list of queues. AMQP gives ready counts only.

Needs the `rabbitmq_management` plugin (`rabbitmq-plugins enable rabbitmq_management`);
without a management URL, or when the API does not answer, the count is unknown (-1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.request
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from repid.brokers._dsn import mask_dsn
from repid.brokers.rabbitmq._topology import DEAD_EXCHANGE
from repid.errors import BrokerConnectionError

logger = logging.getLogger("repid.brokers.rabbitmq")


def vhost_of(dsn: str) -> str:
    """The virtual host an AMQP DSN names (`/` when it names none)."""
    path = urlsplit(dsn).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _get_json(url: str, timeout: float) -> object:
    """GET `url` (credentials in its userinfo become basic auth) and decode its JSON."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


async def unacked(management_url: str, vhost: str, queue: str, timeout: float) -> int:
    """Messages of `queue` delivered and not yet acknowledged; -1 if the API cannot tell."""
    url = (f"{management_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}/"
           f"{quote(queue, safe='')}?columns=messages_unacknowledged")
    try:
        data = await asyncio.to_thread(_get_json, url, timeout)
    except (OSError, ValueError) as exc:
        logger.warning("RabbitMQ management API at %s did not answer for queue %r: %s",
                       mask_dsn(management_url), queue, exc)
        return -1
    count = data.get("messages_unacknowledged") if isinstance(data, dict) else None
    return count if isinstance(count, int) else -1


async def repid_queues(management_url: str, vhost: str, timeout: float) -> list[str]:
    """The queues of `vhost` that repid declared as work queues (those dead-lettering to
    `DEAD_EXCHANGE`), sorted: not their `:dead` companions, nor the delay levels."""
    url = (f"{management_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}"
           "?columns=name,arguments")
    try:
        data = await asyncio.to_thread(_get_json, url, timeout)
    except (OSError, ValueError) as exc:
        raise BrokerConnectionError(f"RabbitMQ management API at {mask_dsn(management_url)} "
                                    f"did not answer: {exc}") from None
    if not isinstance(data, list):
        raise BrokerConnectionError(f"RabbitMQ management API at {mask_dsn(management_url)} "
                                    "answered something else than a list of queues")
    # A work queue dead-letters under its own name; the priority-level queues of a queue
    # of quorum queues (`Q:high`, `Q:low`) under their queue's, so they are not listed.
    return sorted(str(queue["name"]) for queue in data if isinstance(queue, dict)
                  and isinstance(queue.get("arguments"), dict)
                  and queue["arguments"].get("x-dead-letter-exchange") == DEAD_EXCHANGE
                  and queue["arguments"].get("x-dead-letter-routing-key") == queue["name"])
