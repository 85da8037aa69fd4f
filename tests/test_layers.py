"""The house's rules, read from the code's own imports (every `import`, module level or not).

- ua_node/ and deployments/ both stand on the media core (voxray/media) and never import each other;
- the media core knows no transport, no Ray deployment, no provider plugin and no cluster;
- no import cycles between product modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The design card's folders are subpackages of `voxray` (pyproject's package-dir).
FOLDERS = {"voxray": "voxray", "ua_node": "voxray.ua_node", "deployments": "voxray.deployments",
           "providers": "voxray.providers", "cluster": "voxray.cluster"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "voxray" and parts and parts[0] in ("ua_node", "deployments", "providers", "cluster"):
                continue
            mods[name] = path
    return mods


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:  # `from a.b import c` names module a.b.c or a name in a.b
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def test_ua_node_and_deployments_never_import_each_other():
    graph = _graph()
    crossing = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                      if (a.startswith("voxray.ua_node") and b.startswith("voxray.deployments"))
                      or (a.startswith("voxray.deployments") and b.startswith("voxray.ua_node")))
    assert crossing == []


def test_the_media_core_stands_on_nothing_above_it():
    above = ("voxray.ua_node", "voxray.deployments", "voxray.providers", "voxray.cluster")
    graph = _graph()
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() if a.startswith("voxray.media")
                    for b in deps if b.startswith(above))
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A package's __init__ that re-exports its own submodules is not a cycle of files.
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".")
                                           for m in c)]
    assert cycles == []
