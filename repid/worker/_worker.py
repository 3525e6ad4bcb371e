"""Worker: a Router that consumes its actors' queues and runs their jobs."""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterable, Sequence

from repid.app import resolve_connection
from repid.connection import Connection
from repid.router import Router
from repid.worker._health import HealthCheckServer, HealthCheckServerSettings
from repid.worker._runner import Runner

logger = logging.getLogger("repid.worker")


class Worker(Router):
    """Consumes the queues of its actors and runs them, `tasks_limit` at a time.

    It stops after `messages_limit` messages, on `stop()`, or on SIGINT/SIGTERM: it then
    stops taking messages, gives running jobs `graceful_shutdown_time` seconds, and returns
    the unfinished ones to their queues without counting a retry.
    """

    def __init__(
        self,
        routers: Iterable[Router] | None = None,
        *,
        graceful_shutdown_time: float = 25.0,
        messages_limit: float = math.inf,
        tasks_limit: int = 1000,
        handle_signals: Sequence[signal.Signals] | None = None,
        auto_declare: bool = True,
        run_health_check_server: bool = False,
        health_check_server_settings: HealthCheckServerSettings | None = None,
        _connection: Connection | None = None,
    ) -> None:
        super().__init__()
        for router in routers or ():
            self.include_router(router)
        if tasks_limit < 1:
            raise ValueError(f"tasks_limit is {tasks_limit}; it must be at least 1")
        if messages_limit < 1:
            raise ValueError(f"messages_limit is {messages_limit}; it must be at least 1")
        self.graceful_shutdown_time = graceful_shutdown_time
        self.messages_limit = messages_limit
        self.tasks_limit = tasks_limit
        self.handle_signals = handle_signals
        self.auto_declare = auto_declare
        self.run_health_check_server = run_health_check_server
        self.health_check_server_settings = (health_check_server_settings
                                             or HealthCheckServerSettings())
        self._connection = _connection
        self.runner: Runner | None = None
        self.health_server: HealthCheckServer | None = None

    @property
    def connection(self) -> Connection:
        """The worker's own connection, else the one bound by `Repid.magic()`."""
        return resolve_connection(self._connection, "Worker")

    @connection.setter
    def connection(self, value: Connection) -> None:
        self._connection = value

    @property
    def own_connection(self) -> Connection | None:
        """The connection given to this worker (`_connection=`, or set), None when it uses
        the one bound by magic."""
        return self._connection

    async def declare_queues(self) -> None:
        """Declare every queue an actor of this worker reads."""
        broker = self.connection.message_broker
        for queue in self.topics_by_queue:
            await broker.queue_declare(queue)

    def health_problem(self, after: float) -> str | None:
        """Why this worker cannot take messages, once that has lasted `after` seconds; None
        while it can (what `/healthz` answers 503 with)."""
        if self.runner is None:
            return "the worker is not running"
        return self.runner.health_problem(after)

    def stop(self) -> None:
        """Ask a running worker to shut down gracefully."""
        if self.runner is not None:
            self.runner.stop()

    async def run(self) -> Runner:
        """Run until stopped; returns the runner (`runner.processed` counts messages)."""
        connection = self.connection
        if not self.actors:  # as in repid 1.x: nothing to run, so it is done
            logger.warning("this Worker has no actors, so it has nothing to run and returns "
                           "at once: register some with @router.actor and pass "
                           "Worker(routers=[router])")
            self.runner = Runner(self, connection)
            return self.runner
        opened_here = not connection.is_open
        if opened_here:
            await connection.connect()
        if self.auto_declare:
            await self.declare_queues()
        runner = self.runner = Runner(self, connection)
        middleware = connection.middleware
        if self.run_health_check_server:
            routes = {}
            for extra in middleware.collect("repid_http_routes", worker=self):
                routes.update(extra)
            settings = self.health_check_server_settings
            self.health_server = HealthCheckServer(
                settings, routes,
                health=lambda: self.health_problem(after=settings.unhealthy_after))
            await self.health_server.start()
        await middleware.call_lifecycle("repid_worker_start", worker=self)
        try:
            await runner.run()
        finally:
            await middleware.call_lifecycle("repid_worker_stop", worker=self)
            if self.health_server is not None:
                await self.health_server.stop()
                self.health_server = None
            if opened_here:
                await connection.disconnect()
        logger.info("worker stopped after %d messages (%d could not be settled and went "
                    "back to the broker)", runner.processed, runner.settle_failures)
        return runner
