"""The consumer side: a `Worker` (a Router that consumes its actors' queues) and what runs
it.

- `worker.py`: `Worker`, what users build and run;
- `runner.py`: one run of a worker (consuming, capacity, limits, graceful shutdown);
- `processor.py`: what happens to one message (run its actor, store its result, settle it);
- `isolation.py`: suspects run alone;
- `signals.py`: stop signals, shared with the `repid` command's processes;
- `health.py`: the HTTP server for health checks (and plugins' routes).
"""

from repid.worker.worker import Worker

__all__ = ["Worker"]
