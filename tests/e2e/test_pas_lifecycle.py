"""Issue #12: the PAS request after `$submit`, over HTTP on both backends. `Claim/$inquire`
(pended, decided, not found, another organization's, the member's own, the IG's inquiry
example), updates (a pended request re-evaluated, a decided one refused, the IG's Homecare
update) and cancellation (Task, ClaimResponse, notices withdrawn, subscribers notified)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.bootstrap import Container
from fhir_adapter.codes import PAS_REVIEW_ACTION
from fhir_adapter.ports.store import RENDER
from fhir_adapter.workflow.pas_changes import (
    CERTIFICATION_TYPE,
    INFO_CHANGED,
    X12_CERTIFICATION_TYPE_SYSTEM,
)
from fhir_adapter.workflow.subscriptions import PAS_TOPIC
from tests.conftest import count_rows
from tests.e2e.test_operations import decide_params
from tests.e2e.test_subscriptions import hub, status_parameters, subscriber, subscription
from tests.e2e.test_workflow import flaky, flaky_client, flaky_container
from tests.factories import EXAMPLES, pas_inquiry
from tests.fakes import FrozenClock, SwitchableTransport
from tests.receiver import Receiver
from tests.tokens import ADMIN_SCOPE
from tests.worker import render_notices

__all__ = ["flaky", "flaky_client", "flaky_container", "hub", "subscriber"]  # fixtures

Hub = tuple[Container, httpx.AsyncClient]
IG = EXAMPLES / "pas" / "ig"
FREE_TEXT_REASON = [{"text": "The member would like another doctor to look at this"}]
PROVIDER = {
    "valueReference": {
        "reference": "http://directory.test/directory/fhir/PractitionerRole/patel-role"
    }
}
CODED_REASON = [
    {
        "coding": [
            {
                "system": "https://fhir-adapter.org/fhir/CodeSystem/second-opinion-reason",
                "code": "questioned-surgery",
            }
        ]
    }
]


def pas_request(*, pended: bool = False) -> dict[str, Any]:
    """The PAS example request; `pended`: its reason is free text, which a reviewer decides."""
    bundle: dict[str, Any] = json.loads(
        (EXAMPLES / "pas" / "claim-submit-request.json").read_text()
    )
    if pended:
        request_of(bundle)["reasonCode"] = copy.deepcopy(FREE_TEXT_REASON)
    return bundle


def request_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )


def claim_update(original: dict[str, Any], *, cancel: bool = False) -> dict[str, Any]:
    """A PAS Claim Update of `original` (spec-65..72): a new Claim naming the earlier one in
    related.claim, the earlier one carried along, the item flagged as changed."""
    bundle = copy.deepcopy(original)
    earlier = copy.deepcopy(bundle["entry"][0])
    earlier["fullUrl"] = "urn:uuid:3c0e3f1b-6d7a-4c55-9a1e-0f3b2d4c5e60"
    claim = bundle["entry"][0]["resource"]
    claim["identifier"] = [{"system": "urn:trnorg:1234567890", "value": "PAS-0001-U1"}]
    claim["related"] = [{"claim": {"reference": earlier["fullUrl"]}}]
    claim["item"][0]["extension"].append({"url": INFO_CHANGED, "valueCode": "changed"})
    if cancel:
        claim["extension"] = [
            {
                "url": CERTIFICATION_TYPE,
                "valueCodeableConcept": {
                    "coding": [{"system": X12_CERTIFICATION_TYPE_SYSTEM, "code": "3"}]
                },
            }
        ]
    bundle["entry"].append(earlier)
    return bundle


def review_action(claim_response: dict[str, Any]) -> tuple[str, str]:
    """(code, authorization number) of the first item's PAS reviewAction."""
    for adjudication in claim_response["item"][0]["adjudication"]:
        for extension in adjudication.get("extension") or []:
            if extension["url"] == PAS_REVIEW_ACTION:
                parts = {p["url"]: p for p in extension["extension"]}
                code = parts[
                    "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewActionCode"
                ]
                return (
                    code["valueCodeableConcept"]["coding"][0]["code"],
                    parts["number"]["valueString"],
                )
    raise AssertionError("no reviewAction")


