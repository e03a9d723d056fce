"""Layers you can see: every module of glmdata and glmtrain imports; no import cycles among them;
no module uses another module's private (``_name``) names.

The import graph is read from the source with ``ast``: the imports a module runs when it is
imported (its top level, class bodies, ``if`` and ``try`` blocks), not those inside functions,
which run late on purpose (heavy libraries, STYLE §7), nor those under ``if TYPE_CHECKING:``.
Private names are looked for everywhere in a module, functions included.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("glmdata", "glmtrain")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    #: modules of the project imported when this one is (the edges of the graph)
    imports: set[str] = field(default_factory=set)
    #: ``(line, what)`` for every private name of another module used here
    private_uses: list[tuple[int, str]] = field(default_factory=list)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_modules() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            name = module_name(path)
            modules[name] = Module(name, path, tree, path.name == "__init__.py")
    for module in modules.values():
        module.imports = top_level_imports(module, modules)
        module.private_uses = private_uses(module, modules)
    return modules


def absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported(module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> set[str]:
    """The project's modules an import statement loads (a package's submodule when the name is one)."""
    found = set()
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    else:
        source = absolute(module, node)
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            found.add(submodule if submodule in modules else source)
    return {name for name in found if name in modules and name != module.name}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def run_at_import(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of ``body`` that run when the module is imported, blocks opened; functions
    and ``if TYPE_CHECKING:`` blocks left out."""
    out = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += run_at_import(node.orelse if is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            out += run_at_import(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                out += run_at_import(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            out += run_at_import(node.body + getattr(node, "orelse", []))
    return out


def top_level_imports(module: Module, modules: dict[str, Module]) -> set[str]:
    edges = set()
    for node in run_at_import(module.tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            edges |= imported(module, node, modules)
    return edges


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(module: Module, modules: dict[str, Module]) -> list[tuple[int, str]]:
    """``from x import _y`` and ``x._y`` where ``x`` is another module of the project."""
    uses = []
    aliases: dict[str, str] = {}  # a local name -> the project module it is bound to
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # `import glmdata.io` binds `glmdata`; the attribute chain is followed below
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    aliases[alias.asname or alias.name] = submodule
                elif source in modules and source != module.name and is_private(alias.name):
                    uses.append((node.lineno, f"from {source} import {alias.name}"))
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = dotted(node.value, aliases)
            if owner in modules and owner != module.name:
                uses.append((node.lineno, f"{owner}.{node.attr}"))
    return sorted(uses)


def dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The module an expression such as ``gio`` or ``glmdata.io`` stands for, if it is a name."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = dotted(node.value, aliases)
        return f"{owner}.{node.attr}" if owner else None
    return None


def cycles(modules: dict[str, Module]) -> list[tuple[list[str], list[str]]]:
    """Each group of modules that import each other, with one cycle through it (Tarjan's strongly
    connected components, then a shortest way round inside each)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in sorted(modules[name].imports):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == name:
                    break
            if len(group) > 1:
                groups.append(group)

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return [(shortest_cycle(min(group), group, modules), sorted(group)) for group in groups]


def shortest_cycle(start: str, group: set[str], modules: dict[str, Module]) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        next_frontier = []
        for name in frontier:
            for other in sorted(modules[name].imports & group):
                if other == start:
                    return paths[name] + [start]
                if other not in paths:
                    paths[other] = paths[name] + [other]
                    next_frontier.append(other)
        frontier = next_frontier
    raise AssertionError(f"{start} is in a cycle that does not come back to it")


MODULES = read_modules()


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_module_imports(name: str) -> None:
    """``__main__`` modules run their command when imported: they are read, not imported."""
    importlib.import_module(name)


def test_the_graph_sees_imports() -> None:
    # the reading itself: a known edge, one inside a function left out, one under TYPE_CHECKING left out
    cli = MODULES["glmdata.cli.convert"]
    assert "glmdata.cli.common" in cli.imports
    assert "glmdata.convert" not in cli.imports  # imported inside functions only
    assert "glmdata.result" not in MODULES["glmdata.cli.common"].imports  # under TYPE_CHECKING
    toy = {
        name: Module(name, Path(f"{name}.py"), ast.parse(""), False, imports=edges)
        for name, edges in {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}.items()
    }
    assert cycles(toy) == [(["a", "b", "c", "a"], ["a", "b", "c"])]


def test_private_names_are_found() -> None:
    source = (
        "import glmdata.io as gio\nfrom glmdata import convert\nfrom glmdata.checks import _x\ngio._y\nconvert._z\n"
    )
    toy = Module("glmdata.toy", Path("toy.py"), ast.parse(source), False)
    assert private_uses(toy, MODULES) == [
        (3, "from glmdata.checks import _x"),
        (4, "glmdata.io._y"),
        (5, "glmdata.convert._z"),
    ]


def test_no_import_cycles() -> None:
    found = [f"{' -> '.join(cycle)} (in the group {', '.join(group)})" for cycle, group in cycles(MODULES)]
    assert not found, "import cycles (make the shared part its own module):\n" + "\n".join(found)


def test_no_module_uses_another_modules_private_names() -> None:
    found = [
        f"{module.path.relative_to(REPO)}:{line}: {what}"
        for module in MODULES.values()
        for line, what in module.private_uses
    ]
    assert not found, "private names used across modules (make them public, or move the code):\n" + "\n".join(found)
