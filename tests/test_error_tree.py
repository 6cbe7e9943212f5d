"""One error tree: every exception chatmod defines lives in ``chatmod.errors``, drawn there.

Every class statement in daemon/ and plugins/ (nested ones too) is found with ``ast``; its
bases are resolved in its module as imported, so an exception class is recognised whatever it
derives from (a builtin, a library's error, another of ours) and however it is imported.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import chatmod.errors

from .test_import_graph import REPO, modules

# Exception classes allowed outside chatmod.errors, each with the reason it may stay.
ALLOWED_OUTSIDE = {
    # Control flow private to the HTTP server: raised while a request is read and caught by
    # the same connection's handler, which answers with its status and closes. It never
    # leaves the module, so no caller can see it (test_refusal_stays_inside_the_server).
    "chatmod.http.server._Refusal",
    # Control flow private to the lean HTTP pool: a reused keep-alive connection that failed
    # before any byte of an answer (closed while idle) is replaced once; the pool turns it
    # into ExchangeFailed before it returns, so no caller sees it.
    "chatmod.chatsight.http_pool._NothingReceived",
}


def _resolve(expression: ast.expr, module: ModuleType, local: dict[str, bool]) -> bool | None:
    """Whether the base class ``expression`` is an exception: True/False, None if unknown."""
    if isinstance(expression, ast.Subscript):  # Generic[...] and the like
        expression = expression.value
    dotted = ast.unparse(expression)
    if dotted in local:
        return local[dotted]
    found: object = module
    for index, part in enumerate(dotted.split(".")):
        if index == 0 and not hasattr(found, part):
            found = getattr(builtins, part, None)
        else:
            found = getattr(found, part, None)
        if found is None:
            return None
    return isinstance(found, type) and issubclass(found, BaseException)


def exception_classes(sources: dict[str, Path]) -> set[str]:
    """``module.Class`` of every exception class defined in ``sources`` (module -> file)."""
    found: set[str] = set()
    for name, path in sources.items():
        module = importlib.import_module(name)
        local: dict[str, bool] = {}  # classes of this module already judged (nested ones)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            verdicts = [_resolve(base, module, local) for base in node.bases]
            assert None not in verdicts, f"{name}.{node.name}: cannot resolve its bases"
            local[node.name] = any(verdicts)
            if local[node.name]:
                found.add(f"{name}.{node.name}")
    return found


def exception_classes_outside_errors() -> set[str]:
    """Every exception class chatmod defines outside chatmod.errors."""
    return exception_classes({name: path for name, path in modules(REPO).items()
                              if name not in ("chatmod.errors", "chatmod.__main__")})


def test_no_module_outside_errors_defines_an_exception() -> None:
    outside = exception_classes_outside_errors()
    assert outside - ALLOWED_OUTSIDE == set(), "move these into chatmod.errors"
    assert outside >= ALLOWED_OUTSIDE, "an allowed class is gone: drop it from ALLOWED_OUTSIDE"


def test_the_check_finds_an_exception_however_it_is_derived(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "stray_errors_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stray.py").write_text(
        "import trio\nfrom chatmod.errors import ProtocolError as Refused\n"
        "class Plain(ValueError): pass\n"
        "class Library(trio.TooSlowError): pass\n"
        "class Ours(Refused): pass\n"
        "class Nothing: pass\n"
        "def factory():\n    class Nested(Plain): pass\n    return Nested\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = exception_classes({"stray_errors_pkg.stray": package / "stray.py"})
    assert found == {f"stray_errors_pkg.stray.{name}"
                     for name in ("Plain", "Library", "Ours", "Nested")}


def test_refusal_stays_inside_the_server() -> None:
    for path in (*REPO.joinpath("daemon").rglob("*.py"), *REPO.joinpath("plugins").rglob("*.py")):
        if path.name != "server.py" or path.parent.name != "http":
            assert "_Refusal" not in path.read_text(), path


def _drawn_tree(doc: str) -> dict[str, str | None]:
    """Class name -> parent class name, read from the tree drawn in a docstring."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) from the root down
    for line in doc.splitlines():
        match = re.match(r"^(?P<lead>[\s│├└─]*)(?P<name>[A-Z]\w*(?:Error|Timeout|TimedOut|Fatal|Lost|"
                         r"Failed|Rejected))\b", line)
        if match is None or not (match["lead"].strip() or not stack):
            continue
        column = len(match["lead"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((column, match["name"]))
    return parents


def test_errors_docstring_draws_the_whole_tree() -> None:
    defined = {name: value for name, value in vars(chatmod.errors).items()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == "chatmod.errors"}
    drawn = _drawn_tree(chatmod.errors.__doc__ or "")
    assert set(drawn) == set(defined)
    for name, parent in drawn.items():
        if parent is None:
            assert name == "ChatmodError"
        else:
            assert defined[parent] in defined[name].__bases__, f"{name} is drawn under {parent}"


@pytest.mark.parametrize("name", ["ConnectionLost", "HandshakeFailed", "UpgradeRejected"])
def test_connection_lost_names_its_peer_and_reason(name: str) -> None:
    error_type = getattr(chatmod.errors, name)
    error = (error_type(401, peer="websocket") if name == "UpgradeRejected"
             else error_type("closed by the server", peer="irc server"))
    assert isinstance(error, chatmod.errors.ConnectionLost)
    assert error.peer in ("websocket", "irc server")
    assert str(error) == error.reason
