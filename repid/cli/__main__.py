"""`python -m repid.cli`: the `repid` command (how the supervisor starts worker processes)."""

from repid.cli import main

main(prog_name="repid")
