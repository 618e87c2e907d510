"""benchmarks/ is a client of the product: public modules of ortserve only, no import circle, reporting apart from
measuring, no absolute machine paths, and every default output under the gitignored benchmarks/work/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from benchmarks.paths import RESULTS, WORK

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
#: What a client of ortserve may import: the client, the stubs, the artifact contract, the export API, the health
#: probe and the runtime's public classes.
PUBLIC = (
    "ortserve.client",
    "ortserve.v1",
    "ortserve.v2",
    "ortserve.contract.artifact",
    "ortserve.export",
    "ortserve.server.healthcheck",
    "ortserve.server.runtime",
)
#: Modules that render results: they read a run's JSON and import nothing that measures.
REPORTING = {
    "report",
    "under_load_report",
    "percall_report",
    "observability_report",
    "runtime_report",
    "plots",
    "start_to_serving_report",
    "http_report",
    "hostile_load_report",
}
#: What only reporting does: render Markdown tables and plots.
RENDERING = re.compile(r"^(\s*import matplotlib|def (report|markdown|write_report|plot)\()", re.MULTILINE)


def _imports(path: Path) -> set[str]:
    """Absolute module names `path` imports (relative imports resolved inside `benchmarks`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names.add(f"benchmarks.{module}" if node.level else module)
    return names


def _modules() -> dict[str, set[str]]:
    return {path.stem: _imports(path) for path in sorted(BENCHMARKS.glob("*.py")) if path.stem != "__init__"}


def test_only_public_modules_of_ortserve_are_imported() -> None:
    private = {
        (name, imported)
        for name, imports in _modules().items()
        for imported in imports
        if imported.startswith("ortserve")
        and not any(imported == p or imported.startswith(p + ".") for p in PUBLIC)
        and imported != "ortserve"
    }
    assert private == set()


def test_no_import_circle_and_reporting_imports_no_measuring() -> None:
    graph = {
        name: {i.removeprefix("benchmarks.") for i in imports if i.startswith("benchmarks.")}
        for name, imports in _modules().items()
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    assert [name for name in graph if reaches(name, name, set())] == []
    for name in REPORTING:
        assert graph[name] <= REPORTING | {"paths"}, f"{name} imports {graph[name] - REPORTING}"


def test_measuring_modules_render_nothing() -> None:
    rendering = {
        path.stem
        for path in BENCHMARKS.glob("*.py")
        if path.stem not in REPORTING and RENDERING.search(path.read_text(encoding="utf-8"))
    }
    assert rendering == set()


def test_no_absolute_machine_paths() -> None:
    absolute = re.compile(r"""["' ](/(work|home|root|opt|Users|tmp)/[\w./-]+)""")
    found = {
        (path.name, match.group(1))
        for path in BENCHMARKS.glob("*.py")
        for match in absolute.finditer(path.read_text(encoding="utf-8"))
    }
    assert found == set()


def test_results_go_to_the_gitignored_work_directory() -> None:
    assert not WORK.is_absolute() and RESULTS.is_relative_to(WORK)
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert f"/{WORK.as_posix()}/" in ignored
    defaults = {
        (path.name, match.group(1))
        for path in BENCHMARKS.glob("*.py")
        for match in re.finditer(r'default=Path\("([^"]+)"\)', path.read_text(encoding="utf-8"))
    }
    assert {d for d in defaults if not d[1].startswith(WORK.as_posix())} == set()
    assert not (BENCHMARKS / "results").exists(), "results are written under benchmarks/work/, never committed"
