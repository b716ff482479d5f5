"""The import graph of dtune's packages and its cycles. `python -m tools.import_graph` prints every module's imports
and exits 1 if there is a cycle.

Imports inside functions count too: a function-level import that closes a cycle is still two modules that need
each other (the layering is wrong, the import was only moved to where Python doesn't notice). Imports under
`if TYPE_CHECKING:` don't: they never run."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("decoder", "tuner")
# tuner's folders from the bottom up: a module may import its own folder and the folders below it, never one above.
LAYERS = ("base", "sandbox", "tasks", "verdict", "storage", "study", "report", "tracking", "app", "workers", "export",
          "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports anywhere but in a TYPE_CHECKING block."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    for sub in ast.walk(tree):
        if id(sub) in skipped:
            continue
        if isinstance(sub, ast.Import):
            targets = [a.name for a in sub.names]
        elif isinstance(sub, ast.ImportFrom):
            base = sub.module or ""
            if sub.level:
                anchor = package.split(".")[: len(package.split(".")) - (sub.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule; `from pkg import name` the package (its __init__).
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in sub.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): module_imports(p, known) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search (each reported once, from its smallest module)."""
    found: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.add(tuple(path))
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return [list(c) for c in sorted(found)]


def layer_of(module: str) -> str | None:
    """The folder of `tuner` a module belongs to (None for the package's own top-level modules)."""
    parts = module.split(".")
    if parts[0] != "tuner" or len(parts) < 2 or (len(parts) == 2 and parts[1] not in LAYERS):
        return None
    return parts[1]


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, import) pairs where a module of a lower folder imports a higher one (LAYERS)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    out = []
    for mod, targets in graph.items():
        own = layer_of(mod)
        for target in targets:
            other = layer_of(target)
            if own in rank and other in rank and rank[other] > rank[own]:
                out.append((mod, target))
    return sorted(out)


if __name__ == "__main__":
    graph = import_graph()
    for mod in sorted(graph):
        print(f"{mod}: {', '.join(sorted(graph[mod])) or '-'}")
    found = cycles(graph)
    for c in found:
        print("cycle:", " -> ".join([*c, c[0]]))
    upward = layer_violations(graph)
    for mod, target in upward:
        print(f"layer: {mod} imports {target}, a higher folder")
    sys.exit(1 if found or upward else 0)
