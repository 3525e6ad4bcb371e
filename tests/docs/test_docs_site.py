"""The documentation site: the generated hook reference is current, every page is in the nav."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hooks", DOCS / "gen_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_hook_reference_is_up_to_date() -> None:
    gen = load_generator()
    expected = gen.render(gen.SOURCE.read_text())
    assert (DOCS / "hooks.md").read_text() == expected, \
        "docs/hooks.md is stale: run python docs/gen_hooks.py"


def test_hook_reference_covers_every_hookspec() -> None:
    from repid.middleware import hookspecs

    page = (DOCS / "hooks.md").read_text()
    for name in hookspecs.hook_names():
        assert f"### {name}\n" in page


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:"):]
    listed = set(re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"
