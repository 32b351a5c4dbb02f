"""The layering the folders promise: one way down, no cycles, a pure core, one FHIR-version module.

Every module under fhir_adapter/ is parsed (never imported) and each of its imports, at module
level or inside a function, is checked against LAYERS: a module may import its own unit and the
units of lower layers only. Strictly downward imports cannot close a cycle between units; a
separate check finds cycles between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "fhir_adapter"

# Bottom to top. A unit is a package or module of fhir_adapter; a module belongs to the unit with
# the longest matching name. Each row: (layer, units, why it sits there).
LAYERS: tuple[tuple[int, tuple[str, ...], str], ...] = (
    (0, ("fhir_adapter",), "the package marker: its version only"),
    (0, ("codes",), "the vocabulary: canonical URLs, code systems, enums; imports nothing"),
    (0, ("errors",), "the one error tree and the OperationOutcome issue it renders as"),
    (0, ("config", "logs"), "settings from the environment and log setup; import nothing of ours"),
    (0, ("telemetry",), "the process's Prometheus counters and their exposition; nothing of ours"),
    (1, ("fhir",), "FHIR R4 itself: models, validation, search grammar, references, Bundles"),
    (2, ("policy",), "the Second Medical Opinion rules over facts; speaks the vocabulary"),
    (3, ("notices",), "member letters, worded from policy decisions"),
    (4, ("workflow",), "the Task workflow: states, deadlines, intake, letters, PAS"),
    (5, ("metrics",), "CMS-0057-F metrics computed from workflow records (pure)"),
    (6, ("ports",), "the interfaces services depend on; adapters implement them"),
    (7, ("access",), "who may see what: scopes, compartments, the guard over the ports"),
    (8, ("security",), "tokens, clients and keys, checked against access scopes"),
    (
        9,
        ("store", "directory", "delivery", "demo"),
        "adapters (SQL store, provider directory, HTTP deliverer) and the demo's stand-ins",
    ),
    (10, ("services",), "the use cases, over ports and the pure core"),
    (
        11,
        ("telemetry.queues", "telemetry.readiness"),
        "probes that read the store's own tables: queue depths, the migration state",
    ),
    (
        11,
        ("audit_writer",),
        "the audit trail's writer process: the audit service over a SQL store of its own",
    ),
    (12, ("bootstrap",), "the composition root: builds the Container of services and adapters"),
    (13, ("review",), "the staff review workspace (web pages over the Container)"),
    (14, ("api",), "the FastAPI app factory and routes; mounts review and, on request, the demo"),
    (15, ("demo.walkthrough",), "drives a whole service in-process (the app factory) like an EHR"),
    (16, ("notice_samples",), "sample letters made by walking the demo through a real service"),
    (
        17,
        ("startup",),
        "command helpers: the checks before serving, reported in one line",
    ),
    (18, ("server",), "serving: uvicorn with its workers, over the startup checks and the app"),
    (19, ("cli",), "the command line: entry points over everything"),
    (20, ("__main__",), "`python -m fhir_adapter`: runs the command line"),
)
RANK = {unit: layer for layer, units, _ in LAYERS for unit in units}
CORE = ("codes", "errors", "fhir", "policy", "notices", "workflow")
PURE = (*CORE, "access", "metrics")
FRAMEWORKS = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "httpx",
    "uvicorn",
    "alembic",
    "asyncpg",
    "aiosqlite",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in `path`, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield base, node.lineno
            for alias in node.names:  # `from fhir_adapter.x import y` may name a module y
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}", node.lineno


def unit(module: str) -> str:
    """The LAYERS unit of an fhir_adapter module (longest matching name)."""
    rest = module.removeprefix("fhir_adapter").lstrip(".")
    if not rest:
        return "fhir_adapter"
    parts = rest.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in RANK:
            return candidate
    raise AssertionError(f"{module} belongs to no unit of LAYERS: add it to the table")


def internal_imports() -> Iterator[tuple[str, str, int]]:
    for name, path in MODULES.items():
        for imported, line in imports(path):
            if imported == "fhir_adapter" or imported.startswith("fhir_adapter."):
                yield name, imported, line


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        unit(name)


def test_imports_only_go_down() -> None:
    wrong = []
    for importer, imported, line in internal_imports():
        source, target = unit(importer), unit(imported)
        if source != target and RANK[target] >= RANK[source]:
            wrong.append(
                f"{importer}:{line} imports {imported} "
                f"({source}, layer {RANK[source]} -> {target}, layer {RANK[target]})"
            )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for importer, imported, _ in internal_imports():
        if imported in MODULES and imported != importer:
            graph[importer].add(imported)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            if successor not in state and (found := visit(successor)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_layer_table_finds_a_planted_upward_import() -> None:
    assert unit("fhir_adapter.fhir.search") == "fhir"
    assert unit("fhir_adapter.demo.walkthrough") == "demo.walkthrough"
    assert unit("fhir_adapter.demo.directory") == "demo"
    assert RANK[unit("fhir_adapter.workflow.intake")] > RANK[unit("fhir_adapter.fhir.search")]
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", PURE)
def test_the_core_imports_no_framework_and_no_adapter(layer: str) -> None:
    modules = [path for name, path in MODULES.items() if unit(name) == layer]
    assert modules
    for module in modules:
        for name, _ in imports(module):
            assert not name.startswith(FRAMEWORKS), f"{module.relative_to(PACKAGE)} imports {name}"


def test_only_one_module_imports_the_fhir_models() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in MODULES.values()
        if any(name.startswith("fhir.resources") for name, _ in imports(path))
    }
    assert users == {"fhir/resources.py"}


def test_services_depend_on_ports_not_on_concrete_adapters() -> None:
    for name, path in MODULES.items():
        if unit(name) != "services":
            continue
        for imported, _ in imports(path):
            assert not imported.startswith(
                ("fhir_adapter.store", "fhir_adapter.api", "fhir_adapter.directory")
            ), f"{name} imports {imported}"
            assert not imported.startswith(("sqlalchemy", "fastapi", "httpx")), (
                f"{name} imports {imported}"
            )
