"""raylung's import graph, read from the source (imports inside functions included).

The layers only point down: a module may import its own layer or a lower one, never a higher
one, and no two files or packages import each other, directly or round a loop. The test in
``test_architecture.py`` holds the package to that; run this file to print the figures
(modules, largest module, edges, upward edges, cycles) and, with ``--json FILE``, save them::

    python tests/import_graph.py            # the table
    python tests/import_graph.py --json g.json
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raylung"

# Lowest first. A unit is the first name under ``raylung`` (a subpackage or a top-level module);
# ``raylung`` itself is the package's public face and sits on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors", "extras", "storage", "plots", "progress"),
    ("models",),
    ("config",),
    ("data", "slides", "experiment", "tracking", "cluster"),
    ("plan", "artifacts"),
    ("explain",),
    ("train",),
    ("tune",),
    ("workflows", "benchmark", "report"),
    ("api",),
    ("cli", "__main__", "(root)"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


@dataclass
class Graph:
    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def unit(self, module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else "(root)"

    def unit_edges(self) -> dict[str, set[str]]:
        units: dict[str, set[str]] = defaultdict(set)
        for source, targets in self.edges.items():
            for target in targets:
                if self.unit(source) != self.unit(target):
                    units[self.unit(source)].add(self.unit(target))
        return units

    def upward(self) -> list[tuple[str, str]]:
        """Edges from a lower layer to a higher one (or to a unit no layer names)."""
        bad = []
        for source, targets in sorted(self.edges.items()):
            for target in sorted(targets):
                low, high = RANK.get(self.unit(source)), RANK.get(self.unit(target))
                if low is None or high is None or high > low:
                    bad.append((source, target))
        return bad

    def lines(self, module: str) -> int:
        return len(self.modules[module].read_text().splitlines())


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def build(root: Path = PACKAGE) -> Graph:
    """Every ``import raylung...`` and ``from raylung... import`` (relative ones too), anywhere."""
    graph = Graph(module_names(root))

    def owner(name: str) -> str:
        while name not in graph.modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    for module, path in graph.modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for target in targets:
                if target.split(".")[0] == root.name:
                    found = owner(target)
                    if found != module:
                        graph.edges[module].add(found)
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def figures(graph: Graph) -> dict:
    largest = max(graph.modules, key=graph.lines)
    return {
        "modules": len(graph.modules),
        "lines": sum(graph.lines(m) for m in graph.modules),
        "largest_module": largest,
        "largest_module_lines": graph.lines(largest),
        "modules_over_400_lines": sorted(m for m in graph.modules if graph.lines(m) > 400),
        "module_edges": sum(len(t) for t in graph.edges.values()),
        "package_edges": sum(len(t) for t in graph.unit_edges().values()),
        "upward_edges": [f"{a} -> {b}" for a, b in graph.upward()],
        "module_cycles": cycles(graph.edges),
        "package_cycles": cycles(graph.unit_edges()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=PACKAGE)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = figures(build(args.root.resolve()))
    for key, value in result.items():
        shown = value if not isinstance(value, list) else f"{len(value)}  {value[:6]}"
        print(f"{key:<24} {shown}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
