"""The layout as docs/architecture.md draws it: a pure policy core, and no import cycles between modules."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
HEAVY = ("fhir", "flask", "werkzeug", "sqlalchemy", "urllib3", "requests", "uuid_utils", "orjson", "prometheus_client")


def test_the_policy_core_imports_no_web_fhir_database_or_http_library():
    code = ("import sys, cds.policy; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports when it is imported (not under TYPE_CHECKING, not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found.update(name for name in names if name in modules)
    return found


def test_no_module_imports_itself_through_others():
    paths = [p for package in ("cds", "hooks") for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    modules = {_module_name(p): p for p in paths}
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    # A package's __init__ re-exporting its own submodules is its facade, not a cycle.
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for dependency in sorted(graph[name]):
            if dependency in trail:
                cycles.append([*trail[trail.index(dependency):], dependency])
            elif dependency not in done:
                visit(dependency, [*trail, dependency])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == []
