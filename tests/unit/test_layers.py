"""The import picture is layered: data -> middleware contract -> brokers -> core -> CLI,
testing and plugins; no module imports a private name from another package, and no module
reads another object's private attributes."""

from __future__ import annotations

import ast
from dataclasses import dataclass
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


def is_ours(module: str) -> bool:
    return module.split(".", 1)[0] in PACKAGES


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """`from repid... import` and `import repid...` statements that run (not under
    `if TYPE_CHECKING:`)."""
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for inner in ast.walk(node)}
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if (isinstance(node, ast.ImportFrom) and is_ours(node.module or "")) or \
                (isinstance(node, ast.Import) and any(is_ours(a.name) for a in node.names)):
            found.append(node)
    return sorted(found, key=lambda node: node.lineno)


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours an import statement imports from."""
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names if is_ours(alias.name)]


def sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_no_module_imports_from_a_higher_layer() -> None:
    wrong = []
    for path in sources():
        module = module_name(path)
        if module == "repid":
            continue
        for node in runtime_imports(ast.parse(path.read_text())):
            for target in imported(node):
                if layer(target) > layer(module):
                    wrong.append(f"{module} (layer {layer(module)}) imports {target} "
                                 f"(layer {layer(target)})")
    assert wrong == []


#: underscore names that are public API, not private ones: a namedtuple's methods and
#: fields (`urlsplit(...)._replace(...)`); the underscore only keeps them apart from fields
PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})

#: The owners whose private names a module may read: the object itself and its class.
OWN = frozenset({"self", "cls"})


@dataclass(frozen=True)
class Reach:
    """One reach into another object's private name: where, the expression, the name."""

    file: str
    line: int
    expression: str
    name: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.expression} reaches {self.name}"


#: Reaches between classes defined in the same module, allowed on purpose: (file, the
#: expression as `ast.unparse` writes it, why). Each entry must still match a reach.
SAME_MODULE_REACHES: tuple[tuple[str, str, str], ...] = (
    ("repid/brokers/in_memory.py", "self.broker._queue",
     "the in-memory consumers take from their own broker's queues, same module"),
    ("repid/job.py", "job._message",
     "enqueue_many builds each Job's message as Job.enqueue does, same module"),
)

#: TEMPORARY: reaches across modules that the layering forbids and that are still to be
#: fixed (each needs a small internal interface on the object reached into). Empty it as
#: they are fixed; an entry that no longer matches a reach fails the test.
KNOWN_REACHES_TO_FIX: tuple[tuple[str, str], ...] = (
)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") \
        and name not in PUBLIC_UNDERSCORED


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rsplit(".", 1)[0]


