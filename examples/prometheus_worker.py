"""Run it with: python examples/prometheus_worker.py [PORT]   (default port 9100)

Prometheus metrics: a Worker with MetricsPlugin, whose health server also serves /metrics.

It starts a worker on the in-memory broker with its health-check server on
127.0.0.1:PORT, runs a few jobs (one of which fails), scrapes its own
http://127.0.0.1:PORT/metrics like Prometheus would, prints the repid samples and stops.
With the CLI, `repid worker myapp:worker --metrics-port 9100 --processes 4` serves one
/metrics summing every process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import urllib.request

from repid import (
    Connection,
    HealthCheckServerSettings,
    InMemoryMessageBroker,
    Job,
    Queue,
    Repid,
    Router,
    Worker,
)
from repid_plugins.prometheus import MetricsPlugin

router = Router()


@router.actor
async def resize(width: int) -> int:
    """A job that fails for a negative width (and then goes to the dead-letter queue)."""
    if width < 0:
        raise ValueError(f"width {width} is negative")
    await asyncio.sleep(0.01)
    return width // 2


app = Repid(Connection(InMemoryMessageBroker(), plugins=[MetricsPlugin()]))


def scrape(port: int) -> str:
    """GET /metrics, as Prometheus would."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def main(port: int) -> None:
    async with app.magic(auto_disconnect=True):
        await Queue().declare()
        worker = Worker(
            routers=[router],
            run_health_check_server=True,
            health_check_server_settings=HealthCheckServerSettings(address="127.0.0.1",
                                                                   port=port),
            handle_signals=[],
        )
        running = asyncio.create_task(worker.run())
        for width in (640, 320, -1):
            await Job("resize", args={"width": width}).enqueue()
        for _ in range(200):  # up to 10 s for the 3 jobs
            if worker.runner is not None and worker.runner.processed >= 3:
                break
            await asyncio.sleep(0.05)
        text = await asyncio.to_thread(scrape, port)
        worker.stop()
        await running
    print(f"scraped http://127.0.0.1:{port}/metrics:")
    for line in text.splitlines():
        if line.startswith(("repid_messages_processed_total", "repid_actor_exceptions_total",
                            "repid_message_processing_duration_seconds_count")):
            print(" ", line)


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # the failure is logged
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9100))
