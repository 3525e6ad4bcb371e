"""The import picture is layered: data -> middleware contract -> brokers -> core -> CLI,
testing and plugins; and no module imports a private name from another package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("repid", "repid_plugins")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    """0 data, 1 middleware contract, 2 brokers, 3 core, 4 CLI, testing and plugins; the
    `repid` package itself (the public surface) is only for the top layer."""
    if module.startswith(("repid_plugins", "repid.cli", "repid.testing")):
        return 4
    if module.startswith("repid.data") or module == "repid.errors":
        return 0
    if module.startswith("repid.middleware"):
        return 1
    if module.startswith("repid.brokers"):
        return 2
    if module in ("repid", "repid.__main__"):  # `python -m repid` runs the CLI
        return 4
    return 3


def runtime_imports(path: Path) -> list[ast.ImportFrom]:
    """`from repid... import` statements that run (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for inner in ast.walk(node)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in typing_only
            and (node.module or "").startswith(PACKAGES)]


def sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_no_module_imports_from_a_higher_layer() -> None:
    wrong = []
    for path in sources():
        module = module_name(path)
        if module == "repid":
            continue
        for node in runtime_imports(path):
            target = node.module or ""
            if layer(target) > layer(module):
                wrong.append(f"{module} (layer {layer(module)}) imports {target} "
                             f"(layer {layer(target)})")
    assert wrong == []


def test_no_module_imports_a_private_name_from_another_package() -> None:
    wrong = []
    for path in sources():
        module = module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in runtime_imports(path):
            target = node.module or ""
            for alias in node.names:
                if alias.name.startswith("_") and not target.startswith(package):
                    wrong.append(f"{module} imports {alias.name} from {target}")
    assert wrong == []


#: underscore names that are public API: namedtuple's methods
PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_fields", "_make"})


def private_names_of(tree: ast.Module) -> set[str]:
    """The underscore names a module defines itself: its functions, classes and globals,
    the attributes its classes declare or set on `self` / `cls`, their `__slots__`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # a __slots__ entry
    return {name for name in names if name.startswith("_")}


def test_no_module_reads_another_modules_private_attributes() -> None:
    """`obj._x` is allowed only on `self` / `cls`, or for a name the module defines
    itself; any other reach into a private attribute needs a small public interface."""
    wrong = []
    for path in sources():
        tree = ast.parse(path.read_text())
        own = private_names_of(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") \
                    or node.attr.startswith("__") or node.attr in PUBLIC_UNDERSCORED:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in own:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert wrong == []
