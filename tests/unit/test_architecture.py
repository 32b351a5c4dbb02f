"""The layering the folders promise: a pure core, adapters around it, one FHIR-version module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "fhir_adapter"
PURE = ("fhir", "policy", "workflow", "access", "metrics")
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
ADAPTERS = (
    "fhir_adapter.api",
    "fhir_adapter.store",
    "fhir_adapter.directory",
    "fhir_adapter.services",
    "fhir_adapter.bootstrap",
    "fhir_adapter.cli",
    "fhir_adapter.demo",
)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", PURE)
def test_the_core_imports_no_framework_and_no_adapter(layer: str) -> None:
    for module in (PACKAGE / layer).rglob("*.py"):
        for name in imports(module):
            assert not name.startswith(FRAMEWORKS), f"{module.relative_to(PACKAGE)} imports {name}"
            assert not name.startswith(ADAPTERS), f"{module.relative_to(PACKAGE)} imports {name}"


def test_only_one_module_imports_the_fhir_models() -> None:
    users = {
        str(module.relative_to(PACKAGE))
        for module in PACKAGE.rglob("*.py")
        if any(name.startswith("fhir.resources") for name in imports(module))
    }
    assert users == {"fhir/resources.py"}


def test_services_depend_on_ports_not_on_concrete_adapters() -> None:
    for module in (PACKAGE / "services").rglob("*.py"):
        for name in imports(module):
            assert not name.startswith(
                ("fhir_adapter.store", "fhir_adapter.api", "fhir_adapter.directory")
            ), f"{module.relative_to(PACKAGE)} imports {name}"
            assert not name.startswith(("sqlalchemy", "fastapi", "httpx")), (
                f"{module.relative_to(PACKAGE)} imports {name}"
            )
