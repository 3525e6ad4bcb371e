"""When a recurring job runs next."""

from __future__ import annotations

from datetime import datetime, timezone

from repid.data import DelayProperties, utcnow


def next_cron_time(expression: str, after: datetime) -> datetime:
    """The next time after `after` that `expression` names on the local wall clock (as in
    repid 1.x: `0 12 * * *` is noon where the process runs), as an aware UTC datetime."""
    from croniter import croniter

    local = after.astimezone().replace(tzinfo=None)
    return croniter(expression, local).get_next(datetime).astimezone(timezone.utc)


def first_run(delay: DelayProperties) -> datetime | None:
    """A new job's first run: `delay_until`, else one period from now, else the next cron
    time; None when the job is not deferred (it runs at once)."""
    if delay.delay_until is not None:
        return delay.delay_until
    if delay.defer_by is not None:
        return utcnow() + delay.defer_by
    if delay.cron is not None:
        return next_cron_time(delay.cron, utcnow())
    return None


def next_run(delay: DelayProperties) -> datetime:
    """A recurring job's next run after the one that just happened.

    Periods count from the first scheduled run (`delay_until`), so neither slow runs nor
    retries shift the schedule; missed periods are skipped rather than run in a burst.
    """
    now = utcnow()
    if delay.cron is not None:
        return next_cron_time(delay.cron, now)
    assert delay.defer_by is not None
    anchor = delay.delay_until or delay.next_execution_time or now
    period = delay.defer_by
    # at least one period on: a run delivered a hair before its time is not run twice
    return anchor + period * max((now - anchor) // period + 1, 1)
