"""Find the ```python blocks of the documentation and say how each one runs.

A block runs as a script on its own, in a fresh interpreter. A block that cannot carries a
marker on the nearest non-blank line before its fence:

- `<!-- not-runnable: REASON -->`: a fragment (a signature, a piece of a larger program);
  never run, and REASON must say why.
- `<!-- run-with: pytest -->`: a test module; it runs under pytest.

A block followed by a ```text title="Output"``` block (with only prose between them) must
print every line of it.

Snippets that talk to a real server read its DSN from `REDIS_CONNECTION_STRING` or
`RABBIT_CONNECTION_STRING`, which the test sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-runnable|run-with)\s*:\s*(?P<value>.*?)\s*-->\s*$")
OUTPUT_TITLE = re.compile(r'\btitle="Output"')
RUNNERS = ("python", "pytest")
SERVER_VARIABLES = {"REDIS_CONNECTION_STRING": "redis_dsn",
                    "RABBIT_CONNECTION_STRING": "amqp_dsn"}


@dataclass(frozen=True)
class Snippet:
    """One ```python block: where it is, its code, and how to run it."""

    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    runner: str  # "python", "pytest", or "" for a block marked not runnable
    reason: str = ""  # why it is not runnable
    name: str = ""  # `docs/guide/jobs.md:7`, for test ids and messages
    output: tuple[str, ...] = ()  # lines it must print (its "Output" block)

    @property
    def servers(self) -> list[str]:
        """Fixture names of the servers the snippet talks to."""
        return [fixture for variable, fixture in SERVER_VARIABLES.items()
                if variable in self.code]


class SnippetError(ValueError):
    """A documentation page whose blocks or markers cannot be read."""


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every page under docs/, sorted."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def parse_marker(path: Path, line: int, text: str) -> tuple[str, str] | None:
    """The (runner, reason) a marker line asks for, None if the line is no marker."""
    found = MARKER.match(text)
    if found is None:
        return None
    kind, value = found["kind"], found["value"]
    if kind == "not-runnable":
        if not value:
            raise SnippetError(f"{path}:{line}: say why the block is not runnable: "
                               "<!-- not-runnable: REASON -->")
        return "", value
    if value not in RUNNERS:
        raise SnippetError(f"{path}:{line}: unknown runner {value!r}; use one of "
                           f"{', '.join(RUNNERS)}: <!-- run-with: pytest -->")
    return value, ""


def closes(line: str, fence: str) -> bool:
    """Whether `line` closes a block opened by `fence`: the same character, at least as
    many, and nothing after them."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def extract(path: Path, root: Path = ROOT) -> list[Snippet]:
    """The ```python blocks of one markdown file, in order."""
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    lines = path.read_text().splitlines()
    found: list[Snippet] = []
    previous = ""  # the last non-blank line outside code blocks
    previous_line = 0
    awaiting_output = False  # the last code block was python: an Output block may follow
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous, previous_line = lines[index], index + 1
            index += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        start = index + 1  # 1-based number of the opening fence
        body: list[str] = []
        index += 1
        while index < len(lines) and not closes(lines[index], fence):
            body.append(lines[index][len(indent):] if lines[index].startswith(indent)
                        else lines[index])
            index += 1
        if index == len(lines):
            raise SnippetError(f"{path}:{start}: a code block is never closed")
        language = opening["info"].strip().split(" ")[0].lower()
        if language in ("python", "py"):
            marker = parse_marker(path, previous_line, previous)
            runner, reason = marker if marker is not None else ("python", "")
            found.append(Snippet(path, start, "\n".join(body) + "\n", runner, reason,
                                 f"{shown}:{start}"))
            awaiting_output = True
        else:
            if OUTPUT_TITLE.search(opening["info"]):
                if not awaiting_output:
                    raise SnippetError(f"{path}:{start}: an Output block must follow the "
                                       "```python block whose output it shows")
                found[-1] = replace(found[-1], output=tuple(
                    line for line in body if line.strip()))
            awaiting_output = False
        previous, previous_line = "", 0
        index += 1
    return found


def all_snippets(root: Path = ROOT) -> list[Snippet]:
    """Every ```python block of the documentation."""
    return [snippet for path in documents(root) for snippet in extract(path, root)]
