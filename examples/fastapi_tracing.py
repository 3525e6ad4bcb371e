"""Run it with: python examples/fastapi_tracing.py   (serve: uvicorn examples.fastapi_tracing:app)

FastAPI + OpenTelemetry: one trace from the HTTP request to the job it enqueued.

The app enqueues a `thumbnail` job from `POST /images`; a Worker in the same process (on
the in-memory broker, started and stopped by the app's lifespan) runs it. With
`TracingPlugin` on the connection, the job's `send` and `process` spans join the request's
trace: the trace context travels in the message headers, so the same works across
processes and machines with Redis or RabbitMQ. Spans print to the console, one per line.
Run as a script, it sends one request through httpx's ASGI transport and waits for the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Queue,
    Repid,
    Router,
    Worker,
)
from repid_plugins.opentelemetry import TracingPlugin


def one_line(span: ReadableSpan) -> str:
    """A span as `trace=<id> span=<id> parent=<id> <name>`."""
    context = span.get_span_context()
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    trace_id = f"{context.trace_id:032x}" if context else "?"
    span_id = f"{context.span_id:016x}" if context else "?"
    return f"trace={trace_id} span={span_id} parent={parent} {span.name}\n"


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
tracer = provider.get_tracer("fastapi_tracing example")

router = Router()


@router.actor
async def thumbnail(image: str, width: int) -> str:
    """The job: pretend to make a thumbnail. Its span is a child of the request's trace."""
    await asyncio.sleep(0.01)
    return f"{image}@{width}px"


repid_app = Repid(
    Connection(
        InMemoryMessageBroker(),
        results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True),
        plugins=[TracingPlugin(tracer_provider=provider)],
    )
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Connect repid, declare the queue, run a worker beside the app."""
    await repid_app.magic_connect()
    await Queue().declare()
    worker = Worker(routers=[router], handle_signals=[])
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await running
        await repid_app.magic_disconnect()


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def trace_requests(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """A SERVER span per request (opentelemetry-instrumentation-fastapi does this too)."""
    with tracer.start_as_current_span(f"{request.method} {request.url.path}",
                                      kind=SpanKind.SERVER):
        return await call_next(request)


@app.post("/images")
async def create_thumbnail(image: str, width: int = 128) -> dict[str, str]:
    """Enqueue the job; its `send default` span is a child of this request's span."""
    job = Job("thumbnail", args={"image": image, "width": width})
    await job.enqueue()
    trace_id = trace.get_current_span().get_span_context().trace_id
    return {"job": job.result_id, "trace": f"{trace_id:032x}"}


@app.get("/results/{result_id}")
async def get_result(result_id: str) -> dict[str, object]:
    """The job's result, once the worker has stored it."""
    results = repid_app.connection.results_bucket_broker
    bucket = None if results is None else await results.get_bucket(result_id)
    if bucket is None:
        return {"done": False}
    return {"done": True, "data": getattr(bucket, "data", None)}


async def main() -> None:
    """Send one request through the app (lifespan included) and wait for its job."""
    import httpx

    async with lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://example") as client:
        created = (await client.post("/images", params={"image": "cat.png", "width": 64})).json()
        answer: dict[str, object] = {}
        for _ in range(100):
            answer = (await client.get(f"/results/{created['job']}")).json()
            if answer["done"]:
                break
            await asyncio.sleep(0.05)
        print(f"request trace {created['trace']}: job result {answer.get('data')!r}",
              flush=True)


if __name__ == "__main__":
    asyncio.run(main())
