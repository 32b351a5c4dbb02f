"""The `fhir-adapter` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_adapter import __version__
from fhir_adapter.cli import app
from fhir_adapter.telemetry.readiness import package_heads


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "cli.db"
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{database}")
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    [head] = package_heads()  # the newest migration this package ships
    assert f"database at revision {head}" in result.output
    assert database.exists()


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.output.strip() == __version__


EXAMPLES = Path(__file__).parents[2] / "examples"


def test_validate_accepts_every_example() -> None:
    # examples/metrics/ holds a metrics report, not FHIR resources
    files = sorted(str(p) for p in EXAMPLES.glob("*/*.json") if p.parent.name != "metrics")
    result = CliRunner().invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(files)


def test_validate_reports_each_problem_with_its_element(tmp_path: Path) -> None:
    bundle = json.loads((EXAMPLES / "requests" / "denied.json").read_text())
    request = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    request["resource"].pop("reasonCode")
    request["resource"]["status"] = "draft"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bundle))
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Patient",')
    result = CliRunner().invoke(app, ["validate", str(bad), str(broken)])
    assert result.exit_code == 1
    index = bundle["entry"].index(request)
    assert f"[Bundle.entry[{index}].resource.reasonCode]" in result.output
    assert f"[Bundle.entry[{index}].resource.status]" in result.output
    assert "broken.json: 1 problem(s)" in result.output
    assert "not valid JSON" in result.output


def test_validate_checks_the_member_the_coverage_and_the_category(tmp_path: Path) -> None:
    """The server's contract §3 checks that need no database run from the command line too."""
    bundle = json.loads((EXAMPLES / "requests" / "in-network-specialist-care.json").read_text())
    index = {e["resource"]["resourceType"]: i for i, e in enumerate(bundle["entry"])}
    bundle["entry"][index["Patient"]]["resource"].pop("generalPractitioner")
    bundle["entry"][index["Coverage"]]["resource"].pop("period")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bundle))
    unmarked = tmp_path / "unmarked.json"
    request = bundle["entry"][index["ServiceRequest"]]["resource"]
    request.pop("category")
    unmarked.write_text(json.dumps(request))
    result = CliRunner().invoke(app, ["validate", str(bad), str(unmarked)])
    assert result.exit_code == 1
    assert f"[Bundle.entry[{index['Patient']}].resource.generalPractitioner]" in result.output
    assert f"[Bundle.entry[{index['Coverage']}].resource.period]" in result.output
    assert "[ServiceRequest.category]" in result.output


def test_outbox_list_and_retry_on_an_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    listed = CliRunner().invoke(app, ["outbox", "list"])
    assert listed.exit_code == 0, listed.output
    assert "no failed deliveries" in listed.output
    retried = CliRunner().invoke(app, ["outbox", "retry"])
    assert retried.exit_code == 0 and "0 delivery(ies) queued again" in retried.output


def test_outbox_list_refuses_an_unknown_state_and_names_the_valid_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    refused = CliRunner().invoke(app, ["outbox", "list", "--state", "faild"])
    assert refused.exit_code == 2
    said = " ".join(refused.output.replace("│", " ").split())  # typer draws a wrapped box
    assert "'faild' is not one of 'pending', 'delivered', 'failed', 'all'" in said, said
    assert not (tmp_path / "cli.db").exists()  # refused before anything was opened
    listed = CliRunner().invoke(app, ["outbox", "list", "--state", "all"])
    assert listed.exit_code == 0, listed.output
    assert "no all deliveries" not in listed.output and "deliveries" in listed.output


def test_clients_add_refuses_a_name_already_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    assert runner.invoke(app, ["clients", "keygen", str(tmp_path / "ehr")]).exit_code == 0
    jwks = str(tmp_path / "ehr.jwks.json")
    added = runner.invoke(
        app, ["clients", "add", "my-ehr", "--jwks", jwks, "--scope", "system/*.rs"]
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(
        app, ["clients", "add", "my-ehr", "--jwks", jwks, "--scope", "system/*.rs"]
    )
    assert again.exit_code == 2
    assert "a client named 'my-ehr' is already registered" in again.output
    listed = runner.invoke(app, ["clients", "list"])
    assert listed.output.count("my-ehr") == 1, listed.output
    kept = (tmp_path / "ehr.pem").read_bytes()
    regenerated = runner.invoke(app, ["clients", "keygen", str(tmp_path / "ehr")])
    assert regenerated.exit_code == 2
    assert f"error: {tmp_path / 'ehr.pem'} exists; choose another prefix" in regenerated.output
    assert (tmp_path / "ehr.pem").read_bytes() == kept  # the private key is never overwritten


def test_rotate_signing_key_gives_the_next_start_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from fhir_adapter.bootstrap import build_container
    from fhir_adapter.config import Settings

    async def started_kid() -> str:
        container = await build_container(Settings())
        await container.aclose()
        assert container.issuer is not None
        assert [k["kid"] for k in container.issuer.jwks()["keys"]] == [container.issuer.kid]
        return container.issuer.kid

    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    before = asyncio.run(started_kid())
    result = CliRunner().invoke(app, ["rotate-signing-key"])
    assert result.exit_code == 0, result.output
    kid = result.output.split()[3].rstrip(":")
    assert kid != before
    assert asyncio.run(started_kid()) == kid


def test_deadlines_counts_requests_past_the_warning_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    counted = CliRunner().invoke(app, ["deadlines"])
    assert counted.exit_code == 0, counted.output  # nothing pending: nothing to alert on
    assert "0 undecided request(s) past the warning share" in counted.output
