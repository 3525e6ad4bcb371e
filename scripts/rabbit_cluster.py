"""Start, stop or inspect a private three-node RabbitMQ cluster on this machine, for
benchmarks and hand runs (the tests start their own through the same fixture class,
`tests/servers/rabbit_cluster.py`).

    python scripts/rabbit_cluster.py start     # nodes repid-c1..c3@localhost, AMQP 5710-5712
    python scripts/rabbit_cluster.py status    # which nodes run, and the cluster's view
    python scripts/rabbit_cluster.py stop      # stops every node and deletes the data

`start` leaves the nodes running after it exits and prints the DSN naming all three;
their data and logs are kept under `--dir` (default /tmp/repid-rabbit-cluster) until
`stop`. Pass the same `--dir` and `--first-port` to all three commands. Only loopback
addresses are used; the shared RabbitMQ on 5672 is never touched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers.rabbit_cluster import (
    FIRST_PORT,
    PrivateRabbitCluster,
    available,
    cluster_status,
)

DEFAULT_DIR = Path("/tmp/repid-rabbit-cluster")


def start(cluster: PrivateRabbitCluster) -> int:
    cluster.start()  # stops what it started if it fails
    print(f"cluster started and joined in {cluster.start_seconds:.1f} s; data in {cluster.base}")
    print(f"DSN: {cluster.dsn}")
    print(f"stop it with: python {sys.argv[0]} stop --dir {cluster.base}")
    return 0


def status(cluster: PrivateRabbitCluster) -> int:
    running = [node for node in cluster.nodes if node.running()]
    for node in cluster.nodes:
        state = "running" if node in running else "down"
        print(f"{node.node:24} amqp 127.0.0.1:{node.port:<6} {state}")
    if running:
        print(cluster_status(running[0]))
        print(f"DSN: {cluster.dsn}")
    return 0 if running else 1


def stop(cluster: PrivateRabbitCluster) -> int:
    failed = False
    for node in cluster.nodes:
        if node.running():
            try:
                node.stop_by_name()
                print(f"{node.node} stopped")
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                failed = True
    if not failed:
        shutil.rmtree(cluster.base, ignore_errors=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"data and log directory of the nodes (default {DEFAULT_DIR})")
    parser.add_argument("--first-port", type=int, default=FIRST_PORT,
                        help=f"AMQP port of node 1; nodes 2 and 3 take the next two "
                             f"(default {FIRST_PORT})")
    args = parser.parse_args()
    why_not = available()
    if why_not is not None:
        print(why_not, file=sys.stderr)
        return 2
    if args.command != "start" and not args.dir.exists():
        print(f"no cluster directory {args.dir}: nothing was started with this --dir",
              file=sys.stderr)
        return 1
    cluster = PrivateRabbitCluster(args.first_port, base_dir=args.dir)
    return {"start": start, "status": status, "stop": stop}[args.command](cluster)


if __name__ == "__main__":
    sys.exit(main())
