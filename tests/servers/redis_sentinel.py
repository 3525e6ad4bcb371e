"""A private Redis master, one replica and three sentinels, for tests that kill the master.

`SentinelGroup(base_port)` runs, on 127.0.0.1 and in one temporary directory:
the master on `base_port`, its replica on `base_port + 1`, and three sentinels on
`base_port + 10 .. base_port + 12` (`redis-server CONF --sentinel`: there is no
`redis-sentinel` binary here). The sentinels watch the master as `SERVICE` with a quorum of
2, `down-after-milliseconds` 1000 and `failover-timeout` 3000, so a killed master is
replaced by its replica within a few seconds. Never the shared server on 6379.

    group = SentinelGroup(7200)
    group.start()             # returns once the replica is in sync and every sentinel
                              # knows the master, the replica and the other sentinels
    group.dsn                 # redis+sentinel://127.0.0.1:7210,...:7212/mymaster/0
    old = group.kill_master() # SIGKILL the current master; returns its server
    group.wait_for_failover(old.port)   # until the sentinels name another master
    group.rejoin(old)         # back, empty, as a replica of the new master, in sync
    group.stop()              # always (a `with SentinelGroup(...)` block does)

Nothing is saved to disk: a restarted server starts empty and, once the sentinels made it a
replica, copies the master. Blocking helpers poll with short sleeps: from async code run them
in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.servers.redis_server import PrivateRedis

SERVICE = "mymaster"
#: how long the group may take to come up, and a failover to happen
READY_TIMEOUT = 20.0
FAILOVER_TIMEOUT = 20.0


class GroupRedis(PrivateRedis):
    """A private Redis server of the group: a replica of 127.0.0.1:`master_port` when one
    is given, and one that sends a replica its copy at once (no 5 s wait for more replicas
    to share a diskless transfer)."""

    def __init__(self, port: int, directory: Path, master_port: int | None = None) -> None:
        super().__init__(port, directory=directory)
        self.master_port = master_port

    def _command(self) -> list[str]:
        command = [*super()._command(), "--repl-diskless-sync-delay", "0"]
        if self.master_port is not None:
            command += ["--replicaof", "127.0.0.1", str(self.master_port)]
        return command


class SentinelServer(PrivateRedis):
    """One sentinel on 127.0.0.1:`port`, watching the master on `master_port` as
    `SERVICE` (its configuration file is written in `directory`, which it rewrites)."""

    def __init__(self, port: int, master_port: int, directory: Path) -> None:
        super().__init__(port, directory=directory)
        self.config = directory / "sentinel.conf"
        self.config.write_text("\n".join([
            f"port {port}",
            "bind 127.0.0.1",
            "daemonize no",
            f"dir {directory}",
            f"logfile {directory / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 3000",
            f"sentinel parallel-syncs {SERVICE} 1",
            "",
        ]))

    def _command(self) -> list[str]:
        return ["redis-server", str(self.config), "--sentinel"]


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0,
                       socket_connect_timeout=1.0, decode_responses=True)


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(what: str, check: object, timeout: float) -> None:
    """Poll `check()` (errors count as "not yet") until true; RuntimeError after
    `timeout` seconds saying `what` did not happen."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout} s (last error: {last})")


class SentinelGroup:
    """A master, a replica and three sentinels (see the module docstring)."""

    def __init__(self, base_port: int) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"repid-sentinel-{base_port}-"))
        master, replica = base_port, base_port + 1
        self.servers = {
            master: GroupRedis(master, self.directory / str(master)),
            replica: GroupRedis(replica, self.directory / str(replica), master),
        }
        self.sentinels = []
        for port in range(base_port + 10, base_port + 13):
            where = self.directory / str(port)
            where.mkdir(parents=True)
            self.sentinels.append(SentinelServer(port, master, where))

    @property
    def dsn(self) -> str:
        """The `redis+sentinel://` DSN of the group's service, database 0."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        """Start every server; return once the group is ready (see the module docstring).
        Whatever was started is stopped again if the group does not come up."""
        taken = [s.port for s in [*self.servers.values(), *self.sentinels] if _listening(s.port)]
        if taken:  # a start would seem to succeed, on another run's servers
            self.stop()
            raise RuntimeError(f"ports {taken} are in use on 127.0.0.1 (another run of these "
                               "tests, or a server left running?); stop it, or pick other "
                               "ports")
        try:
            for server in self.servers.values():
                server.start()
            self.wait_for_replicas(1)
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                _wait(f"sentinel {sentinel.port} did not see the replica and the other "
                      "sentinels", lambda s=sentinel: self._sentinel_ready(s.port),
                      READY_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def _sentinel_ready(self, port: int) -> bool:
        with _client(port) as sentinel:
            state = sentinel.sentinel_master(SERVICE)
            replicas = sentinel.sentinel_slaves(SERVICE)
        return (int(state["num-other-sentinels"]) == len(self.sentinels) - 1
                and any(not r["is_sdown"] for r in replicas))

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port) as client:
                    address = client.sentinel_get_master_addr_by_name(SERVICE)
            except (redis.RedisError, OSError):
                continue
            if address:
                return int(address[1])
        raise RuntimeError("no sentinel answered with the master's address")

    def master(self) -> PrivateRedis:
        """The server the sentinels name as master now."""
        return self.servers[self.master_port()]

    def replica(self) -> PrivateRedis:
        """A server of the group that is not the current master."""
        port = self.master_port()
        return next(s for p, s in self.servers.items() if p != port)

    def kill_master(self) -> PrivateRedis:
        """SIGKILL the current master (no save, no goodbye); return its server, to start
        again later."""
        server = self.master()
        server.kill()
        return server

    def rejoin(self, server: PrivateRedis) -> None:
        """Start a stopped server of the group again as a replica of the current master
        (what the sentinels would do on their own about ten seconds later), and wait until
        it is in sync."""
        server.start()
        with _client(server.port) as client:
            client.replicaof("127.0.0.1", self.master_port())
        self.wait_for_replicas(len(self.servers) - 1)

    def wait_for_failover(self, old_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """Wait until the sentinels name a master other than `old_port`, which answers
        as a master; return its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.master_port()
            if port == old_port:
                return False
            with _client(port) as client:
                if client.info("replication")["role"] != "master":
                    return False
            found.append(port)
            return True

        _wait(f"the sentinels did not replace the master on port {old_port}", promoted,
              timeout)
        return found[-1]

    def wait_for_replicas(self, count: int, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the current master (the first server before the sentinels run) has
        `count` replicas whose link is up and in sync."""
        def synced() -> bool:
            port = self.master_port() if self.sentinels[0].running else min(self.servers)
            with _client(port) as client:
                info = client.info("replication")
            if info["role"] != "master" or int(info["connected_slaves"]) < count:
                return False
            offset = int(info["master_repl_offset"])
            online = [info[f"slave{i}"] for i in range(int(info["connected_slaves"]))]
            return sum(1 for r in online
                       if r["state"] == "online" and int(r["offset"]) >= offset - 1024) >= count

        _wait(f"the master did not get {count} replica(s) in sync", synced, timeout)

    def stop(self) -> None:
        """Stop every server and delete the temporary directory (safe to call twice)."""
        for server in [*self.sentinels, *self.servers.values()]:
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
