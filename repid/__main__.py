"""`python -m repid`: the `repid` command."""

from repid.cli import main

main(prog_name="repid")
