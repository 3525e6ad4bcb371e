"""A private three-node RabbitMQ cluster for tests and hand runs that stop a node.

`PrivateRabbitCluster()` runs three `PrivateRabbit` nodes beside the shared server, named
`repid-c1@localhost` .. `repid-c3@localhost`, on AMQP ports 5710-5712 and distribution
ports 25710-25712 (the first port can be changed), with one Erlang cookie shared by the
three and data directories under one temporary directory. Nodes 2 and 3 join node 1 with
`rabbitmqctl stop_app`, `join_cluster`, `start_app`. Only loopback addresses are used, and
every command names its node with `-n`, so the shared node on 5672 is never touched.

    with PrivateRabbitCluster() as cluster:   # started and joined; stopped at the end
        cluster.dsn             # amqp://guest:guest@127.0.0.1:5710,127.0.0.1:5711,...
        cluster.dsns            # one single-host DSN per node
        cluster.stop_node(0)    # the whole node goes down (its Erlang VM too)
        cluster.kill_node(0)    # SIGKILL: a crash
        cluster.start_node(0)   # back with its data; it rejoins the cluster
        cluster.leader_of("q")  # the node holding the quorum queue's leader

`stop()` (or leaving the `with` block) stops every node and deletes the directory, also
when starting or joining failed half way. Needs the RabbitMQ server scripts (see
`rabbit_node.available`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from tests.servers.rabbit_node import PrivateRabbit, available, port_free

__all__ = ["FIRST_PORT", "PrivateRabbitCluster", "available"]

#: AMQP port of the first node; the others follow it
FIRST_PORT = 5710
#: how many nodes a cluster has
SIZE = 3
#: how long a node may take to leave or join the cluster
CLUSTER_TIMEOUT = 60.0


class ClusterNode(PrivateRabbit):
    """A `PrivateRabbit` with a cluster member's node name and the cluster's cookie."""

    def __init__(self, port: int, name: str, base_dir: Path, cookie: str) -> None:
        home = base_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie_file = home / ".erlang.cookie"
        if not cookie_file.exists():  # written before PrivateRabbit would write its own
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
        super().__init__(port, base_dir=base_dir)
        self.node = f"{name}@localhost"

    def ctl(self, *args: str, timeout: float = CLUSTER_TIMEOUT) -> str:
        """`rabbitmqctl -n <this node> ARGS`; its output, or a RuntimeError saying what
        failed."""
        return self._ctl("rabbitmqctl", *args, timeout=timeout).stdout

    def running(self) -> bool:
        """Whether the node answers a ping (its RabbitMQ application may still be down)."""
        return self._ctl("rabbitmq-diagnostics", "-q", "ping", timeout=20,
                         check=False).returncode == 0

    def kill(self) -> None:
        """SIGKILL the node's processes (a crash: no clean shutdown, connections cut by the
        operating system). Its data stays, so `start()` brings it back."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only this node
            proc.wait(10)

    def stop_by_name(self) -> None:
        """Stop the node with `rabbitmqctl stop`, also one another process started (the
        script's `stop`); returns once it no longer answers a ping."""
        self._ctl("rabbitmqctl", "stop", timeout=CLUSTER_TIMEOUT, check=False)
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node} still answers {CLUSTER_TIMEOUT} s after "
                                   "`rabbitmqctl stop`")
            time.sleep(0.5)


class PrivateRabbitCluster:
    """Three private RabbitMQ nodes joined in one cluster (see the module docstring)."""

    def __init__(self, first_port: int = FIRST_PORT, base_dir: Path | None = None) -> None:
        self._own_dir = base_dir is None
        self.base = Path(tempfile.mkdtemp(prefix="repid-rabbit-cluster-")) if base_dir is None \
            else base_dir
        cookie = f"REPIDCLUSTER{first_port}COOKIE"
        self.nodes = [ClusterNode(first_port + i, f"repid-c{i + 1}", self.base / f"c{i + 1}",
                                  cookie) for i in range(SIZE)]
        #: seconds the last `start()` took, nodes started and joined
        self.start_seconds = 0.0

    @property
    def dsns(self) -> list[str]:
        """One single-host DSN per node, in node order."""
        return [node.dsn for node in self.nodes]

    @property
    def dsn(self) -> str:
        """One DSN naming every node (`amqp://guest:guest@host1:port1,host2:port2,.../`)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    # --- life cycle ---

    def start(self) -> PrivateRabbitCluster:
        """Start the three nodes (in parallel) and join nodes 2 and 3 to node 1; on any
        failure every node is stopped before the error propagates."""
        began = time.monotonic()
        try:
            for node in self.nodes:
                for port in (node.port, node.dist_port):
                    if not port_free(port):
                        raise RuntimeError(
                            f"port {port} on 127.0.0.1 is taken (is a cluster already "
                            "running? `python scripts/rabbit_cluster.py stop`); or pick "
                            "another first_port")
            with ThreadPoolExecutor(SIZE) as pool:
                for future in [pool.submit(node.start) for node in self.nodes]:
                    future.result()
            for node in self.nodes[1:]:
                self._join(node, self.nodes[0])
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    @staticmethod
    def _join(node: ClusterNode, seed: ClusterNode) -> None:
        node.ctl("stop_app")
        node.ctl("join_cluster", seed.node)
        node.start_app()

    def stop_node(self, index: int) -> None:
        """Stop node `index` (0-based) entirely: its connections drop and its port closes.
        Its data stays, so `start_node` brings it back into the cluster."""
        self.nodes[index].stop()

    def kill_node(self, index: int) -> None:
        """Kill node `index` (SIGKILL, see `ClusterNode.kill`); `start_node` brings it back."""
        self.nodes[index].kill()

    def start_node(self, index: int) -> None:
        """Start node `index` again (after `stop_node`); it rejoins the cluster."""
        self.nodes[index].start()

    def stop(self) -> None:
        """Stop every node (in parallel) and delete the directory if this made it. Safe to
        call twice, and after a failed start."""
        try:
            with ThreadPoolExecutor(SIZE) as pool:
                futures = [pool.submit(node.stop) for node in self.nodes]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise RuntimeError(f"stopping the cluster failed: {errors}")
        finally:
            if self._own_dir:
                shutil.rmtree(self.base, ignore_errors=True)

    # --- questions ---

    def running_nodes(self, index: int = 0) -> list[str]:
        """The cluster's running nodes as node `index` sees them."""
        out = self.nodes[index].ctl("eval", "rabbit_nodes:all_running().")
        return sorted(part.strip(" []'\n") for part in out.split(",") if "@" in part)

    def leader_of(self, queue: str, vhost: str = "/") -> int:
        """Index of the node holding the leader of quorum queue `queue` (asked of any
        running node)."""
        for node in self.nodes:
            if not node.running():
                continue
            out = node.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers",
                           "name", "leader", timeout=30)
            for line in out.splitlines():
                name, _, leader = line.partition("\t")
                if name == queue:
                    return self._index(leader.strip())
            raise LookupError(f"queue {queue!r} not found (or it has no leader) on "
                              f"{node.node}")
        raise RuntimeError("no node of the cluster is running")

    def _index(self, node_name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.node == node_name:
                return i
        raise LookupError(f"{node_name!r} is not a node of this cluster")

    def __enter__(self) -> PrivateRabbitCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def cluster_status(node: ClusterNode) -> str:
    """`rabbitmqctl cluster_status` of `node` (for the script and failure messages)."""
    try:
        return node.ctl("cluster_status", timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"{node.node}: {exc}"
