"""Headers repid itself writes on a message (every other header is the user's)."""

#: why a message was dead-lettered
DEAD_REASON_HEADER = "x-repid-dead-reason"
#: how often a failure between the message's run and its settle sent it back
RECOVERIES_HEADER = "x-repid-recoveries"
#: how often workers without an actor for the message's topic returned it to its queue
#: (dropped once a worker with the actor takes it)
NO_ACTOR_RETURNS_HEADER = "x-repid-no-actor-returns"
#: headers about a message's past failures: a reschedule starts it afresh without them
FATE_HEADERS = (DEAD_REASON_HEADER, RECOVERIES_HEADER, NO_ACTOR_RETURNS_HEADER)
