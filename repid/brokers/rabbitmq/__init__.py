"""RabbitMQ broker (the `amqp` extra, on aio-pika)."""

from repid.brokers.rabbitmq._broker import RabbitMessageBroker

__all__ = ["RabbitMessageBroker"]
