"""The CLI's small parts: DSN masking, the stats table, exit descriptions, change detection."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from click.testing import CliRunner

from repid.cli import main
from repid.cli._loading import safe_dsn, scrub
from repid.cli._queues import stats_table
from repid.cli._reload import changed_file, snapshot
from repid.cli._supervisor import describe_exit


def test_scrub_masks_the_dsn_and_its_password_anywhere() -> None:
    env = {"REPID_BROKER_DSN": "redis://user:p%40ssw0rd@host:6379/0"}
    text = scrub("failed at redis://user:p%40ssw0rd@host:6379/0 with password p@ssw0rd", env)
    assert text == "failed at redis://user:***@host:6379/0 with password ***"


def test_a_short_password_is_masked_only_inside_a_dsn() -> None:
    env = {"REPID_BROKER_DSN": "amqp://guest:guest@host/"}
    assert scrub("user guest at amqp://guest:guest@other/", env) == \
        "user guest at amqp://guest:***@other/"


def test_a_dsn_that_is_not_a_url_is_not_shown() -> None:
    assert safe_dsn("user:secret@host") == "value hidden"
    assert safe_dsn("amqp://u:secret@host/") == "amqp://u:***@host/"


def test_stats_table() -> None:
    table = stats_table({"emails": {"ready": 12, "delayed": -1, "in_flight": 4, "dead": 0},
                         "gone": None})
    assert table.splitlines() == [
        "queue   ready  delayed  in_flight  dead",
        "emails     12        -          4     0",
        "gone    not declared",
    ]


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_changes_are_seen_and_hidden_directories_skipped(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "lib.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    before = snapshot(str(tmp_path))
    assert list(before) == [str(tmp_path / "app.py")]
    assert changed_file(before, snapshot(str(tmp_path))) is None

    (tmp_path / ".venv" / "lib.py").write_text("changed")
    assert changed_file(before, snapshot(str(tmp_path))) is None
    os.utime(tmp_path / "app.py", ns=(1, 1))
    assert changed_file(before, snapshot(str(tmp_path))) == str(tmp_path / "app.py")
    (tmp_path / "app.py").unlink()
    assert changed_file(before, snapshot(str(tmp_path))) == str(tmp_path / "app.py")


def test_version_and_commands() -> None:
    assert CliRunner().invoke(main, ["--version"]).output.startswith("repid, version ")
    listing = CliRunner().invoke(main, ["--help"]).output
    for command in ("worker", "queues", "dead"):
        assert f"  {command} " in listing
