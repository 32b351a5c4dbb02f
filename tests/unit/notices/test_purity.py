"""The notices package is pure, like the core: no framework, no adapter imports."""

from __future__ import annotations

from tests.unit.test_architecture import ADAPTERS, FRAMEWORKS, PACKAGE, imports


def test_notices_import_no_framework_and_no_adapter() -> None:
    modules = list((PACKAGE / "notices").rglob("*.py"))
    assert modules
    for module in modules:
        for name in imports(module):
            assert not name.startswith(FRAMEWORKS), f"{module.relative_to(PACKAGE)} imports {name}"
            assert not name.startswith(ADAPTERS), f"{module.relative_to(PACKAGE)} imports {name}"
