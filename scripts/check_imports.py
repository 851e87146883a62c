"""CI check: no import circle between the project's modules, and no function-level import without a reason.

    python scripts/check_imports.py            # exit 1 and one line per problem

Every module of ``sttrl``, ``graph``, ``tools`` and ``bench`` is parsed (nothing is imported). An edge is any import
of a project module: at the top of a file or inside a function (imports under ``if TYPE_CHECKING:`` are type hints
only and do not count). A circle is a strongly connected group of two or more modules. A function-level import
hides such an edge from readers, so it must say why it is there (a heavy optional dependency, torch kept out of a
torch-free path): a ``#`` comment on its line, on the line above, or on the first line of the import group it
belongs to.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("sttrl", "graph", "tools", "bench")
ROOT = Path(__file__).resolve().parents[1]


def module_files(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return ids


def _function_imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, int]]:
    """Every import inside a function, with the first line of its group: the run of consecutive import statements
    (blank lines and comments between them allowed) it belongs to in its block."""
    out: list[tuple[ast.Import | ast.ImportFrom, int]] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for block in ast.walk(fn):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stmts = getattr(block, field, None)
                if not isinstance(stmts, list):
                    continue
                start = None
                for stmt in stmts:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        start = stmt.lineno if start is None else start
                        out.append((stmt, start))
                    else:
                        start = None
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, mods: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:  # relative import: resolve against this module's package
        base = module.split(".")[: -node.level] if mods[module].name != "__init__.py" else module.split(".")
        names = [".".join([*base, *(node.module or "").split(".")]).strip(".") + f".{a.name}" for a in node.names]
    else:
        names = [f"{node.module}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def _has_reason(lines: list[str], node: ast.AST, group_start: int) -> bool:
    i = node.lineno - 1
    return any("#" in lines[j] for j in {i, i - 1, group_start - 1, group_start - 2} if 0 <= j < len(lines))


def analyse(root: Path = ROOT) -> tuple[list[list[str]], list[str]]:
    mods = module_files(root)
    graph: dict[str, set[str]] = defaultdict(set)
    unexplained: list[str] = []
    for module, path in mods.items():
        text = path.read_text(encoding="utf-8")
        tree, lines = ast.parse(text), text.splitlines()
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
                graph[module] |= _targets(node, module, mods)
        for node, start in _function_imports(tree):
            if not _has_reason(lines, node, start):
                unexplained.append(
                    f"{path.relative_to(root)}:{node.lineno}: function-level import without a reason "
                    f"(# comment): {ast.unparse(node)}"
                )
    return _cycles(mods, graph), unexplained


def _cycles(mods: dict[str, Path], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    cycles, unexplained = analyse()
    for comp in cycles:
        print(f"import circle: {' <-> '.join(comp)}")
    for line in unexplained:
        print(line)
    if not cycles and not unexplained:
        print(f"imports: no circle among {len(module_files(ROOT))} modules; every function-level import says why")
    return 1 if cycles or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
