"""Every ```python block of README.md and docs/ runs as written (see doc_snippets.py).

Each block runs alone, in a fresh interpreter in an empty directory, and must exit 0 within
SNIPPET_TIMEOUT seconds. A block marked `<!-- not-runnable: REASON -->` is only listed;
those must stay few.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from doc_snippets import ROOT, Snippet, SnippetError, all_snippets, extract

SNIPPET_TIMEOUT = 20.0
#: how many blocks may be marked not runnable: fix a snippet rather than raising this
MAX_NOT_RUNNABLE = 2
#: the hook reference: docs/gen_hooks.py marks each hook's signature not runnable
GENERATED = ROOT / "docs" / "hooks.md"

#: what asyncio and aiohttp print when a snippet leaves work or resources behind
LEAKS = ("Task exception was never retrieved", "was never awaited", "Task was destroyed",
         "Unclosed")

SNIPPETS = all_snippets()
RUNNABLE = [snippet for snippet in SNIPPETS if snippet.runner]


def command(snippet: Snippet, directory: Path) -> list[str]:
    """The command line that runs the snippet, written to a file in `directory`."""
    if snippet.runner == "pytest":
        script = directory / "test_snippet.py"
        script.write_text(snippet.code)
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
                str(script)]
    script = directory / "snippet.py"
    script.write_text(snippet.code)
    return [sys.executable, str(script)]


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.name for s in RUNNABLE])
def test_snippet_runs(snippet: Snippet, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REPID_", "PYTEST_")) and key != "PROMETHEUS_MULTIPROC_DIR"}
    for variable, fixture in (("REDIS_CONNECTION_STRING", "redis_dsn"),
                              ("RABBIT_CONNECTION_STRING", "amqp_dsn")):
        if fixture in snippet.servers:
            env[variable] = request.getfixturevalue(fixture)
    try:
        done = subprocess.run(command(snippet, tmp_path), cwd=tmp_path, env=env,
                              capture_output=True, timeout=SNIPPET_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{snippet.name} ran longer than {SNIPPET_TIMEOUT} s: bound it "
                    "(messages_limit=, a stop) or mark it <!-- not-runnable: REASON -->")
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"{snippet.name} failed:\n{snippet.code}\n---\n{output}"
    printed = done.stdout.decode().splitlines()
    missing = [line for line in snippet.output if line not in printed]
    assert not missing, f"{snippet.name} did not print {missing}; it printed:\n{output}"
    for sign in LEAKS:
        assert sign not in output, f"{snippet.name} left {sign!r} behind:\n{output}"


def test_the_documentation_has_runnable_snippets() -> None:
    paths = {snippet.path for snippet in RUNNABLE}
    assert ROOT / "README.md" in paths
    assert ROOT / "docs" / "index.md" in paths
    assert len(RUNNABLE) >= 20


def test_few_snippets_are_marked_not_runnable() -> None:
    marked = [f"{s.name}: {s.reason}" for s in SNIPPETS
              if not s.runner and s.path != GENERATED]
    assert len(marked) <= MAX_NOT_RUNNABLE, "\n".join(marked)


def test_markers_and_fences_are_read(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```python\nprint(1)\n```\n\n"
        "<!-- not-runnable: only a signature -->\n\n```python\ndef f(x) -> int\n```\n\n"
        "<!-- run-with: pytest -->\n```python\ndef test_it() -> None: ...\n```\n\n"
        "<!-- not-runnable: not for the bash block -->\n```bash\nls\n```\n"
        "````python\n```python\nnested\n```\n````\n"
        "!!! note\n    ```python\n    x = 1\n    ```\n"
        "It prints:\n\n```text title=\"Output\"\n1\n\n2\n```\n")
    found = extract(page)
    assert [(s.line, s.runner, s.reason, s.code) for s in found] == [
        (3, "python", "", "print(1)\n"),
        (9, "", "only a signature", "def f(x) -> int\n"),
        (14, "pytest", "", "def test_it() -> None: ...\n"),
        (22, "python", "", "```python\nnested\n```\n"),
        (28, "python", "", "x = 1\n"),
    ]
    assert [s.output for s in found] == [(), (), (), (), ("1", "2")]


@pytest.mark.parametrize("text", [
    "<!-- not-runnable: -->\n```python\nx\n```\n",
    "<!-- run-with: bash -->\n```python\nx\n```\n",
    "```python\nx = 1\n",
    '```text title="Output"\n1\n```\n',
])
def test_bad_markers_and_open_fences_are_refused(tmp_path: Path, text: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(SnippetError, match=r"page\.md:1: "):
        extract(page)
