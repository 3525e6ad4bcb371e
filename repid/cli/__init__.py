"""The `repid` command: run workers, manage queues, requeue dead letters.

```
repid worker myapp.tasks:worker --processes 4 --health-port 8080 --metrics-port 9100
repid queues stats default emails
repid dead requeue emails
```
"""

from __future__ import annotations

import click

from repid.cli.migrate_v1 import migrate_v1_command
from repid.cli.queues import dead_group, queues_group
from repid.cli.worker import worker_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="repid", prog_name="repid")
def main() -> None:
    """repid: run workers and manage queues.

    The connection comes from --app MODULE:ATTR (a Repid or Connection), or from the
    environment: REPID_BROKER_DSN (redis://, rediss://, amqp://, amqps:// or memory://),
    REPID_ARGS_BUCKET_DSN and REPID_RESULTS_BUCKET_DSN (redis:// or memory://).
    """


main.add_command(worker_command)
main.add_command(queues_group)
main.add_command(dead_group)
main.add_command(migrate_v1_command)

__all__ = ["main"]
