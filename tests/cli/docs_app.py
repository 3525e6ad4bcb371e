"""The app of docs/cli.md, where it is called `myapp.tasks`: in memory, with results."""

from repid import Connection, InMemoryBucketBroker, InMemoryMessageBroker, Repid, Router, Worker

router = Router()


@router.actor(queue="emails")
async def send_email(to: str) -> str:
    if "@" not in to:
        raise ValueError(f"not an address: {to}")
    return f"sent to {to}"


@router.actor(queue="reports")
async def build_report(month: str) -> int:
    return len(month)


worker = Worker(routers=[router])
app = Repid(Connection(InMemoryMessageBroker(),
                       results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True)))
