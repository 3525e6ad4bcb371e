"""Acknowledging a delivered message on the channel it came from (basic.ack and
basic.reject), and the errors that say that channel or its connection went away."""

from __future__ import annotations

import asyncio
import logging

from aiormq.abc import DeliveredMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

logger = logging.getLogger("repid.brokers.rabbitmq")

#: errors of a channel or connection that went away under us
CHANNEL_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, asyncio.TimeoutError)


async def settle(message: DeliveredMessage, requeue: bool | None) -> None:
    """basic.ack (requeue None) or basic.reject on the channel the message came from.

    Returns once the frame is written to the socket, so a settled message is not
    redelivered because this process stopped right after settling it."""
    tag = message.delivery_tag
    assert tag is not None
    if requeue is None:
        await message.channel.basic_ack(tag)
    else:
        await message.channel.basic_reject(tag, requeue=requeue)


async def return_to_queue(message: DeliveredMessage) -> None:
    """basic.reject requeue=True, ignoring a closed channel (which returns it anyway)."""
    try:
        await settle(message, requeue=True)
    except CHANNEL_ERRORS:
        logger.debug("channel closed before a message could be returned; RabbitMQ "
                     "returns it by itself")
