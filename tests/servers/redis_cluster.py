"""A private three-master Redis Cluster for tests and soak runs that stop and start a node.

`PrivateRedisCluster(ports)` runs one `redis-server --cluster-enabled yes` per port on
127.0.0.1, each with its own data directory (under one temporary directory unless
`directory` is given), joins them with `redis-cli --cluster create ... --cluster-yes`
(three masters, no replicas) and waits until every node reports `cluster_state:ok`.
Never the shared server on 6379.

    cluster = PrivateRedisCluster(free_ports())   # e.g. (7100, 7101, 7102)
    cluster.start()          # returns once the cluster state is ok on every node
    cluster.dsn              # redis+cluster://127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102/
    cluster.stop_node(1)     # SIGKILL one node: its slots cannot be served
    cluster.start_node(1)    # again on the same data and cluster config; waits for ok
    cluster.owner_of(slot)   # the index of the node that serves a slot
    cluster.stop()           # always call it (a `with PrivateRedisCluster(...)` block does)

Every node runs with `appendonly yes` and `appendfsync always`, so whatever a node confirmed
survives its SIGKILL (`appendonly=False`: nothing is saved, for benchmarks).
`cluster-require-full-coverage no` lets the other masters serve their slots while one is
down (with the default `yes`, the whole cluster refuses commands once a master is marked
failed); `cluster-node-timeout` is short (2 s), so a stopped node is noticed quickly. A bus
port is the node's port + 10000.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.servers.ports import port_free
from tests.servers.redis_server import PrivateRedis

#: how long forming the cluster, or a node's rejoining it, may take
CLUSTER_TIMEOUT = 30.0
#: milliseconds after which the other nodes mark an unreachable node as failed
NODE_TIMEOUT_MS = 2000
#: the ports the test clusters may use (their bus ports are these + 10000)
PORT_RANGE = range(7100, 7120)


def available() -> str | None:
    """None when a private cluster can be started here, else why not."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not on PATH"
    return None


def free_ports(count: int = 3, ports: range = PORT_RANGE) -> tuple[int, ...]:
    """`count` consecutive ports of `ports` (taken in blocks of `count`) on which, and on
    whose bus ports, nothing listens right now: so test sessions that run at the same time
    each get a cluster of their own."""
    for start in range(ports.start, ports.stop - count + 1, count):
        block = tuple(range(start, start + count))
        if all(port_free(port) and port_free(port + 10000) for port in block):
            return block
    raise RuntimeError(f"no {count} free ports in {ports.start}-{ports.stop - 1} (and their "
                       "bus ports, +10000) on 127.0.0.1: stop the servers that hold them")


def _ask(port: int, *command: str, timeout: float = 5.0) -> str:
    """One command to the node on `port` (inline protocol); its reply's text (a bulk
    string's content, or the status line), or "" when the node cannot be reached or does
    not answer within `timeout` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall((" ".join(command) + "\r\n").encode())
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return ""
                data += chunk
            head, _, rest = data.partition(b"\r\n")
            if not head.startswith(b"$"):
                return head.decode(errors="replace")
            size = int(head[1:])
            while len(rest) < size:
                chunk = sock.recv(65536)
                if not chunk:
                    return ""
                rest += chunk
            return rest[:size].decode(errors="replace")
    except (OSError, ValueError):
        return ""


class ClusterNode(PrivateRedis):
    """One node of the cluster: a `PrivateRedis` with cluster mode on."""

    def _command(self) -> list[str]:
        return [*super()._command(),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no"]


class PrivateRedisCluster:
    """A private Redis Cluster of three masters (see the module docstring)."""

    def __init__(self, ports: Sequence[int] = (7100, 7101, 7102),
                 directory: Path | None = None, appendonly: bool = True) -> None:
        if len(ports) < 3:
            raise ValueError("Redis Cluster needs at least three masters")
        self.ports = tuple(ports)
        self._own_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="repid-redis-cluster-")) \
            if directory is None else directory
        self.nodes = [ClusterNode(port, appendonly=appendonly,
                                  directory=self.directory / str(port))
                      for port in self.ports]

    @property
    def dsn(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+cluster://{hosts}/"

    def start(self) -> None:
        """Start every node, form the cluster unless its nodes already know each other,
        and return once every node reports `cluster_state:ok`. On a failure everything
        started is stopped again. RuntimeError when a port is taken (another cluster's)."""
        taken = [port for node in self.nodes if not node.running
                 for port in (node.port, node.port + 10000) if not port_free(port)]
        if taken:
            raise RuntimeError(f"ports {taken} are in use on 127.0.0.1 (another test run's "
                               "cluster?); pick free ones with free_ports()")
        try:
            for node in self.nodes:
                node.start()
            if not self._formed():
                self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def _formed(self) -> bool:
        return all(f"cluster_known_nodes:{len(self.ports)}" in _ask(port, "CLUSTER", "INFO")
                   for port in self.ports)

    def _create(self) -> None:
        command = ["redis-cli", "--cluster", "create",
                   *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=CLUSTER_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}")

    def wait_ok(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Return once every running node reports `cluster_state:ok` and knows every other
        node's slots; RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        running = [node.port for node in self.nodes if node.running]
        while True:
            infos = [_ask(port, "CLUSTER", "INFO") for port in running]
            if all("cluster_state:ok" in info and "cluster_slots_ok:16384" in info
                   for info in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster on ports {self.ports} did not reach "
                                   f"cluster_state:ok within {timeout} s: {infos}")
            time.sleep(0.1)

    def stop_node(self, index: int) -> None:
        """SIGKILL node `index` (no save, no goodbye); its slots go unserved."""
        self.nodes[index].kill()

    def start_node(self, index: int) -> None:
        """Start node `index` again on its data and cluster config, and wait until the
        cluster is ok again."""
        self.nodes[index].start()
        self.wait_ok()

    def owner_of(self, slot: int) -> int:
        """The index (in `ports`) of the node serving `slot`, as a running node sees it
        (asked again for up to `CLUSTER_TIMEOUT` seconds while no node answers: the
        machine may be busy)."""
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while True:
            for port in (node.port for node in self.nodes if node.running):
                for line in _ask(port, "CLUSTER", "NODES").splitlines():
                    fields = line.split()
                    if len(fields) < 8:
                        continue
                    node_port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    for part in fields[8:]:
                        low, _, high = part.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return self.ports.index(node_port)
            if time.monotonic() > deadline:
                raise LookupError(f"no node of the cluster on ports {self.ports} says it "
                                  f"serves slot {slot}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and delete a temporary directory."""
        for node in self.nodes:
            node.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateRedisCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
