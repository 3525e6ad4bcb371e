"""The `repid` command: run workers, manage queues, requeue dead letters.

```
repid worker myapp.tasks:worker --processes 4 --health-port 8080 --metrics-port 9100
repid queues list
repid jobs send send_email --args '{"to": "a@example.com"}' --queue emails
repid jobs show 6f1c0e2d9a8b4c7d8e9f0a1b2c3d4e5f --queue emails
repid dead requeue emails --id 6f1c0e2d9a8b4c7d8e9f0a1b2c3d4e5f
```

`python -m repid` runs the same command. Every command is described in docs/cli.md.
"""

from __future__ import annotations

import click

from repid.cli._dead import dead_group
from repid.cli._jobs import jobs_group
from repid.cli._migrate_v1 import migrate_v1_command
from repid.cli._queues import queues_group
from repid.cli._worker import worker_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="repid", prog_name="repid")
def main() -> None:
    """repid: run workers, manage queues and jobs.

    The connection comes from --app MODULE:ATTR (a Repid or Connection), or from the
    environment: REPID_BROKER_DSN (redis://, rediss://, amqp://, amqps:// or memory://),
    REPID_ARGS_BUCKET_DSN and REPID_RESULTS_BUCKET_DSN (redis:// or memory://).
    """


main.add_command(worker_command)
main.add_command(queues_group)
main.add_command(dead_group)
main.add_command(jobs_group)
main.add_command(migrate_v1_command)

__all__ = ["main"]