def in_package(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def is_module(name: str) -> bool:
    """Whether `name` is a module of ours (a `from a import b` may import a module or a
    name). Another project's modules need no answer: a reach into them is never allowed."""
    if not is_ours(name):
        return False
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(tree: ast.Module) -> dict[str, str]:
    """The names a module binds to modules by importing them, and the module each is."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None:
                    first = alias.name.split(".", 1)[0]
                    bound[first] = first
                else:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if is_module(full):
                    bound[alias.asname or alias.name] = full
    return bound


def module_of(owner: ast.expr, modules: dict[str, str]) -> str | None:
    """The module `owner` is (`codec`, `repid.worker`), when it is one the file imports."""
    rest = []
    while isinstance(owner, ast.Attribute):
        rest.insert(0, owner.attr)
        owner = owner.value
    if not isinstance(owner, ast.Name) or owner.id not in modules:
        return None
    dotted = ".".join([modules[owner.id], *rest])
    return dotted if not rest or is_module(dotted) else None


def is_own(owner: ast.expr) -> bool:
    """`self`, `cls` or `super()` (the object itself, seen from its class)."""
    if isinstance(owner, ast.Name):
        return owner.id in OWN
    return isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) \
        and owner.func.id == "super"


def private_reaches(source: str, module: str, *, is_package: bool = False,
                    file: str = "<source>") -> list[Reach]:
    """Every read of another object's private name in `source` (module `module`):
    `obj._x`, `getattr(obj, "_x")` (and setattr, hasattr, delattr) where `obj` is not
    `self`, `cls` or `super()`. A module's private name read as `mod._x` is a reach like
    `from mod import _x`: allowed only within the reading module's own package."""
    tree = ast.parse(source)
    package = package_of(module, is_package)
    modules = imported_modules(tree)
    found = []

    def reach(node: ast.expr, owner: ast.expr, name: str) -> None:
        if not is_private(name) or is_own(owner):
            return
        of = module_of(owner, modules)
        if of is not None and in_package(of, package):
            return
        found.append(Reach(file, node.lineno, ast.unparse(node), name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            reach(node, node.value, node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str):
            reach(node, node.args[0], node.args[1].value)
    return sorted(found, key=lambda reach: reach.line)


def test_no_module_reads_another_objects_private_attributes() -> None:
    """`obj._x` (or `getattr(obj, "_x")`) is for `self`, `cls` and `super()` only, whoever
    defines `_x`; a module read as `mod._x` only within its own package."""
    reaches = []
    for path in sources():
        relative = path.relative_to(ROOT).as_posix()
        reaches += private_reaches(path.read_text(), module_name(path),
                                   is_package=path.name == "__init__.py", file=relative)
    allowed = {(file, expression) for file, expression, _ in SAME_MODULE_REACHES}
    to_fix = set(KNOWN_REACHES_TO_FIX)
    wrong = [str(found) for found in reaches
             if (found.file, found.expression) not in allowed | to_fix]
    assert wrong == [], (
        "a module reads another object's private name; give the object (or its layer) a "
        "small internal interface that says what the caller needs, and call that:\n"
        + "\n".join(wrong))
    seen = {(found.file, found.expression) for found in reaches}
    assert sorted(allowed - seen) == [], "SAME_MODULE_REACHES entries that match nothing"
    assert sorted(to_fix - seen) == [], \
        "KNOWN_REACHES_TO_FIX entries that are fixed: remove them from the list"


def test_the_reach_check_finds_every_kind_of_reach() -> None:
    """The checker itself, on snippets: every kind of reach is reported, the object's own
    names, dunders and namedtuple methods are not."""
    reaching = """
import repid.worker
import repid.brokers._dsn as dsn
from repid.brokers.rabbitmq import _codec as codec
from repid.worker import _health
import os

broker._chains.ack
self.broker._chains
Worker._registry
type(self)._x
getattr(w, "_connection")
setattr(w, "_connection", None)
hasattr(self.w, "_connection")
codec._decode_body
repid.worker._runner
os._exit
_health._server
dsn._mask_query
"""
    found = private_reaches(reaching, "repid.cli._jobs", file="repid/cli/_jobs.py")
    assert [(reach.line, reach.name) for reach in found] == [
        (8, "_chains"), (9, "_chains"), (10, "_registry"), (11, "_x"), (12, "_connection"),
        (13, "_connection"), (14, "_connection"), (15, "_decode_body"), (16, "_runner"),
        (17, "_exit"), (18, "_server"), (19, "_mask_query")]
    assert str(found[0]) == "repid/cli/_jobs.py:8: broker._chains reaches _chains"
    fine = """
from repid.brokers.rabbitmq import _codec as codec
self._x
cls._x
super()._x
super(Broker, self)._x
self._chains.ack
obj.__dict__
obj.__class__.__name__
getattr(obj, "__qualname__", None)
getattr(obj, name)
getattr(self, "_x")
parts._replace(netloc="h")
codec._decode_body
import repid.brokers.rabbitmq._codec
repid.brokers.rabbitmq._codec._decode_body
"""
    assert private_reaches(fine, "repid.brokers.rabbitmq._consumer") == []
    outside = private_reaches(fine, "repid.worker._processor")
    assert sorted(reach.expression for reach in outside) == [
        "codec._decode_body", "repid.brokers.rabbitmq._codec",
        "repid.brokers.rabbitmq._codec._decode_body"]


def reaching_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports in `source` that take a private name (a function, a class, a module)
    out of another package: `from a import _b` and `import a._b`, at run time."""
    package = package_of(module, is_package)
    wrong = []
    for node in runtime_imports(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            pairs = [(node.module or "", alias.name) for alias in node.names]
        else:
            pairs = [tuple(alias.name.rsplit(".", 1)) for alias in node.names
                     if "." in alias.name]
        for target, name in pairs:
            if name.startswith("_") and not in_package(target, package):
                wrong.append(f"{module}:{node.lineno} imports {name} from {target}")
    return wrong


def test_no_module_imports_a_private_name_from_another_package() -> None:
    """A private name is imported only within its package, in either form (`from a import
    _b`, `import a._b`). A private module's public names are internal to repid, not to
    their package: `from repid.brokers._dsn import parse_dsn` is fine (docs/architecture.md,
    "Public or not is in the name")."""
    wrong = []
    for path in sources():
        wrong += reaching_imports(path.read_text(), module_name(path),
                                  is_package=path.name == "__init__.py")
    assert wrong == [], (
        "a private name is imported out of its package; import a public name instead, or "
        "give that package a small internal interface (a module of its own) to import:\n"
        + "\n".join(wrong))


def test_the_import_check_finds_both_forms() -> None:
    source = """
from typing import TYPE_CHECKING
from repid.brokers import _dsn
import repid.brokers._dsn
import repid.brokers._dsn as dsn
from repid.brokers._dsn import parse_dsn
import repid.brokers._dsn.parts
from repid.worker._health import serve
import repid.worker
from repid.job import _private_helper
if TYPE_CHECKING:
    from repid.brokers import _spin
    import repid.brokers._spin
"""
    assert reaching_imports(source, "repid.cli._main") == [
        "repid.cli._main:3 imports _dsn from repid.brokers",
        "repid.cli._main:4 imports _dsn from repid.brokers",
        "repid.cli._main:5 imports _dsn from repid.brokers",
        "repid.cli._main:10 imports _private_helper from repid.job",
    ]
    assert reaching_imports(source, "repid.brokers.base") == [
        "repid.brokers.base:10 imports _private_helper from repid.job"]
