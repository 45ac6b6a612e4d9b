"""The package's folders are its architecture (ARCHITECTURE.md): these checks keep them so.

- no import cycles between modules (counting every import, top level or not);
- the live path (`live/`, `inference/`) imports no transport, no app wiring, no tools;
- first-party imports sit at module top level, unless a comment on the import's line or the
  line above says why (lazy torch for a fast CLI start, for instance).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import freeavatar_server

PACKAGE = Path(freeavatar_server.__file__).parent
FIRST_PARTY = ("freeavatar_server", "freeavatar")
LIVE_PATH = ("freeavatar_server.live", "freeavatar_server.inference")
OUTSIDE_LIVE_PATH = ("freeavatar_server.transport", "freeavatar_server.app", "freeavatar_server.tools")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (or a name inside it)
    line: int
    top_level: bool
    explained: bool  # a comment on the line or the one above


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module]
        else:
            continue
        around = lines[node.lineno - 2 : node.end_lineno]
        explained = any("#" in text for text in around)
        for target in targets:
            if target.split(".")[0] in FIRST_PARTY:
                found.append(Import(module_name(path), target, node.lineno, id(node) in top, explained))
    return found


def all_imports() -> list[Import]:
    return [i for path in sorted(PACKAGE.rglob("*.py")) for i in imports_of(path)]


def known_module(target: str, modules: set[str]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def test_no_import_cycles():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in all_imports():
        target = known_module(i.target, modules)
        # a package's __init__ importing its own modules is how packages re-export
        if target and target != i.module and not target.startswith(i.module + "."):
            graph[i.module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_live_path_imports_no_transport():
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.module.startswith(LIVE_PATH) and i.target.startswith(OUTSIDE_LIVE_PATH)
    ]
    assert not wrong, wrong


def test_first_party_imports_at_top_level_or_explained():
    hidden = [f"{i.module}:{i.line} imports {i.target}" for i in all_imports() if not i.top_level and not i.explained]
    assert not hidden, f"{len(hidden)} imports inside functions with no comment saying why: {hidden}"
