"""The `fhir-adapter` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_adapter import __version__
from fhir_adapter.cli import app


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "cli.db"
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{database}")
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at revision 0002" in result.output
    assert database.exists()


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.output.strip() == __version__
