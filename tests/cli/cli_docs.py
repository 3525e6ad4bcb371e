"""Runs the example sessions of docs/cli.md, so that the page shows real output.

`python tests/cli/cli_docs.py` rewrites the page's outputs from a fresh run;
`python tests/cli/cli_docs.py --check` (and tests/cli/test_cli_docs.py) fails when the
page differs from a run, with ids and times masked.

Each ```console block holds `$ repid ...` lines, each followed by its output, and
`$ export NAME=VALUE` lines. The blocks run in page order, one session, through click's
CliRunner, against the in-memory app of tests/cli/docs_app.py, which the page calls
`myapp.tasks` (its ```python block must be that file). An id in a command line stands for
the id at the same place of the earlier outputs; a rewrite puts this run's ids there.
Under each `## \\`repid ...\\`` heading, the first line is the command's one-line help.
"""

from __future__ import annotations

import inspect
import logging
import re
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
APP_FILE = Path(__file__).with_name("docs_app.py")
APP_MODULE = "tests.cli.docs_app"
ALIAS = "myapp.tasks"
HEADING = re.compile(r"^## `repid (.+)`$")
ID = re.compile(r"\b[0-9a-f]{32}\b")
TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( UTC|[+-]\d\d:\d\d)?")


def mask(text: str) -> str:
    """`text` with ids and times replaced by placeholders."""
    return TIME.sub("<time>", ID.sub("<id>", text))


def one_line_help(command: click.Command) -> str:
    """The first paragraph of a command's help, on one line."""
    return " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())


def find_command(path: str) -> click.Command | None:
    """The command `repid PATH` names, None if there is none."""
    from repid.cli import main

    command: click.Command | None = main
    for name in path.split():
        command = (command.commands.get(name) if isinstance(command, click.Group)
                   else None)
    return command


def all_commands() -> list[str]:
    """Every leaf command of `repid`, as `queues list` ..."""
    from repid.cli import main

    def walk(group: click.Group, prefix: str) -> list[str]:
        found = []
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                found += walk(command, f"{prefix}{name} ")
            else:
                found.append(f"{prefix}{name}")
        return found

    return walk(main, "")


@dataclass
class Session:
    """The state of a run: environment, ids seen on the page and in the run."""

    env: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # page id -> this run's id
    problems: list[str] = field(default_factory=list)

    def run(self, line: str) -> str:
        """Run one `$ ...` line; its output."""
        words = shlex.split(ID.sub(lambda m: self.ids.get(m[0], m[0]), line[2:]))
        words = [word.replace(ALIAS, APP_MODULE) for word in words]
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            self.env[name] = value
            return ""
        assert words[0] == "repid", f"not a repid command: {line}"
        from repid.cli import main

        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        loggers = [logging.getLogger(), logging.getLogger("repid")]
        saved = [list(logger.handlers) for logger in loggers]
        levels = [logger.level for logger in loggers]  # `repid worker` sets the root's
        for logger in loggers:
            logger.handlers[:] = []
        try:
            result = CliRunner().invoke(main, words[1:], env=self.env)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for logger, handlers_of, level in zip(loggers, saved, levels, strict=True):
                logger.handlers[:] = handlers_of
                logger.setLevel(level)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{line} raised {result.exception!r}") from result.exception
        # the page calls the app `myapp.tasks`: so does what a command says of it
        return result.output.replace(APP_MODULE, ALIAS)

    def compare(self, line: str, page_output: list[str], output: str) -> None:
        """Learn the ids of the run, and note a difference from the page."""
        page_text = "".join(f"{text}\n" for text in page_output)
        for page_id, run_id in zip(ID.findall(page_text), ID.findall(output), strict=False):
            self.ids.setdefault(page_id, run_id)
        if mask(page_text) != mask(output):
            self.problems.append(f"{line}\n--- the page says:\n{page_text}--- it prints:\n"
                                 f"{output}")


def run_page(text: str) -> tuple[str, list[str]]:
    """The page with every output replaced by a fresh run's, and the differences."""
    sys.modules.pop(APP_MODULE, None)  # a fresh app: empty queues
    session = Session()
    out: list[str] = []
    heading: str | None = None
    in_console = in_python = False
    command: str | None = None
    page_output: list[str] = []
    python: list[str] = []

    def finish_command() -> None:
        nonlocal command
        if command is not None:
            output = session.run(command)
            session.compare(command, page_output, output)
            out.extend(output.splitlines())
        command = None
        page_output.clear()

    for line in text.splitlines():
        if in_console:
            if line == "```":
                finish_command()
                in_console = False
            elif line.startswith("$ "):
                finish_command()
                rewritten = ID.sub(lambda m: session.ids.get(m[0], m[0]), line)
                out.append(rewritten)
                command = line
                continue
            else:
                page_output.append(line)
                continue
        elif in_python:
            if line == "```":
                in_python = False
                if "".join(f"{p}\n" for p in python) != APP_FILE.read_text():
                    session.problems.append("the page's app is not tests/cli/docs_app.py")
            else:
                python.append(line)
        elif line == "```console":
            in_console = True
        elif line == "```python" and not python:
            in_python = True
        elif match := HEADING.match(line):
            heading = match[1]
        elif heading is not None and line.strip():
            command_of = find_command(heading)
            if command_of is None:
                session.problems.append(f"`repid {heading}` is not a command")
            elif line != one_line_help(command_of):
                session.problems.append(f"`repid {heading}`: the page says {line!r}, its "
                                        f"--help {one_line_help(command_of)!r}")
            heading = None
        out.append(line)
    documented = {m[1] for m in map(HEADING.match, text.splitlines()) if m}
    session.problems += [f"`repid {name}` has no section" for name in all_commands()
                         if name not in documented]
    return "\n".join(out) + "\n", session.problems


def main() -> int:
    text = PAGE.read_text()
    rewritten, problems = run_page(text)
    if "--check" in sys.argv:
        print("\n\n".join(problems) or "docs/cli.md is up to date")
        return 1 if problems else 0
    PAGE.write_text(rewritten)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
