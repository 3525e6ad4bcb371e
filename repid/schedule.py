"""When a recurring job runs next."""

from __future__ import annotations

from datetime import datetime

from repid.data import DelayProperties, utcnow


def next_cron_time(expression: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(expression, after).get_next(datetime)


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
