"""The second-opinion use cases on the store: intake, evaluation, the one decision recorder,
reviewer decisions, the deadline sweep, and consultation reports."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.codes import NUCC
from fhir_adapter.demo.walkthrough import consultation_report
from fhir_adapter.errors import ConflictError, NotFoundError, UnprocessableEntityError
from fhir_adapter.policy.decision import Outcome
from fhir_adapter.workflow.review import ReviewerDecision
from tests.factories import example_request
from tests.usecases.conftest import PLAN, UseCases, business_status


def reviewer_says(outcome: Outcome, *providers: str) -> ReviewerDecision:
    return ReviewerDecision(
        outcome,
        providers,
        "Reviewed the records.",
        "Practitioner/reviewer",
        "1234567893",
        {"coding": [{"system": NUCC, "code": "207RC0000X"}]},
    )


async def test_intake_receives_the_request_and_starts_its_clock(usecases: UseCases) -> None:
    keys = await usecases.submit("in-network-pcp-care")
    task = await usecases.read(keys["Task"])
    assert task["owner"] == {"reference": PLAN}
    period = task["restriction"]["period"]
    assert period["start"] == "2026-11-25T18:00:00.000Z"
    assert period["end"] == "2026-12-02T18:00:00.000Z"  # 5 business days, Thanksgiving closed
    async with usecases.store.transaction(write=False) as tx:
        job = await tx.jobs.get(keys["Task"].split("/")[1])
    assert job is not None and job.state == "done"  # decided at once after the commit
    again = await usecases.submit("in-network-pcp-care")
    assert again["Task"] == keys["Task"] and again["ServiceRequest"] == keys["ServiceRequest"]


async def test_intake_refuses_a_request_without_what_the_decision_needs(
    usecases: UseCases,
) -> None:
    bundle_keys = await usecases.submit("in-network-pcp-care", "-first")
    bundle = example_request("in-network-pcp-care", "-bad")
    request = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    del request["reasonCode"]
    with pytest.raises(UnprocessableEntityError):
        await usecases.bundles.process(bundle)
    assert usecases.recorder.recorded == [
        (bundle_keys["Task"].split("/")[1], "approved-in-network")
    ]


@pytest.mark.parametrize(
    ("example", "status", "outcome"),
    [
        ("in-network-pcp-care", "accepted", "approved-in-network"),
        ("out-of-network", "accepted", "approved-out-of-network"),
        ("review", "on-hold", "pending-review"),
        ("denied", "rejected", "denied"),  # administrative: the coverage ended
    ],
)
async def test_evaluation_outcomes(
    usecases: UseCases, example: str, status: str, outcome: str
) -> None:
    keys = await usecases.submit(example)
    task = await usecases.read(keys["Task"])
    assert (task["status"], business_status(task)) == (status, outcome)
    claim_response = await usecases.decision(keys["Task"])
    assert claim_response is not None
    assert claim_response["request"]["reference"].startswith("Claim/")
    assert usecases.recorder.recorded == [(task["id"], outcome)]
    if outcome == "denied":
        assert claim_response["outcome"] == "complete"
        assert "coverage" in claim_response["disposition"].lower()


async def test_evaluating_a_decided_request_again_changes_nothing(usecases: UseCases) -> None:
    keys = await usecases.submit("in-network-pcp-care")
    before = await usecases.read(keys["Task"])
    assert await usecases.workflow.evaluate(before["id"]) is None
    assert (await usecases.read(keys["Task"]))["meta"] == before["meta"]
    assert len(usecases.recorder.recorded) == 1


async def test_a_reviewer_decision_goes_through_the_recorder(usecases: UseCases) -> None:
    keys = await usecases.submit("review")
    task_id = keys["Task"].split("/")[1]
    response = await usecases.workflow.decide_by_reviewer(
        task_id, reviewer_says(Outcome.APPROVED_IN_NETWORK, "PractitionerRole/garcia-role")
    )
    assert (
        response.key
        == (await usecases.read(keys["Task"]))["output"][0]["valueReference"]["reference"]
    )
    assert usecases.recorder.recorded == [
        (task_id, "pending-review"),
        (task_id, "approved-in-network"),
    ]
    task = await usecases.read(keys["Task"])
    assert (task["status"], business_status(task)) == ("accepted", "approved-in-network")
    async with usecases.store.transaction(write=False) as tx:
        job = await tx.jobs.get(task_id)
    assert job is not None and job.state == "done"


async def test_the_deadline_sweep_goes_through_the_recorder(usecases: UseCases) -> None:
    keys = await usecases.submit("review")
    task_id = keys["Task"].split("/")[1]
    assert await usecases.workflow.expire_overdue() == 0
    usecases.clock.advance(days=8)
    assert await usecases.workflow.expire_overdue() == 1
    assert usecases.recorder.recorded == [(task_id, "pending-review"), (task_id, "denied")]
    claim_response = await usecases.decision(keys["Task"])
    assert claim_response is not None
    adjudication = claim_response["item"][0]["adjudication"][0]["extension"][0]["extension"]
    reason = next(e for e in adjudication if e["url"] == "reasonCode")
    assert reason["valueCodeableConcept"]["coding"][0]["code"] == "deadline-expired"
    assert (await usecases.read(keys["Task"]))["status"] == "rejected"
    assert await usecases.workflow.expire_overdue() == 0  # once only


async def test_a_reviewer_cannot_decide_a_decided_request(usecases: UseCases) -> None:
    keys = await usecases.submit("in-network-pcp-care")
    task_id = keys["Task"].split("/")[1]
    before = await usecases.read(keys["Task"])
    with pytest.raises(ConflictError, match="only an undecided request can be decided") as error:
        await usecases.workflow.decide_by_reviewer(task_id, reviewer_says(Outcome.DENIED))
    assert error.value.status_code == 409
    assert (await usecases.read(keys["Task"]))["meta"] == before["meta"]
    assert len(usecases.recorder.recorded) == 1


async def test_a_reviewer_cannot_decide_an_unknown_task(usecases: UseCases) -> None:
    with pytest.raises(NotFoundError, match="not a second-opinion request") as error:
        await usecases.workflow.decide_by_reviewer("nobody", reviewer_says(Outcome.DENIED))
    assert error.value.status_code == 404
    assert usecases.recorder.recorded == []


def _report(keys: dict[str, str]) -> dict[str, Any]:
    return consultation_report(keys, "Agree with the recommended procedure.")


async def test_a_consultation_report_completes_an_approved_request(usecases: UseCases) -> None:
    keys = await usecases.submit("in-network-specialist-care")
    stored = await usecases.resources.create("DiagnosticReport", _report(keys))
    task = await usecases.read(keys["Task"])
    assert (task["status"], business_status(task)) == ("completed", "completed")
    assert task["output"][-1]["valueReference"]["reference"] == stored.resource.key
    query = usecases.resources.parse_query(
        "Communication", [("based-on", keys["ServiceRequest"]), ("_count", "50")]
    )
    page = await usecases.resources.search(query)
    recipients = {m.content["recipient"][0]["reference"].split("/")[0] for m in page.matches}
    assert recipients == {"PractitionerRole", "Patient"}


async def test_a_report_for_a_pended_request_is_refused(usecases: UseCases) -> None:
    keys = await usecases.submit("review")
    with pytest.raises(UnprocessableEntityError, match="accepted only for an approved request"):
        await usecases.resources.create("DiagnosticReport", _report(keys))
    assert (await usecases.read(keys["Task"]))["status"] == "on-hold"


async def test_cancelling_goes_through_the_same_lock(usecases: UseCases) -> None:
    keys = await usecases.submit("review")
    task_id = keys["Task"].split("/")[1]
    response = await usecases.workflow.cancel(task_id, reason="withdrawn by the member")
    assert response.resource_type == "ClaimResponse"
    assert (await usecases.read(keys["Task"]))["status"] == "cancelled"
    with pytest.raises(ConflictError, match="a finished request cannot be cancelled"):
        await usecases.workflow.cancel(task_id, reason="again")
    with pytest.raises(NotFoundError, match="not a second-opinion request"):
        await usecases.workflow.cancel("nobody", reason="none")
    with pytest.raises(ConflictError, match="only a pended request is updated"):
        await usecases.workflow.amend(task_id, note="too late")
    assert await usecases.workflow.evaluate(task_id) is None  # nothing left to decide


async def test_a_request_already_answered_is_not_pended_for_time(usecases: UseCases) -> None:
    keys = await usecases.submit("review")
    task_id = keys["Task"].split("/")[1]
    await usecases.workflow.pend_unanswered(task_id)  # its ClaimResponse exists: nothing to do
    assert usecases.recorder.recorded == [(task_id, "pending-review")]
