"""A private RabbitMQ node for tests and soak runs that stop, restart or wipe a server.

`PrivateRabbit(port)` runs a second node beside the shared one, with its own node name
(`repid-test-<port>@localhost`), AMQP port, distribution port (`port + 20000`), data and log
directories under a temporary directory, and no plugins. Only loopback addresses are used.
It never touches the shared node on 5672: every command names its own node with `-n`.

    node = PrivateRabbit(5690)
    node.start()            # returns once `rabbitmq-diagnostics ping` answers
    node.dsn                # amqp://guest:guest@127.0.0.1:5690/
    node.stop_app(); node.start_app()   # the broker application goes down and up
    node.restart(wipe=True)             # a fresh node: queues and messages gone
    node.stop()             # always call it (a `with PrivateRabbit(...)` block does)

Needs the RabbitMQ server scripts (RABBITMQ_SBIN, default /usr/lib/rabbitmq/bin).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from .ports import free_port as any_free_port
from .ports import port_free as port_free

SBIN = Path(os.environ.get("RABBITMQ_SBIN", "/usr/lib/rabbitmq/bin"))
#: how long a start may take before it is reported as failed
START_TIMEOUT = 60.0


def available() -> str | None:
    """None when a private node can be started here, else why not."""
    if not (SBIN / "rabbitmq-server").exists():
        return f"RabbitMQ server scripts not found in {SBIN} (set RABBITMQ_SBIN)"
    if shutil.which("erl") is None and not Path("/usr/lib/erlang/bin/erl").exists():
        return "Erlang (erl) is not installed"
    return None


def free_port() -> int:
    """A free loopback port whose distribution port (`port + 20000`) is free too."""
    for _ in range(200):
        port = any_free_port()
        if port + 20000 <= 65535 and port_free(port + 20000):
            return port
    raise RuntimeError("no free loopback port pair (port, port + 20000) found")


class PrivateRabbit:
    """One private RabbitMQ node on 127.0.0.1:`port` (see the module docstring)."""

    def __init__(self, port: int, base_dir: Path | None = None) -> None:
        self.port = port
        self.dist_port = port + 20000
        self.node = f"repid-test-{port}@localhost"
        self._own_dir = base_dir is None
        self.base = Path(tempfile.mkdtemp(prefix=f"repid-rabbit-{port}-")) if base_dir is None \
            else base_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    @property
    def dsn(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    # --- files and environment ---

    def _write_files(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(f"REPIDTEST{self.port}COOKIE")
            cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        # guest may log in over loopback only (the default); one listener on our port.
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = warning\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": str(self.base / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _ctl(self, tool: str, *args: str, timeout: float = 30.0,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(SBIN / tool), "-n", self.node, *args], env=self._env(),
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {self.node} failed "
                               f"({result.returncode}): {result.stderr or result.stdout}")
        return result

    # --- life cycle ---

    def start(self) -> PrivateRabbit:
        """Start the node and wait until it answers a ping and accepts AMQP connections."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        for port in (self.port, self.dist_port):
            if not port_free(port):
                raise RuntimeError(f"port {port} on 127.0.0.1 is taken; pick another port "
                                   "for PrivateRabbit")
        log = open(self.base / "server.out", "ab")  # noqa: SIM115 - closed with the node
        self._proc = subprocess.Popen(
            [str(SBIN / "rabbitmq-server")], env=self._env(), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        stop = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.node} exited "
                                   f"({self._proc.returncode}); see {self.base}/server.out "
                                   f"and {self.base}/log")
            ping = self._ctl("rabbitmq-diagnostics", "-q", "ping", timeout=20, check=False)
            if ping.returncode == 0 and self._amqp_open():
                return
            if time.monotonic() > stop:
                raise RuntimeError(f"RabbitMQ node {self.node} did not answer within "
                                   f"{START_TIMEOUT} s; see {self.base}/log")
            time.sleep(0.3)

    def _amqp_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (connections drop, the port closes); the Erlang
        node stays up, so `start_app` brings it back with its data."""
        self._ctl("rabbitmqctl", "stop_app", timeout=60)

    def start_app(self) -> None:
        self._ctl("rabbitmqctl", "start_app", timeout=60)
        stop = time.monotonic() + START_TIMEOUT
        while not self._amqp_open():
            if time.monotonic() > stop:
                raise RuntimeError(f"{self.node} did not open port {self.port} after start_app")
            time.sleep(0.1)

    def restart(self, wipe: bool = False) -> None:
        """Stop the whole node and start it again; `wipe=True` deletes its data first, so
        it comes back as a fresh server (no queues, exchanges or messages)."""
        self._stop_node()
        if wipe:
            shutil.rmtree(self.base / "mnesia", ignore_errors=True)
        self.start()

    def _stop_node(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        self._ctl("rabbitmqctl", "stop", timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            # Stopping failed: end the node's whole process group (it was started in a
            # session of its own, so this reaches only this node's processes).
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        else:
            # erl_child_setup and friends of this node, if any are left
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the node and delete its directory (if it made it). Safe to call twice."""
        try:
            self._stop_node()
        finally:
            if self._own_dir:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivateRabbit:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
