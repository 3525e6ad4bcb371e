"""Exceptions repid raises. Each message names the problem and how to fix it.

Every one is a `RepidError`, and also the built-in exception a caller would catch without
knowing repid (a missing queue is a `KeyError`, a lost connection a `ConnectionError`)::

    RepidError
    ├── NoConnectionError         (RuntimeError)  a Job, Queue or Worker with no connection
    ├── QueueNotDeclaredError     (KeyError)      a queue the broker does not know
    ├── QueueDeclareError         (RuntimeError)  the broker refused a declaration
    ├── PayloadDecodeError        (ValueError)    a message that cannot be read: poison
    ├── MessageTooLargeError      (ValueError)    a payload over max_message_size
    ├── BrokerConnectionError     (ConnectionError) the broker is unreachable
    ├── EnqueueNotConfirmedError  (ConnectionError) the broker did not confirm an enqueue
    ├── ActorTimeoutError         (TimeoutError)  an actor ran past its job's timeout
    ├── AlreadySettledError       (RuntimeError, ValueError) a message settled twice
    ├── NoRetriesLeftError        (ValueError)    `msg.retry()` on a job with no retries left
    ├── PoisonMessageError        (ValueError)    a poison dead message asked to go back
    └── SettleError                               a failure between a run and its settle

`repid.ArgumentsError` (arguments that do not fit an actor) is a `PayloadDecodeError`.
"""

from __future__ import annotations

from typing import Any


class RepidError(Exception):
    """Base class of every repid error."""


class NoConnectionError(RepidError, RuntimeError):
    """A Job, Queue or Worker was used with no connection."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} has no connection. Either pass `_connection=my_connection`, or bind one "
            "with `async with Repid(my_connection).magic():` (or `await app.magic_connect()`)."
        )


class QueueNotDeclaredError(RepidError, KeyError):
    """A message was sent to a queue the broker does not know."""

    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue

    def __str__(self) -> str:
        return (
            f"queue {self.queue!r} is not declared. Declare it first with "
            f"`await Queue({self.queue!r}).declare()`, or run a Worker with auto_declare=True."
        )


class PayloadDecodeError(RepidError, ValueError):
    """A message's payload or parameters could not be decoded (a poison message)."""


class EnqueueNotConfirmedError(RepidError, ConnectionError):
    """The broker did not confirm that it stored the message; it may not have been sent."""


class BrokerConnectionError(RepidError, ConnectionError):
    """The broker is unreachable."""


class QueueDeclareError(RepidError, RuntimeError):
    """The broker refused to declare a queue, e.g. it exists with other arguments."""


class SettleError(RepidError):
    """Something failed between an actor's run and its message's settle (the result could
    not be stored, a plugin or a retry policy raised). The message was sent back to run
    again, or dead-lettered once that happened too often; the worker counts these."""


class MessageTooLargeError(RepidError, ValueError):
    """A message's payload is larger than its broker's `max_message_size`."""

    def __init__(self, key: Any, size: int, limit: int) -> None:
        super().__init__(key, size, limit)
        self.key, self.size, self.limit = key, size, limit

    def __str__(self) -> str:
        return (f"message {self.key.id_!r} for {self.key.topic!r} is {self.size:,} bytes, over "
                f"the broker's max_message_size of {self.limit:,} bytes. Store large inputs "
                "elsewhere (an args bucket, object storage) and pass a reference, or raise "
                "max_message_size= on the broker.")


class ActorTimeoutError(RepidError, TimeoutError):
    """The actor ran past its job's timeout (the run counts as failed, and is retried if
    the job has retries left)."""


class AlreadySettledError(RepidError, RuntimeError, ValueError):
    """A message was settled (acked, nacked, rejected, retried, rescheduled) a second
    time. Also a `ValueError`, as repid 1.x raised for a read-only message."""


class PoisonMessageError(RepidError, ValueError):
    """A dead message that cannot be decoded (a poison message) was asked to go back to its
    queue (`reschedule`, a retry, a broker-level `requeue`): it can only be deleted
    (`msg.ack()`, `repid dead delete`). The message stays dead and unsettled."""


class NoRetriesLeftError(RepidError, ValueError):
    """`msg.retry()` was called on a message whose job has no retries left (repid 1.x
    raised `ValueError` there too); `msg.force_retry()` retries regardless."""
