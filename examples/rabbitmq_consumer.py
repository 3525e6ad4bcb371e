"""Run it with: python examples/rabbitmq_consumer.py [MESSAGES]

RabbitMQ consumer: a Worker running the jobs rabbitmq_producer.py enqueues.

It connects to $RABBIT_CONNECTION_STRING (default amqp://guest:guest@127.0.0.1:5672/) and
runs `send_email` jobs from the `emails` queue: MESSAGES of them, or until Ctrl-C (SIGINT)
or SIGTERM, which let running jobs finish first. In production, run the same router with
the CLI instead: `repid worker examples.rabbitmq_consumer:router --processes 4`.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys

from repid import Connection, RabbitMessageBroker, Repid, Router, Worker

#: the queue both programs use ($REPID_EXAMPLE_QUEUE lets tests run side by side)
QUEUE = os.environ.get("REPID_EXAMPLE_QUEUE", "emails")

router = Router()


@router.actor(queue=QUEUE)
async def send_email(to: str, subject: str) -> str:
    """Pretend to send an email."""
    await asyncio.sleep(0.01)
    print(f"sent {subject!r} to {to}", flush=True)
    return f"sent to {to}"


app = Repid(
    Connection(
        RabbitMessageBroker(
            dsn=os.environ.get("RABBIT_CONNECTION_STRING", "amqp://guest:guest@127.0.0.1:5672/")
        )
    )
)


async def main(messages: float) -> None:
    async with app.magic(auto_disconnect=True):
        runner = await Worker(routers=[router], messages_limit=messages).run()
    print(f"worker processed {runner.processed} messages")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else math.inf))
