"""The shape of the house: chatmod's imports point one way.

Run as a script (``python tests/test_import_graph.py [DIR]``) it prints the import graph of
the chatmod modules under DIR (default: this checkout), one module a line with what it
imports, and any cycle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_PACKAGE_MODULES = 15
# What each layer may never import (by prefix). The core is the pipeline's logic: it knows
# the plugin contract and its own config sections, not the plugins, the command line, HTTP,
# the daemon's runtime, a provider or the config loader. Config knows the schema, the
# registry and the plugin contract.
FORBIDDEN = {
    "chatmod.core": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                     "chatmod.sandbox", "chatmod.chatsight", "chatmod.config.load",
                     "chatmod.config.registry"),
    "chatmod.protocols": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                          "chatmod.sandbox", "chatmod.config.load"),
    "chatmod.chatsight": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                          "chatmod.sandbox", "chatmod.config.load"),
    "chatmod.config": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                       "chatmod.sandbox", "chatmod.chatsight"),
    "chatmod.plugins": ("chatmod.cli", "chatmod.runtime", "chatmod.sandbox",
                        "chatmod.config.load"),
    "chatmod.state": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                      "chatmod.sandbox", "chatmod.config.load"),
    "chatmod.policy": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                       "chatmod.sandbox", "chatmod.chatsight", "chatmod.config.load"),
    "chatmod.review": ("chatmod.plugins", "chatmod.cli", "chatmod.http", "chatmod.runtime",
                       "chatmod.sandbox", "chatmod.config.load"),
    "chatmod.http": ("chatmod.plugins", "chatmod.cli", "chatmod.runtime", "chatmod.sandbox"),
    # Plugins are found through their entry points, as third-party ones are.
    "chatmod.runtime": ("chatmod.plugins", "chatmod.cli"),
    "chatmod.cli": ("chatmod.plugins",),
}


def modules(root: Path) -> dict[str, Path]:
    """chatmod module name -> file (daemon/ is chatmod, plugins/ is chatmod.plugins)."""
    found: dict[str, Path] = {}
    for base, package in ((root / "daemon", "chatmod"), (root / "plugins", "chatmod.plugins")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.ImportFrom | ast.Import]:
    """Import statements, leaving out ``if TYPE_CHECKING:`` blocks (no import at run time)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(root: Path) -> dict[str, set[str]]:
    """module -> the chatmod modules it imports (function-level imports included)."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "chatmod":
                    deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside one (``chatmod.http_body`` is not inside
    ``chatmod.http``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_cycles() -> None:
    assert cycles(imports(REPO)) == []


def test_layers_import_one_way() -> None:
    wrong = [
        f"{module} imports {dep}"
        for module, deps in sorted(imports(REPO).items())
        for layer, forbidden in FORBIDDEN.items()
        if _within(module, (layer,))
        for dep in sorted(deps) if _within(dep, forbidden)
    ]
    assert wrong == []


def test_modules_and_packages_stay_small() -> None:
    found = modules(REPO)
    long = {name: n for name, path in found.items()
            if path.is_relative_to(REPO / "daemon")
            and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
    per_package: dict[str, int] = {}
    for name, path in found.items():
        if path.name != "__init__.py":
            package = name.rpartition(".")[0]
            per_package[package] = per_package.get(package, 0) + 1
    assert {p: n for p, n in per_package.items() if n > MAX_PACKAGE_MODULES} == {}


def test_the_graph_is_read_correctly() -> None:
    graph = imports(REPO)
    assert "chatmod.core.model" in graph["chatmod.core.pipeline"]
    assert "chatmod.core.interfaces" in graph["chatmod.plugins.stdin"]
    # An import only for type checking is not an edge: errors.py names Decision that way.
    assert "chatmod.core.model" not in graph["chatmod.errors"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    graph = imports(root)
    for module in sorted(graph):
        print(f"{module}: {' '.join(sorted(d.removeprefix('chatmod.') for d in graph[module]))}")
    for group in cycles(graph):
        print("cycle:", " ".join(group))


def test_every_package_is_installed() -> None:
    """A subpackage missing from pyproject's list works in a checkout and is absent once
    installed."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in modules(REPO).items() if path.name == "__init__.py"}
    assert on_disk - listed == set()
