"""Loopback ports for the private servers the tests and benchmarks start."""

from __future__ import annotations

import socket


def port_free(port: int) -> bool:
    """Whether nothing listens on `port` of loopback right now (connections of a stopped
    server lingering in TIME_WAIT do not count: servers bind with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
