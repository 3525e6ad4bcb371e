"""Write docs/hooks.md, the hook reference, from the docstrings of repid/middleware/hookspecs.py.

Run it with: python docs/gen_hooks.py   (--check: exit 1 if docs/hooks.md is stale)

The hookspecs module is the plugin contract; this page is generated from it so that the
two never disagree. Signatures and docstrings are read with `ast`, in file order; which
hooks are around hooks comes from the module's own `AROUND_HOOKS`.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from repid.middleware import hookspecs

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "repid" / "middleware" / "hookspecs.py"
TARGET = ROOT / "docs" / "hooks.md"
SECTION = re.compile(r"^# --- (.+?) -+\s*$")
PARAM = re.compile(r"^:param (\w+): (.*)$")
#: how a literal block of Python starts (any other literal block is shown as text)
PYTHON_STARTS = ("class ", "def ", "async ", "import ", "from ", "@")
KINDS = {
    "around": "around (`@hookimpl(wrapper=True)` generator)",
    "decision": "decision (`firstresult`: the first non-None answer wins)",
    "lifecycle": "lifecycle (may return an awaitable)",
    "contribution": "contribution (every answer is collected)",
}

#: markers for tests/docs/test_snippets.py, which runs every other ```python block
NOT_RUNNABLE_SIGNATURE = "<!-- not-runnable: the hook's signature, not code to run -->"
NOT_RUNNABLE_EXCERPT = "<!-- not-runnable: an excerpt of a plugin class -->"


@dataclass
class Hook:
    """One hookspec as the page shows it."""

    name: str
    section: str
    kind: str
    signature: str
    doc: str


def rst_to_markdown(text: str) -> str:
    """Turn reST `::` literal blocks into fenced Python blocks and ``x`` into `x`."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out += [line.rstrip()[:-1], ""]
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n")
            if code.startswith(PYTHON_STARTS):
                out += [NOT_RUNNABLE_EXCERPT, "", "```python", code, "```", ""]
            else:  # a sequence of hooks, not code
                out += ["```text", code, "```", ""]
            continue
        param = PARAM.match(line)
        if param:
            # `:param name: text` and its indented continuation lines: one list item
            text = param.group(2)
            i += 1
            while i < len(lines) and lines[i].startswith("    "):
                text += " " + lines[i].strip()
                i += 1
            if out and out[-1] and not out[-1].startswith("- "):
                out.append("")
            out.append(f"- `{param.group(1)}`: {text}".replace("``", "`"))
            continue
        out.append(line.replace("``", "`"))
        i += 1
    return "\n".join(out).strip() + "\n"


def kind_of(node: ast.FunctionDef, around: set[str]) -> str:
    """around, decision, lifecycle or contribution."""
    if node.name in around:
        return "around"
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and any(
                k.arg == "firstresult" for k in decorator.keywords):
            return "decision"
    returns = ast.unparse(node.returns) if node.returns else ""
    return "lifecycle" if "Awaitable" in returns else "contribution"


def signature(node: ast.FunctionDef) -> str:
    """`def name(arg: type, ...) -> type`, one argument per line."""
    args = [f"    {a.arg}: {ast.unparse(a.annotation)}," if a.annotation else f"    {a.arg},"
            for a in node.args.args]
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"def {node.name}(\n" + "\n".join(args) + f"\n){returns}"


def read_hooks(source: str) -> tuple[str, list[Hook]]:
    """The module docstring and every hookspec, in file order."""
    tree = ast.parse(source)
    sections: dict[int, str] = {}
    current = ""
    for number, line in enumerate(source.splitlines(), start=1):
        match = SECTION.match(line)
        if match:
            current = match.group(1)
        sections[number] = current
    around = set(hookspecs.AROUND_HOOKS)
    hooks = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("repid_"):
            section = sections[node.lineno]
            hooks.append(Hook(node.name, section, kind_of(node, around),
                              signature(node), ast.get_docstring(node) or ""))
    return ast.get_docstring(tree) or "", hooks


def render(source: str) -> str:
    """The whole hooks.md page."""
    module_doc, hooks = read_hooks(source)
    parts = [
        "# Hook reference",
        "",
        "<!-- generated by docs/gen_hooks.py from repid/middleware/hookspecs.py: edit the "
        "docstrings there, then run `python docs/gen_hooks.py` -->",
        "",
        rst_to_markdown(module_doc),
        "| hook | kind | arguments |",
        "|---|---|---|",
    ]
    for hook in hooks:
        names = re.findall(r"^    (\w+)", hook.signature, flags=re.MULTILINE)
        parts.append(f"| [`{hook.name}`](#{hook.name}) | {hook.kind} | "
                     f"{', '.join(f'`{n}`' for n in names)} |")
    parts.append("")
    section = None
    for hook in hooks:
        if hook.section != section:
            section = hook.section
            parts += [f"## {section[0].upper()}{section[1:]}", ""]
        parts += [f"### {hook.name}", "", f"*{KINDS[hook.kind]}*", "", NOT_RUNNABLE_SIGNATURE,
                  "", "```python",
                  hook.signature, "```", "", rst_to_markdown(hook.doc)]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    """Write the page, or with --check report whether it is up to date."""
    page = render(SOURCE.read_text())
    if "--check" in argv:
        if TARGET.exists() and TARGET.read_text() == page:
            return 0
        print(f"{TARGET.relative_to(ROOT)} is stale: run python docs/gen_hooks.py",
              file=sys.stderr)
        return 1
    TARGET.write_text(page)
    print(f"wrote {TARGET.relative_to(ROOT)} ({page.count(chr(10) + '### ')} hooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
