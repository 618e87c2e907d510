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


def _modules_loaded_by(statement: str) -> set[str]:
    """Top-level and `ortserve.*` modules a fresh interpreter has loaded after `statement`."""
    import json
    import subprocess
    import sys

    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_the_server_package_imports_nothing_by_itself() -> None:
    """`ortserve.server/__init__.py` is empty: importing one module never loads the app."""
    init = ROOT / "server" / "__init__.py"
    tree = ast.parse(init.read_text())
    assert all(isinstance(node, ast.Expr) for node in tree.body), "server/__init__.py must hold only its docstring"
    loaded = _modules_loaded_by("import ortserve.server.runtime")
    assert "ortserve.server.app" not in loaded and "grpc" not in loaded and "prometheus_client" not in loaded


#: What the container's HEALTHCHECK (every 15 s) may load: gRPC and its health stubs, nothing of the server.
HEAVY_FOR_A_PROBE = {
    "ortserve.server.app",
    "ortserve.server.runtime",
    "onnxruntime",
    "numpy",
    "tokenizers",
    "pydantic",
    "prometheus_client",
    "mlflow",
}  # not grpc_reflection: `import grpc` itself loads that small package


def test_the_health_probe_imports_grpc_and_the_health_stubs_only() -> None:
    loaded = _modules_loaded_by("import ortserve.server.healthcheck")
    assert "grpc" in loaded and "grpc_health.v1.health_pb2_grpc" in loaded
    assert loaded & HEAVY_FOR_A_PROBE == set()
    ours = {name for name in loaded if name.startswith("ortserve.")}
    assert ours == {"ortserve.server", "ortserve.server.healthcheck"}, ours


def test_the_health_probe_stays_under_50_mb() -> None:
    """Peak RSS of one probe run against a closed port (it fails fast: the cost is the imports and one attempt)."""
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    run = subprocess.run(
        [sys.executable, "-m", "ortserve.server.healthcheck", "--target", "127.0.0.1:1", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "UNAVAILABLE" in run.stderr
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib > before:  # ru_maxrss of children is the largest child so far: only a new maximum is this probe's
        assert peak_kib < 50 * 1024, f"the health probe peaked at {peak_kib / 1024:.0f} MB"


#: The server's rooms (sub-packages) and the core modules each may import at run time: leaves of the core only, so no
#: import runs back up from a room into the app, the service, the model table or the batcher. Imports under
#: `if TYPE_CHECKING:` are for annotations and do not count.
ROOM_MAY_IMPORT = {
    "security": {"errors"},
    "sources": {"errors", "artifact"},
    "observability": {"errors", "types", "stage_timings", "security"},
    "interceptors": {"errors", "settings", "security", "observability"},
}


def _runtime_imports(path: Path) -> set[str]:
    """Relative `from .x`/`from ..x` imports of a module outside `if TYPE_CHECKING:` blocks, as written."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for child in ast.walk(node)}
    return {
        "." * node.level + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in type_only
    }


def test_no_import_runs_back_up_from_a_room_of_the_server() -> None:
    wrong = []
    for room, allowed in ROOM_MAY_IMPORT.items():
        for path in (ROOT / "server" / room).glob("*.py"):
            for target in _runtime_imports(path):
                if target.startswith("..") and not target.startswith("..."):
                    core = target[2:].split(".")[0]
                    if core not in allowed:
                        wrong.append(f"server/{room}/{path.name} imports {target}")
    assert wrong == []


def test_server_file_names_are_unique() -> None:
    names = [path.name for path in (ROOT / "server").rglob("*.py") if path.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []
