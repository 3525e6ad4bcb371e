"""A private Redis server for tests and soak runs that kill, restart or wipe a server.

`PrivateRedis(port)` runs `redis-server` on 127.0.0.1:`port` with its own data directory
(a new temporary one unless `directory` is given), never the shared server on 6379.

    server = PrivateRedis(6390, appendonly=True)
    server.start()      # returns once the server answers PING
    server.dsn          # redis://127.0.0.1:6390/0
    server.kill()       # SIGKILL: no shutdown, no save
    server.start()      # again on the same data (what the append-only file kept)
    server.restart(wipe=True)   # stop, delete the data, start empty
    server.pause()      # SIGSTOP: connected, answering nothing; server.resume() undoes it
    server.stop()       # always call it (a `with PrivateRedis(...)` block does)

With `appendonly=True` every write is fsynced before Redis replies (`appendfsync always`),
so whatever Redis confirmed survives a SIGKILL. Without it nothing is saved: a restart
starts empty.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .ports import free_port as free_port

#: how long a start may take before it is reported as failed
START_TIMEOUT = 15.0


def available() -> str | None:
    """None when a private server can be started here, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH"
    return None


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """One private Redis server on 127.0.0.1:`port` (see the module docstring)."""

    def __init__(self, port: int, appendonly: bool = False,
                 directory: Path | None = None) -> None:
        self.port = port
        self.appendonly = appendonly
        self._own_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix=f"repid-redis-{port}-")) \
            if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"), "--protected-mode", "yes",
        ]
        if self.appendonly:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        return command

    def start(self) -> None:
        """Start the server on its data directory; return once it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self._proc.returncode}; "
                    f"see {self.directory / 'redis.log'} (is the port taken?)")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer within "
                    f"{START_TIMEOUT} s; see {self.directory / 'redis.log'}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (no save, no goodbye to clients) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered until `resume`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 5 s) and delete a temporary data
        directory."""
        self.resume()  # a paused server would not see the SIGTERM
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self, wipe: bool = False) -> None:
        """Kill the server and start it again; `wipe`: with its data deleted first."""
        self.kill()
        if wipe:
            for entry in self.directory.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.name != "redis.log":
                    entry.unlink()
        self.start()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
