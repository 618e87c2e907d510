"""The import graph of the installed packages (issue 14): no circle anywhere; the contract imports neither server
nor export; export reaches the server only through `ortserve.server.runtime` (the parity check runs an artifact as
the server will); the server never imports export. Read from the source (AST), imports inside functions included."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: `ortserve.*` package -> folder, as pyproject.toml installs them (the generated stubs `ortserve.v1` left out).
PACKAGES = {
    "ortserve.contract": "contract",
    "ortserve.server": "server",
    "ortserve.export": "export",
    "ortserve.client": "client",
    "ortserve.cli": "cli",
}


def packages() -> dict[str, Path]:
    return {name: ROOT / folder for name, folder in PACKAGES.items()}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in packages().items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *relative)).removesuffix(".__init__")
            found[name] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every `ortserve.*` module that `module` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    base = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                origin = f"{anchor}.{node.module}" if node.module else anchor
            else:
                origin = node.module or ""
            # `from package import module` imports the module; `from module import name` the module itself.
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        else:
            continue
        yield from (target for target in targets if target.startswith("ortserve."))


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {t for t in imported(name, path, known) if t in known and t != name} for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    installed = (ROOT / "pyproject.toml").read_text()
    assert all(f'"{name}" = "{folder}"' in installed for name, folder in PACKAGES.items())
    edges = graph()
    assert "ortserve.contract.artifact" in edges["ortserve.server.artifact"]
    assert "ortserve.server.runtime" in edges["ortserve.export.pipeline"]


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_contract_imports_neither_server_nor_export() -> None:
    wrong = {
        (m, t)
        for m, ts in graph().items()
        if m.startswith("ortserve.contract")
        for t in ts
        if not t.startswith("ortserve.contract")
    }
    assert wrong == set()


def test_export_reaches_the_server_only_through_its_runtime() -> None:
    wrong = {
        (m, t)
        for m, ts in graph().items()
        if m.startswith("ortserve.export")
        for t in ts
        if t.startswith("ortserve.server") and t != "ortserve.server.runtime"
    }
    assert wrong == set()


def test_server_never_imports_export() -> None:
    wrong = {
        (m, t)
        for m, ts in graph().items()
        if m.startswith("ortserve.server")
        for t in ts
        if t.startswith("ortserve.export")
    }
    assert wrong == set()


def test_contract_needs_only_the_server_extra() -> None:
    """Top-level imports of the contract: the standard library, pydantic; MLflow only inside functions."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"pydantic", "ortserve", "__future__"}
    for path in (ROOT / "contract").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            )
            assert {n.split(".")[0] for n in names} <= allowed, (path.name, names)
