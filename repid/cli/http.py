"""A small threaded HTTP server for the supervisor's `/healthz` and `/metrics`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("repid.cli.http")

#: a route answers (status code, content type, body)
Route = Callable[[], tuple[int, str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    """Answers GET for the server's routes, 404 for other paths."""

    routes: Mapping[str, Route] = {}

    def do_GET(self) -> None:
        """Serve one route."""
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, ctype, body = 404, "text/plain", b"not found\n"
        else:
            try:
                status, ctype, body = route()
            except Exception:
                logger.exception("route %s failed", self.path)
                status, ctype, body = 500, "text/plain", b"error\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Access log at debug level on the `repid.cli.http` logger."""
        logger.debug("%s " + format, self.address_string(), *args)


class HttpServer:
    """Serves `routes` on `address:port` from a daemon thread."""

    def __init__(self, address: str, port: int, routes: Mapping[str, Route]) -> None:
        handler = type("Handler", (_Handler,), {"routes": dict(routes)})
        self._server = ThreadingHTTPServer((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"repid-http-{port}", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
