"""docs/cli.md shows what the commands print, and what their --help says."""

from __future__ import annotations

import subprocess
import sys

import cli_docs
from cli_helpers import ROOT, cli_env


def test_the_page_matches_a_run_of_its_sessions() -> None:
    _, problems = cli_docs.run_page(cli_docs.PAGE.read_text())
    assert problems == [], "\n\n".join(problems) + "\n(run python tests/cli/cli_docs.py)"


def test_the_page_names_the_app_as_it_calls_it() -> None:
    """What a command says of the app names it `myapp.tasks`, as the page's commands do."""
    page = cli_docs.PAGE.read_text()
    assert cli_docs.APP_MODULE not in page
    assert "not read by any actor of 'myapp.tasks:worker'" in page


def test_a_changed_output_is_caught() -> None:
    page = cli_docs.PAGE.read_text().replace("declared reports\n", "declared report\n", 1)
    _, problems = cli_docs.run_page(page)
    assert len(problems) == 1 and "declared report\n" in problems[0]


def test_a_changed_description_is_caught() -> None:
    page = cli_docs.PAGE.read_text().replace(
        "Delete queues and every message in them.\n", "Delete queues.\n", 1)
    _, problems = cli_docs.run_page(page)
    assert problems == ["`repid queues delete`: the page says 'Delete queues.', its --help "
                        "'Delete queues and every message in them.'"]


def test_python_dash_m_repid_is_the_repid_command() -> None:
    done = subprocess.run([sys.executable, "-m", "repid", "jobs", "--help"], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: repid jobs [OPTIONS] COMMAND [ARGS]...")
    assert "show  Show a job's state and result" in done.stdout
