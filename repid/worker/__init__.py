"""The consumer side: a `Worker` (a Router that consumes its actors' queues) and what runs
it.

- `_worker.py`: `Worker`, what users build and run;
- `_runner.py`: one run of a worker (consuming, capacity, limits, graceful shutdown);
- `_processor.py`: what happens to one message (run its actor, store its result, settle it);
- `_isolation.py`: suspects run alone;
- `_signals.py`: stop signals, shared with the `repid` command's processes;
- `_health.py`: the HTTP server for health checks (and plugins' routes).
"""

from repid.worker._worker import Worker

__all__ = ["Worker"]
