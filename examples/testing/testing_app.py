"""Run it with: python examples/testing/testing_app.py   (its tests: pytest examples/testing)

The app under test in test_app.py: a signup that sends a welcome email later.

`signup` stores a user and enqueues `send_welcome_email`, deferred by an hour: a job that
enqueues another job, the kind of flow the pytest plugin lets you test without a broker.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from repid import Connection, InMemoryMessageBroker, Job, Queue, Repid, Router, Worker

router = Router()
USERS: dict[str, str] = {}


@router.actor(queue="accounts")
async def signup(email: str, name: str) -> str:
    """Store the user, and schedule the welcome email for an hour from now."""
    USERS[email] = name
    in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
    await Job("send_welcome_email", queue="emails", args={"email": email},
              deferred_until=in_an_hour, retries=3).enqueue()
    return f"user {email} created"


@router.actor(queue="emails")
async def send_welcome_email(email: str) -> None:
    """Pretend to send an email."""
    print(f"welcome email sent to {email}")


async def main() -> None:
    async with Repid(Connection(InMemoryMessageBroker())).magic(auto_disconnect=True):
        await Queue("accounts").declare()
        await Queue("emails").declare()
        await Job("signup", queue="accounts",
                  args={"email": "ada@example.com", "name": "Ada"}).enqueue()
        await Worker(routers=[router], messages_limit=1).run()
    print(f"users: {USERS}")


if __name__ == "__main__":
    asyncio.run(main())
