"""Run it with: python examples/rabbitmq_producer.py [COUNT]

RabbitMQ producer: enqueues jobs for rabbitmq_consumer.py to run.

It connects to $RABBIT_CONNECTION_STRING (default amqp://guest:guest@127.0.0.1:5672/),
declares the `emails` queue and enqueues COUNT (default 3) `send_email` jobs. The producer
knows only job names and the queue: it never imports the consumer's code.
"""

from __future__ import annotations

import asyncio
import os
import sys

from repid import Connection, Job, Queue, RabbitMessageBroker, Repid

#: the queue both programs use ($REPID_EXAMPLE_QUEUE lets tests run side by side)
QUEUE = os.environ.get("REPID_EXAMPLE_QUEUE", "emails")

app = Repid(
    Connection(
        RabbitMessageBroker(
            dsn=os.environ.get("RABBIT_CONNECTION_STRING", "amqp://guest:guest@127.0.0.1:5672/")
        )
    )
)


async def main(count: int) -> None:
    async with app.magic(auto_disconnect=True):
        await Queue(QUEUE).declare()
        for n in range(count):
            job = Job("send_email", queue=QUEUE,
                      args={"to": f"user{n}@example.com", "subject": f"Hello #{n}"})
            await job.enqueue()
        print(f"enqueued {count} send_email jobs to queue {QUEUE}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
