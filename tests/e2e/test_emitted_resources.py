"""Issue #13 (validate each resource once): what the adapter writes itself (Claim, ClaimResponse,
Provenance, the Task's moves, Communications ...) is valid by construction and not
re-parsed through fhir.resources on every request. This suite is where it is checked instead:
every resource the store is given in the main flows goes through the same validation as what
clients send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_adapter.bootstrap import Container
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.store.resources import SqlResources
from tests.e2e import test_pas_lifecycle, test_reports, test_review
from tests.e2e.test_reports import api, ehr_transport, loop_container, receiver
from tests.e2e.test_review import ws
from tests.e2e.test_subscriptions import hub, subscriber
from tests.receiver import Receiver

__all__ = ["api", "ehr_transport", "hub", "loop_container", "receiver", "subscriber", "ws"]

REQUESTS = Path(__file__).parents[2] / "examples" / "requests"


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every resource content handed to the store (created or a new version), in order."""
    contents: list[dict[str, Any]] = []
    insert, replace = SqlResources.insert, SqlResources.replace

    async def recorded_insert(self: SqlResources, content: dict[str, Any], **kw: Any) -> Any:
        contents.append(content)
        return await insert(self, content, **kw)

    async def recorded_replace(self: SqlResources, current: Any, content: Any, **kw: Any) -> Any:
        contents.append(content)
        return await replace(self, current, content, **kw)

    monkeypatch.setattr(SqlResources, "insert", recorded_insert)
    monkeypatch.setattr(SqlResources, "replace", recorded_replace)
    yield contents


def assert_all_valid(contents: list[dict[str, Any]], emitted: set[str]) -> None:
    """Each content passes fhir.resources and the adapter's own checks; `emitted` types were
    among them (the flow really wrote what it should)."""
    for content in contents:
        validate_resource(content, path=f"{content['resourceType']}/{content['id']}")
    assert emitted <= {c["resourceType"] for c in contents}


async def test_every_example_submission_writes_only_valid_resources(
    client: httpx.AsyncClient, written: list[dict[str, Any]]
) -> None:
    for path in sorted(REQUESTS.glob("*.json")):
        answer = await client.post("", json=json.loads(path.read_text()))
        assert answer.status_code == 200, (path.name, answer.text)
    assert_all_valid(written, {"Task", "Claim", "ClaimResponse", "Provenance", "Communication"})


async def test_a_reviewer_decision_writes_only_valid_resources(
    ws: test_review.Workspace, written: list[dict[str, Any]]
) -> None:
    await test_review.test_a_reviewer_denies_through_the_decide_recorder(ws)
    assert_all_valid(written, {"Task", "ClaimResponse", "Provenance", "Communication"})


async def test_a_report_completion_writes_only_valid_resources(
    api: httpx.AsyncClient,
    loop_container: Container,
    receiver: Receiver,
    written: list[dict[str, Any]],
) -> None:
    await test_reports.test_report_completes_the_task_and_reaches_pcp_and_member(
        api, loop_container, receiver
    )
    assert_all_valid(written, {"DiagnosticReport", "Task", "Communication"})


async def test_pas_submit_and_inquire_write_only_valid_resources(
    hub: test_pas_lifecycle.Hub, written: list[dict[str, Any]]
) -> None:
    await test_pas_lifecycle.test_a_decided_request_is_found_by_member_alone_and_by_its_number(hub)
    assert_all_valid(written, {"Claim", "ClaimResponse", "Provenance"})


async def test_an_administrative_pas_decision_writes_and_answers_only_valid_resources(
    hub: test_pas_lifecycle.Hub, written: list[dict[str, Any]]
) -> None:
    """The IG's own request (its insurer is not this plan): the ClaimResponse and the kept
    Bundle (a DocumentReference) are built, not validated, when the adapter answers."""
    _, api = hub
    request = json.loads(
        (test_pas_lifecycle.IG / "Bundle-HomecareAuthorizationBundleExample.json").read_text()
    )
    answer = await api.post("/Claim/$submit", json=request)
    assert answer.status_code == 200, answer.text
    validate_resource(answer.json(), path="Bundle")
    assert_all_valid(written, {"ClaimResponse", "DocumentReference"})