def offered(claim_response: dict[str, Any]) -> list[str]:
    """The ids of the providers the decision lists (PAS authorizedProvider)."""
    return [
        part["valueReference"]["reference"].rsplit("/", 1)[1]
        for extension in claim_response["item"][0].get("extension", [])
        if extension["url"].endswith("extension-authorizedProvider")
        for part in extension["extension"]
        if part["url"] == "provider"
    ]


def pushed_responses(subscriber: Receiver) -> list[dict[str, Any]]:
    """The ClaimResponses the PAS subscription delivered, in order."""
    return [
        n["entry"][1]["resource"]["entry"][0]["resource"]
        for n in subscriber.notifications
        if status_parameters(n)["type"]["valueCode"] == "event-notification"
    ]


def returned(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    assert parameters["resourceType"] == "Parameters"
    return [p["resource"] for p in parameters["parameter"] if p["name"] == "return"]


def as_client(container: Container, client_id: str, scope: str = ADMIN_SCOPE, **kw: Any) -> str:
    assert container.issuer is not None
    return f"Bearer {container.issuer.mint(client_id, scope, **kw)}"


async def submit(api: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/Claim/$submit", json=bundle)
    assert response.status_code == 200, response.text
    claim_response: dict[str, Any] = response.json()["entry"][0]["resource"]
    return claim_response


async def inquire(
    api: httpx.AsyncClient, bundle: dict[str, Any], authorization: str | None = None
) -> dict[str, Any]:
    headers = {"authorization": authorization} if authorization else {}
    response = await api.post("/Claim/$inquire", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def task_id(claim_response: dict[str, Any]) -> str:
    return str(claim_response["identifier"][0]["value"])  # the trace number is the Task's id


# -- Claim/$inquire ------------------------------------------------------------------------------


async def test_a_pended_request_is_found_and_later_its_final_answer_with_the_same_numbers(
    hub: Hub, subscriber: Receiver
) -> None:
    container, api = hub
    assert (await api.post("/Subscription", json=subscription(topic=PAS_TOPIC))).status_code == 201
    request = pas_request(pended=True)
    first = await submit(api, request)
    assert review_action(first)[0] == "A4"  # the first answer: pended, within the budget

    [pended] = returned(await inquire(api, pas_inquiry(request)))
    response = pended["entry"][0]["resource"]
    assert response["resourceType"] == "ClaimResponse" and response["id"] == first["id"]
    assert review_action(response) == review_action(first)
    assert response["outcome"] == "partial"
    kinds = {e["resource"]["resourceType"] for e in pended["entry"][1:]}
    assert {"Patient", "Claim"} <= kinds  # what the ClaimResponse references, resolved inside

    decided = await api.post(
        f"/Task/{task_id(first)}/$decide",
        json=decide_params("approved-in-network", provider=PROVIDER),
    )
    assert decided.status_code == 200, decided.text

    [final] = returned(await inquire(api, pas_inquiry(request)))
    answer = final["entry"][0]["resource"]
    assert answer["id"] == first["id"] and answer["identifier"] == first["identifier"]
    assert review_action(answer) == ("NA", review_action(first)[1])  # same number
    assert answer["outcome"] == "complete"
    while await container.delivery.run_due(limit=100):
        pass
    pushed = pushed_responses(subscriber)
    # one event per change (pended, decided); sent later, each carries the response as it is now
    assert len(pushed) == 2 and review_action(pushed[-1])[0] == "NA"  # the subscription, too
    assert {r["id"] for r in pushed} == {first["id"]}


async def test_a_decided_request_is_found_by_member_alone_and_by_its_number(hub: Hub) -> None:
    _, api = hub
    request = pas_request()
    first = await submit(api, request)
    assert review_action(first)[0] == "NA"
    inquiry = pas_inquiry(request)
    [by_number] = returned(await inquire(api, inquiry))
    assert by_number["entry"][0]["resource"]["id"] == first["id"]
    assert by_number["identifier"] == inquiry["identifier"]  # the inquiry's trace, echoed
    inquiry["entry"][0]["resource"]["identifier"] = [{"system": "urn:other", "value": "unknown"}]
    [by_member] = returned(await inquire(api, inquiry))
    assert by_member["entry"][0]["resource"]["id"] == first["id"]


@pytest.mark.parametrize(
    ("period", "found"),
    [
        ({"start": "2026-11-01", "end": "2026-11-30"}, True),
        ({"start": "2026-11-25"}, True),
        ({"start": "2026-10-01", "end": "2026-10-31"}, False),
    ],
)
async def test_an_inquiry_by_dates_finds_the_requests_received_within_them(
    hub: Hub, period: dict[str, str], found: bool
) -> None:
    _, api = hub
    request = pas_request()
    await submit(api, request)  # received 2026-11-25 (the frozen clock)
    inquiry = pas_inquiry(request)
    inquiry["entry"][0]["resource"]["identifier"] = [{"system": "urn:other", "value": "x"}]
    inquiry["entry"][0]["resource"]["billablePeriod"] = period
    assert len(returned(await inquire(api, inquiry))) == (1 if found else 0)


async def test_no_match_is_a_pas_answer_saying_so(hub: Hub) -> None:
    _, api = hub
    await submit(api, pas_request())
    inquiry = pas_inquiry(pas_request())
    patient = next(
        e["resource"] for e in inquiry["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["identifier"][0]["value"] = "M-NOBODY"
    answer = await inquire(api, inquiry)
    assert returned(answer) == []
    [outcome] = [p["resource"] for p in answer["parameter"] if p["name"] == "outcome"]
    assert outcome["issue"][0]["code"] == "not-found"
    assert outcome["issue"][0]["severity"] == "information"


async def test_another_organizations_request_is_answered_as_if_it_did_not_exist(
    hub: Hub, engine: AsyncEngine
) -> None:
    container, api = hub
    request = pas_request(pended=True)
    await submit(api, request)  # submitted by "test-client"
    other = as_client(container, "other-organization")
    seen_by_other = await inquire(api, pas_inquiry(request), other)
    inquiry = pas_inquiry(request)
    next(e["resource"] for e in inquiry["entry"] if e["resource"]["resourceType"] == "Patient")[
        "identifier"
    ][0]["value"] = "M-NOBODY"
    nothing = await inquire(api, inquiry, other)
    assert returned(seen_by_other) == [] and seen_by_other == nothing

    before = await count_rows(engine)
    for bundle in (claim_update(request), claim_update(request, cancel=True)):
        refused = await api.post("/Claim/$submit", json=bundle, headers={"authorization": other})
        assert refused.status_code == 422, refused.text
        issue = refused.json()["issue"][0]
        assert issue["code"] == "not-found"
        assert issue["expression"] == ["Bundle.entry[0].resource.related[0].claim"]
    assert await count_rows(engine) == before


async def test_a_member_inquires_about_their_own_requests_only(hub: Hub) -> None:
    container, api = hub
    request = pas_request()
    first = await submit(api, request)
    task = (await api.get(f"/Task/{task_id(first)}")).json()
    patient_id = task["for"]["reference"].split("/")[1]
    own = as_client(container, "member-app", "patient/*.rs", patient=patient_id)
    [found] = returned(await inquire(api, pas_inquiry(request), own))
    assert found["entry"][0]["resource"]["id"] == first["id"]
    stranger = as_client(container, "member-app", "patient/*.rs", patient="someone-else")
    assert returned(await inquire(api, pas_inquiry(request), stranger)) == []


async def test_the_ig_inquiry_example_finds_the_ig_homecare_request(hub: Hub) -> None:
    _, api = hub
    homecare = json.loads((IG / "Bundle-HomecareAuthorizationBundleExample.json").read_text())
    first = await submit(api, homecare)
    inquiry = json.loads((IG / "Bundle-PASClaimInquiryBundleExample.json").read_text())
    [found] = returned(await inquire(api, inquiry))
    response = found["entry"][0]["resource"]
    assert response["id"] == first["id"]
    assert review_action(response)[0] == "A3"  # the IG's insurer is not this plan
    assert found["identifier"] == inquiry["identifier"]


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ("not a Bundle", "resourceType"),
        ("a batch", "Bundle.type"),
        ("no provider", "Bundle.entry[0].resource.provider"),
        ("no member", "Bundle.entry[0].resource.patient"),
    ],
)
async def test_an_inquiry_that_is_not_a_pas_inquiry_is_4xx_naming_the_element(
    hub: Hub, change: str, expression: str
) -> None:
    _, api = hub
    inquiry: Any = pas_inquiry(pas_request())
    if change == "not a Bundle":
        inquiry = {"resourceType": "Parameters"}
    elif change == "a batch":
        inquiry["type"] = "batch"
    elif change == "no provider":
        del inquiry["entry"][0]["resource"]["provider"]
    else:
        inquiry["entry"] = [
            e for e in inquiry["entry"] if e["resource"]["resourceType"] != "Patient"
        ]
    response = await api.post("/Claim/$inquire", json=inquiry)
    assert response.status_code in (400, 422), response.text
    assert expression in response.json()["issue"][0]["expression"]


# -- updates -------------------------------------------------------------------------------------


async def test_an_update_of_a_pended_request_is_evaluated_again_on_the_same_task(hub: Hub) -> None:
    _, api = hub
    request = pas_request(pended=True)
    first = await submit(api, request)
    assert review_action(first)[0] == "A4"
    update = claim_update(request)
    request_of(update)["reasonCode"] = copy.deepcopy(CODED_REASON)  # the reason, now coded
    answer = await submit(api, update)
    assert answer["id"] == first["id"]
    assert review_action(answer) == ("NA", review_action(first)[1])  # decided, same number
    assert offered(answer) == ["garcia-role", "patel-role"]
    task = (await api.get(f"/Task/{task_id(first)}")).json()
    assert task["status"] == "accepted"
    assert any("Updated by PAS Claim PAS-0001-U1" in n["text"] for n in task["note"])
    history = (await api.get(f"/Task/{task['id']}/_history")).json()
    assert history["total"] >= 3  # received, pended, updated, decided: one Task, one history
    tasks = (await api.get("/Task", params={"focus": task["focus"]["reference"]})).json()
    assert tasks["total"] == 1
    stored = (await api.get(task["focus"]["reference"])).json()
    assert stored["reasonCode"] == CODED_REASON


async def test_an_update_naming_the_members_chosen_provider_is_decided_with_it(
    hub: Hub,
) -> None:
    """A new selected provider (ServiceRequest.performer, sent along as the IG's spec-67 asks)
    and a coded reason: the pended request is decided for that provider alone."""
    _, api = hub
    request = pas_request(pended=True)
    first = await submit(api, request)
    update = claim_update(request)
    chosen = json.loads((EXAMPLES / "requests" / "member-selected-provider.json").read_text())
    role_url = "urn:uuid:9bee6c27-01d0-4d06-934e-26cd162fab2c"
    role = next(e for e in chosen["entry"] if e["fullUrl"] == role_url)
    practitioner_url = role["resource"]["practitioner"]["reference"]
    practitioner = next(e for e in chosen["entry"] if e["fullUrl"] == practitioner_url)
    update["entry"] += [
        {"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in (role, practitioner)
    ]
    request_of(update)["reasonCode"] = copy.deepcopy(CODED_REASON)
    request_of(update)["performer"] = [{"reference": role_url}]
    answer = await submit(api, update)
    assert answer["id"] == first["id"] and review_action(answer)[0] == "NA"
    assert offered(answer) == ["garcia-role"]  # without the choice: garcia-role, patel-role
    task = (await api.get(f"/Task/{task_id(first)}")).json()
    stored = (await api.get(task["focus"]["reference"])).json()
    assert stored["performer"][0]["reference"].startswith("PractitionerRole/")


async def test_an_update_of_a_decided_request_asks_for_a_new_request(
    hub: Hub, engine: AsyncEngine
) -> None:
    _, api = hub
    request = pas_request()
    assert review_action(await submit(api, request))[0] == "NA"
    before = await count_rows(engine)
    response = await api.post("/Claim/$submit", json=claim_update(request))
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert "new request" in issue["diagnostics"]
    assert await count_rows(engine) == before


async def test_the_ig_homecare_update_of_a_denied_request_asks_for_a_new_request(
    hub: Hub, engine: AsyncEngine
) -> None:
    """PAS specification, Additional Notes 2: a denied request is not updated."""
    _, api = hub
    original = json.loads((IG / "Bundle-HomecareAuthorizationBundleExample.json").read_text())
    assert review_action(await submit(api, original))[0] == "A3"
    update = json.loads((IG / "Bundle-HomecareAuthorizationUpdateBundleExample.json").read_text())
    before = await count_rows(engine)
    response = await api.post("/Claim/$submit", json=update)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule" and "new request" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[0].resource.related[0].claim"]
    assert await count_rows(engine) == before


@pytest.mark.parametrize("update", ["ours", "the IG's Homecare update"])
async def test_an_update_naming_no_known_claim_is_422_and_changes_nothing(
    hub: Hub, engine: AsyncEngine, update: str
) -> None:
    _, api = hub
    bundle = (
        claim_update(pas_request())
        if update == "ours"
        else json.loads((IG / "Bundle-HomecareAuthorizationUpdateBundleExample.json").read_text())
    )
    before = await count_rows(engine)
    response = await api.post("/Claim/$submit", json=bundle)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.related[0].claim"
    ]
    assert await count_rows(engine) == before


# -- cancellation --------------------------------------------------------------------------------


async def test_cancelling_withdraws_unsent_notices_and_tells_subscribers(
    hub: Hub, subscriber: Receiver
) -> None:
    container, api = hub
    assert (await api.post("/Subscription", json=subscription(topic=PAS_TOPIC))).status_code == 201
    request = pas_request()
    first = await submit(api, request)  # approved: its notices wait in the outbox
    await render_notices(container)
    notices = (
        await api.get("/Communication", params={"status": "in-progress", "_count": "50"})
    ).json()
    waiting = [e["resource"]["id"] for e in notices.get("entry", [])]
    assert waiting, "an approval writes notices to deliver"

    answer = await submit(api, claim_update(request, cancel=True))
    assert answer["id"] == first["id"]
    assert review_action(answer) == ("C", review_action(first)[1])
    assert answer["disposition"].startswith("Cancelled")
    task = (await api.get(f"/Task/{task_id(first)}")).json()
    assert task["status"] == "cancelled"
    assert task["businessStatus"]["coding"][0]["code"] == "cancelled"
    versions = (await api.get(f"/ClaimResponse/{first['id']}/_history")).json()
    actions = sorted(
        (int(e["resource"]["meta"]["versionId"]), review_action(e["resource"])[0])
        for e in versions["entry"]
    )
    assert actions[0][1] == "NA" and actions[-1][1] == "C"  # the decision stays in history
    for communication_id in waiting:
        notice = (await api.get(f"/Communication/{communication_id}")).json()
        assert notice["status"] == "not-done"
        assert "cancelled" in notice["statusReason"]["text"]
    outbox = await _outbox_states(container)
    assert {outbox[c] for c in waiting} == {"withdrawn"}

    while await container.delivery.run_due(limit=100):
        pass
    pushed = pushed_responses(subscriber)
    assert len(pushed) == 2 and review_action(pushed[-1])[0] == "C"  # decided, then cancelled
    for communication_id in waiting:  # the worker did not send them after all
        assert (await api.get(f"/Communication/{communication_id}")).json()["status"] == "not-done"

    [current] = returned(await inquire(api, pas_inquiry(request)))
    assert review_action(current["entry"][0]["resource"])[0] == "C"


async def test_cancelling_before_the_notices_are_rendered_withdraws_them_unrendered(
    hub: Hub,
) -> None:
    container, api = hub
    request = pas_request()
    first = await submit(api, request)  # approved: its notices drafted, their letters owed
    found = await api.get("/Communication", params={"status": "preparation", "_count": "50"})
    drafted = [e["resource"]["id"] for e in found.json().get("entry", [])]
    assert drafted, "an approval drafts notices to render"

    await submit(api, claim_update(request, cancel=True))
    outbox = await _outbox_states(container, renders=True)
    assert {outbox[c] for c in drafted} == {"withdrawn"}  # the render jobs
    assert await render_notices(container) == 0
    for communication_id in drafted:
        notice = (await api.get(f"/Communication/{communication_id}")).json()
        assert notice["status"] == "not-done" and "payload" not in notice
        assert "cancelled" in notice["statusReason"]["text"]
    assert not await _outbox_states(container)  # nor was any delivery ever owed
    assert task_id(first)


async def test_cancelling_a_pended_request_stops_it(hub: Hub) -> None:
    container, api = hub
    request = pas_request(pended=True)
    first = await submit(api, request)
    answer = await submit(api, claim_update(request, cancel=True))
    assert review_action(answer)[0] == "C"
    task = (await api.get(f"/Task/{task_id(first)}")).json()
    assert task["status"] == "cancelled"
    assert await container.workflow.evaluate(task["id"]) is None  # nothing left to decide


async def test_cancelling_a_finished_request_is_409_with_the_reason(
    hub: Hub, engine: AsyncEngine
) -> None:
    _, api = hub
    request = pas_request(pended=True)
    first = await submit(api, request)
    await submit(api, claim_update(request, cancel=True))
    before = await count_rows(engine)
    again = await api.post("/Claim/$submit", json=claim_update(request, cancel=True))
    assert again.status_code == 409, again.text
    assert "cancelled" in again.json()["issue"][0]["diagnostics"]
    assert await count_rows(engine) == before
    assert first["id"]


async def _outbox_states(container: Container, *, renders: bool = False) -> dict[str, str]:
    """Each Communication's delivery state (with `renders`: its render job's)."""
    async with container.store.transaction(write=False) as tx:
        items = await tx.outbox.items(limit=500)
    return {i.communication_id: i.state for i in items if (i.destination == RENDER) == renders}


# -- pended in PAS terms: the first answer in time, the final one later --------------------------


@pytest.fixture
def slow_directory(
    flaky_container: Container, flaky_client: httpx.AsyncClient, flaky: SwitchableTransport
) -> tuple[Container, httpx.AsyncClient, SwitchableTransport]:
    """test_workflow's directory that can be down or slow, with a short PAS answer time."""
    workflow = flaky_container.workflow
    workflow.config = dataclasses.replace(workflow.config, answer_within_seconds=0.2)
    return flaky_container, flaky_client, flaky


@pytest.mark.parametrize("directory_state", ["down", "slow"])
async def test_a_request_the_directory_cannot_settle_in_time_is_answered_pended_a4(
    slow_directory: tuple[Container, httpx.AsyncClient, SwitchableTransport],
    clock: FrozenClock,
    directory_state: str,
) -> None:
    """PAS spec-7/8: the first answer within the time budget is pended A4 (never a 503); the
    worker decides later and $inquire gives the final answer under the same identifiers."""
    container, api, flaky = slow_directory
    if directory_state == "down":
        flaky.down = True
    else:
        flaky.delay = 2.0
    request = pas_request()
    first = await submit(api, request)
    assert review_action(first)[0] == "A4" and first["outcome"] == "partial"
    flaky.down, flaky.delay = False, 0.0
    clock.advance(minutes=1)  # past the retry time
    assert await container.workflow.run_due_jobs() == 1
    [final] = returned(await inquire(api, pas_inquiry(request)))
    answer = final["entry"][0]["resource"]
    assert answer["id"] == first["id"] and answer["identifier"] == first["identifier"]
    assert review_action(answer) == ("NA", review_action(first)[1])
