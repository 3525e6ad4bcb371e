"""RabbitMQ broker (the `amqp` extra, on aio-pika)."""

from repid.brokers.rabbitmq.broker import RabbitMessageBroker

__all__ = ["RabbitMessageBroker"]
