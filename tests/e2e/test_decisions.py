"""Decisions a plan can stand behind (issue #10), over HTTP against a real directory on loopback:
the plan named in each of its four forms, Bundles resolved by R4's rules (PAS IG-style requests
included), the requester rule as HSC 1383.15 words it, reviewers instead of machine denials, a
directory of thousands of roles, and the early warning before a deadline."""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api import handlers
from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container, demo_directory_file
from fhir_adapter.codes import (
    NETWORK_REFERENCE_EXTENSION,
    NEW_PATIENTS_EXTENSION,
    NPI,
    NUCC,
    PAS_AUTHORIZED_PROVIDER,
    PAS_REVIEW_ACTION,
    PAS_REVIEWER,
    RULE_TRAIL_EXTENSION,
    STATUS_SYSTEM,
)
from fhir_adapter.config import Settings
from fhir_adapter.demo.directory import DirectoryData, directory_router, load_directory
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.policy.ranking import distance_km
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.workflow.deadlines import DEADLINE_WARNING_EXTENSION
from tests.conftest import BASE_URL, count_rows
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.loopback import closed_port_url, serve_on_loopback
from tests.tokens import bearer

EXAMPLES = Path(__file__).parents[2] / "examples"
NETWORK = "Organization/medi-cal-network"
PLAN_ID = {"system": "https://demo-plan.example.org/payer-id", "value": "DEMO-MEDI-CAL"}
FAMILY = "207Q00000X"
LARGE_ROLES = 2400
GROUPS = 40
PAGE_CAP = 10  # the large directory gives at most 10 entries a page, whatever _count asks
MEMBER_AT = (34.0522, -118.2437)  # downtown Los Angeles


# -- the directories, on a real loopback port ------------------------------------------------------


def large_directory() -> DirectoryData:
    """The demo directory plus 2,400 in-network family-medicine roles in 40 medical groups, each
    group with a located office; some accept new patients, some speak Spanish."""
    data = copy.deepcopy(load_directory(demo_directory_file()))
    for g in range(GROUPS):
        data.setdefault("Organization", {})[f"group-{g}"] = {
            "resourceType": "Organization",
            "id": f"group-{g}",
            "active": True,
            "name": f"Medical Group {g}",
            "telecom": [{"system": "phone", "value": f"213-555-{g:04d}"}],
            "address": [{"line": [f"{g} Group Way"], "city": "Los Angeles", "state": "CA"}],
        }
        data.setdefault("Location", {})[f"office-{g}"] = {
            "resourceType": "Location",
            "id": f"office-{g}",
            "name": f"Office {g}",
            "address": {
                "line": [f"{100 + g} Main Street"],
                "city": "Los Angeles",
                "state": "CA",
                "postalCode": f"900{g:02d}",
            },
            "position": {"latitude": MEMBER_AT[0] + g * 0.01, "longitude": MEMBER_AT[1]},
        }
    for i in range(LARGE_ROLES):
        data["Practitioner"][f"fm-{i}"] = {
            "resourceType": "Practitioner",
            "id": f"fm-{i}",
            "identifier": [{"system": NPI, "value": f"9{i:09d}"}],
            "name": [{"family": f"Doctor{i}", "prefix": ["Dr."]}],
            **(
                {"communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}]}
                if i % 7 == 0
                else {}
            ),
        }
        g = i % GROUPS
        data["PractitionerRole"][f"fm-{i}-role"] = {
            "resourceType": "PractitionerRole",
            "id": f"fm-{i}-role",
            "active": True,
            "practitioner": {"reference": f"Practitioner/fm-{i}"},
            "organization": {"reference": f"Organization/group-{g}"},
            "location": [{"reference": f"Location/office-{(g + i) % GROUPS}"}],
            "specialty": [
                {"coding": [{"system": NUCC, "code": FAMILY, "display": "Family Medicine"}]}
            ],
            "telecom": [{"system": "phone", "value": f"310-555-{i:04d}"}],
            "extension": [
                {"url": NETWORK_REFERENCE_EXTENSION, "valueReference": {"reference": NETWORK}},
                {
                    "url": NEW_PATIENTS_EXTENSION,
                    "extension": [{"url": "acceptingPatients", "valueBoolean": i % 3 != 0}],
                },
            ],
        }
    return data


ROLE_SEARCHES: Counter[str] = Counter()  # PractitionerRole searches served, by directory


def directories_app() -> FastAPI:
    app = FastAPI()
    handlers.install(app)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        if request.url.path.endswith("/PractitionerRole"):
            ROLE_SEARCHES[request.url.path.split("/")[1]] += 1
        return await call_next(request)

    demo = load_directory(demo_directory_file())
    app.include_router(directory_router(demo), prefix="/directory/fhir")
    large = directory_router(large_directory(), max_page_size=PAGE_CAP)
    app.include_router(large, prefix="/large/fhir")
    return app


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    with serve_on_loopback(directories_app()) as root:
        yield root


async def adapter(
    settings: Settings,
    engine: AsyncEngine,
    clock: FrozenClock,
    directory_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """The adapter, its directory at `directory_url` (FHIR_ADAPTER_DIRECTORY_URL), reached over
    real HTTP; the adapter's own API answers in process."""
    configured = settings.model_copy(update={"directory_url": directory_url})
    async with httpx.AsyncClient(timeout=5) as http:
        directory = DirectoryClient(
            http, directory_url, network=NETWORK, backoff_seconds=0.001, cache_seconds=0
        )
        store = SqlResourceStore(engine, base_url=configured.fhir_base_url)
        container = await build_container(configured, store=store, directory=directory, clock=clock)
        app = create_app(container=container)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            headers={"content-type": "application/fhir+json", **bearer(container)},
        ) as client:
            yield client, container
        await container.audit.close()


@pytest.fixture(params=["directory-up", "directory-down"])
def directory_is_up(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "directory-up")


@pytest.fixture
def directory_url(directory_is_up: bool, loopback: str) -> str:
    """The configured directory: the demo one on loopback, or a port nothing listens on."""
    origin = loopback if directory_is_up else closed_port_url()
    return f"{origin}/directory/fhir"


@pytest.fixture
async def live(
    settings: Settings, engine: AsyncEngine, clock: FrozenClock, directory_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    async for pair in adapter(settings, engine, clock, directory_url):
        yield pair


@pytest.fixture
async def up(
    settings: Settings, engine: AsyncEngine, clock: FrozenClock, loopback: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    async for pair in adapter(settings, engine, clock, f"{loopback}/directory/fhir"):
        yield pair


# -- helpers -------------------------------------------------------------------------------------


def load(path: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / path).read_text())


def resource_of(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    )


def full_url_of(bundle: dict[str, Any], resource_type: str) -> str:
    return next(
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    )


async def submit(client: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, Any]:
    """POST a transaction; the Task it created, as decided."""
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    location = next(
        e["response"]["location"]
        for e in response.json()["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    return dict((await client.get(location.split("/_history")[0])).json())


async def decision_of(client: httpx.AsyncClient, task: dict[str, Any]) -> dict[str, Any]:
    return dict((await client.get(task["output"][-1]["valueReference"]["reference"])).json())


def business_status(task: dict[str, Any]) -> str:
    return str(
        next(c["code"] for c in task["businessStatus"]["coding"] if c["system"] == STATUS_SYSTEM)
    )


def review_action(claim_response: dict[str, Any]) -> str:
    ext = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )
    return str(ext["extension"][0]["valueCodeableConcept"]["coding"][0]["code"])


def offered(claim_response: dict[str, Any]) -> list[str]:
    return [
        e["extension"][0]["valueReference"]["reference"]
        for e in claim_response["item"][0].get("extension") or []
        if e["url"] == PAS_AUTHORIZED_PROVIDER
    ]


def trail(claim_response: dict[str, Any]) -> list[tuple[str, str]]:
    steps = []
    for ext in claim_response.get("extension") or []:
        if ext["url"] == RULE_TRAIL_EXTENSION:
            parts = {p["url"]: p.get("valueString") or p.get("valueCode") for p in ext["extension"]}
            steps.append((str(parts.get("rule")), str(parts.get("result"))))
    return steps


def with_payor(bundle: dict[str, Any], payor: dict[str, Any]) -> dict[str, Any]:
    resource_of(bundle, "Coverage")["payor"] = [payor]
    return bundle


# -- 1. the plan, named as the EHR names it --------------------------------------------------------


@pytest.mark.parametrize("form", ["local", "directory", "logical", "copy"])
async def test_the_plan_is_recognised_in_each_form_and_a_down_directory_only_pends(
    live: tuple[httpx.AsyncClient, Container], directory_url: str, directory_is_up: bool, form: str
) -> None:
    client, _ = live
    bundle = example_request("in-network-specialist-care", f"-plan-{form}")
    if form == "local":
        payor: dict[str, Any] = {"reference": "Organization/demo-plan"}
    elif form == "directory":
        payor = {"reference": f"{directory_url}/Organization/demo-plan"}
    elif form == "logical":
        payor = {"identifier": PLAN_ID}
    else:  # the EHR's own copy of the plan Organization, sent along
        copy_url = "urn:uuid:5d1e5f43-2f0b-4b43-9b1e-7b3f0c9b7a11"
        bundle["entry"].insert(
            0,
            {
                "fullUrl": copy_url,
                "resource": {
                    "resourceType": "Organization",
                    "name": "Medi-Cal plan (EHR copy)",
                    "identifier": [PLAN_ID],
                },
                "request": {"method": "POST", "url": "Organization"},
            },
        )
        payor = {"reference": copy_url}
    task = await submit(client, with_payor(bundle, payor))
    response = await decision_of(client, task)
    if directory_is_up:
        assert business_status(task) == "approved-in-network"
        assert review_action(response) == "NA"
    else:  # never denied for our outage: the coverage passed, the network check waits
        assert business_status(task) == "pending-directory"
        assert review_action(response) == "A4"
        assert ("coverage_is_with_the_plan", "passed") in trail(response)


async def test_another_directory_organization_is_asked_for_and_denied_with_its_reason(
    live: tuple[httpx.AsyncClient, Container], directory_url: str, directory_is_up: bool
) -> None:
    """A payor the directory lists, but not the plan: denied as not-plan-member when the directory
    says so, pended (never denied) when it cannot be asked."""
    client, _ = live
    bundle = example_request("in-network-specialist-care", "-other-payor")
    payor = {"reference": f"{directory_url}/Organization/coast-ipa"}
    task = await submit(client, with_payor(bundle, payor))
    response = await decision_of(client, task)
    if directory_is_up:
        assert business_status(task) == "denied"
        assert "not coverage with this plan" in response["disposition"]
    else:
        assert business_status(task) == "pending-directory"


async def test_a_payor_that_is_not_the_plan_stays_a_denial(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    bundle = example_request("in-network-specialist-care", "-not-plan")
    other = {"system": "https://other-plan.example.org/payer-id", "value": "OTHER"}
    task = await submit(client, with_payor(bundle, {"identifier": other}))
    response = await decision_of(client, task)
    assert business_status(task) == "denied"
    assert review_action(response) == "A3"
    assert trail(response)[-1] == ("coverage_is_with_the_plan", "denied")


# -- 2. Bundles resolved by R4's rules -------------------------------------------------------------


def as_restful(bundle: dict[str, Any], base: str) -> dict[str, Any]:
    """The same transaction written as many EHRs write it: absolute RESTful fullUrls on the EHR's
    own base, and relative references between the entries."""
    bundle = copy.deepcopy(bundle)
    names = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/ehr-{i}"
        for i, e in enumerate(bundle["entry"])
    }

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: rewrite(v) for k, v in value.items()}
            if out.get("reference") in names:
                out["reference"] = names[out["reference"]]
            return out
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    for entry in bundle["entry"]:
        entry["resource"] = rewrite(entry["resource"])
        entry["fullUrl"] = f"{base}/{names[entry['fullUrl']]}"
    return bundle


async def test_a_transaction_with_absolute_full_urls_and_relative_references_is_decided(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    bundle = as_restful(
        example_request("in-network-specialist-care", "-restful"), "https://ehr.example.org/fhir"
    )
    task = await submit(client, bundle)
    assert business_status(task) == "approved-in-network"
    request = (await client.get(task["focus"]["reference"])).json()
    # The references were resolved inside the Bundle and now name what this server stored.
    assert request["subject"]["reference"].startswith("Patient/")
    assert (await client.get(request["subject"]["reference"])).status_code == 200


async def test_the_pas_ig_style_request_is_accepted_and_decided(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    request = load("pas/ig-style-request.json")
    assert request["entry"][0]["fullUrl"].startswith("https://example.org/fhir/Claim/")
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 200, response.text
    claim_response = response.json()["entry"][0]["resource"]
    assert claim_response["resourceType"] == "ClaimResponse"
    assert review_action(claim_response) == "NA"
    assert claim_response["outcome"] == "complete"
    assert offered(claim_response)  # in-network providers the member may see


@pytest.mark.parametrize("case", ["duplicate-full-url", "unresolvable-urn"])
async def test_an_ambiguous_or_unresolvable_pas_bundle_is_422_naming_entry_and_element(
    up: tuple[httpx.AsyncClient, Container], engine: AsyncEngine, case: str
) -> None:
    client, _ = up
    request = load("pas/ig-style-request.json")
    before = await count_rows(engine)
    if case == "duplicate-full-url":
        twin = copy.deepcopy(request["entry"][9])  # a second ServiceRequest, same fullUrl
        request["entry"].append(twin)
        expression = "Bundle.entry[0].resource.item[0].extension[0].valueReference.reference"
    else:
        request["entry"][0]["resource"]["patient"] = {"reference": "urn:uuid:0000-none"}
        expression = "Bundle.entry[0].resource.patient.reference"
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert expression in [x for i in issues for x in i.get("expression", [])]
    assert await count_rows(engine) == before


# -- 3./4. who may ask, and who decides what a machine must not ------------------------------------


def with_requester(
    bundle: dict[str, Any], practitioner_npi: str, specialty: str
) -> tuple[dict[str, Any], str]:
    """The request asked for by another professional (not the PCP, not the initial provider)."""
    practitioner_url = "urn:uuid:7c0f6a1e-1d3b-4c8e-9a55-3f2b1e0d9c01"
    role_url = "urn:uuid:7c0f6a1e-1d3b-4c8e-9a55-3f2b1e0d9c02"
    bundle["entry"][0:0] = [
        {
            "fullUrl": practitioner_url,
            "resource": {
                "resourceType": "Practitioner",
                "identifier": [{"system": NPI, "value": practitioner_npi}],
            },
            "request": {"method": "POST", "url": "Practitioner"},
        },
        {
            "fullUrl": role_url,
            "resource": {
                "resourceType": "PractitionerRole",
                "practitioner": {"reference": practitioner_url},
                "specialty": [{"coding": [{"system": NUCC, "code": specialty}]}],
            },
            "request": {"method": "POST", "url": "PractitionerRole"},
        },
    ]
    resource_of(bundle, "ServiceRequest")["requester"] = {"reference": role_url}
    resource_of(bundle, "Task")["requester"] = {"reference": role_url}
    return bundle, role_url


def directory_npi(name: str) -> str:
    practitioner = load_directory(demo_directory_file())["Practitioner"][name]
    return str(next(i["value"] for i in practitioner["identifier"] if i["system"] == NPI))


@pytest.mark.parametrize("evidence", ["care-team", "condition-asserter"])
async def test_a_treating_specialist_in_the_network_may_ask(
    up: tuple[httpx.AsyncClient, Container], evidence: str
) -> None:
    client, _ = up
    bundle = example_request("in-network-specialist-care", f"-treating-{evidence}")
    bundle, role_url = with_requester(bundle, directory_npi("kim"), "207RC0000X")
    patient_url = full_url_of(bundle, "Patient")
    if evidence == "care-team":
        bundle["entry"].append(
            {
                "fullUrl": "urn:uuid:7c0f6a1e-1d3b-4c8e-9a55-3f2b1e0d9c03",
                "resource": {
                    "resourceType": "CareTeam",
                    "status": "active",
                    "subject": {"reference": patient_url},
                    "participant": [{"member": {"reference": role_url}}],
                },
                "request": {"method": "POST", "url": "CareTeam"},
            }
        )
    else:
        resource_of(bundle, "Condition")["asserter"] = {"reference": role_url}
    task = await submit(client, bundle)
    response = await decision_of(client, task)
    assert business_status(task) == "approved-in-network", response.get("disposition")
    assert ("requester_is_member_or_treating_professional", "passed") in trail(response)


async def test_an_authorized_representative_may_ask(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    task = await submit(client, load("requests/representative.json"))
    response = await decision_of(client, task)
    assert business_status(task) == "approved-in-network", response.get("disposition")
    request = (await client.get(task["focus"]["reference"])).json()
    assert request["requester"]["reference"].startswith("RelatedPerson/")


async def test_an_unsettled_requester_is_pended_for_a_reviewer_who_is_named_on_the_decision(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    """Nothing shows this specialist treats the member: not a machine denial, but review (A4)
    with the rule trail; the reviewer's decision carries the reviewer."""
    client, _ = up
    bundle = example_request("in-network-specialist-care", "-unsettled")
    bundle, _ = with_requester(bundle, directory_npi("kim"), "207RC0000X")
    task = await submit(client, bundle)
    response = await decision_of(client, task)
    assert task["status"] == "on-hold"
    assert business_status(task) == "pending-review"
    assert review_action(response) == "A4"
    assert trail(response)[-1] == ("requester_is_member_or_treating_professional", "pending-review")
    assert "reviewer checks" in response["processNote"][0]["text"]

    reviewer = "https://directory.example/fhir/Practitioner/reviewer-1"
    decided = await client.post(
        f"/Task/{task['id']}/$decide",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "decision", "valueCode": "approved-in-network"},
                {
                    "name": "provider",
                    "valueReference": {"reference": "PractitionerRole/garcia-role"},
                },
                {"name": "reviewer", "valueReference": {"reference": reviewer}},
                {"name": "reviewerNPI", "valueString": "1972819302"},
                {
                    "name": "reviewerSpecialty",
                    "valueCodeableConcept": {"coding": [{"system": NUCC, "code": "207X00000X"}]},
                },
            ],
        },
    )
    assert decided.status_code == 200, decided.text
    reviewed = decided.json()
    marks = next(e for e in reviewed["extension"] if e["url"] == PAS_REVIEWER)
    assert {"url": "reviewer", "valueReference": {"reference": reviewer}} in marks["extension"]


async def test_a_requester_the_directory_does_not_list_is_pended_not_denied(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    bundle = example_request("in-network-specialist-care", "-unlisted")
    bundle, role_url = with_requester(bundle, "1000000004", "207RC0000X")
    resource_of(bundle, "Condition")["asserter"] = {"reference": role_url}  # treating, unlisted
    task = await submit(client, bundle)
    response = await decision_of(client, task)
    assert business_status(task) == "pending-review"
    assert trail(response)[-1] == ("requesting_professional_participates", "pending-review")


# -- 5. a directory of any size ------------------------------------------------------------------


async def test_thousands_of_primary_care_roles_over_many_pages_are_listed_not_an_outage(
    loopback: str,
) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(timeout=5, event_hooks={"request": [record]}) as http:
        client = DirectoryClient(http, f"{loopback}/large/fhir", network=NETWORK)
        found = await client.in_network_providers(
            {FAMILY}, today=datetime(2026, 11, 25, tzinfo=UTC)
        )
    assert (
        len([p for p in found if p.role_reference.split("/")[-1].startswith("fm-")]) == LARGE_ROLES
    )
    assert len(seen) > LARGE_ROLES // PAGE_CAP  # every page, well past the old 20-page limit


async def test_a_large_directory_decides_pcp_care_with_ranked_candidates_and_contacts(
    settings: Settings, engine: AsyncEngine, clock: FrozenClock, loopback: str
) -> None:
    before = ROLE_SEARCHES["large"]
    async for client, container in adapter(settings, engine, clock, f"{loopback}/large/fhir"):
        await _decide_in_a_large_directory(client, container)
    # Narrow searches that stop once there are enough candidates to rank: a few pages of the
    # PCP's group and of the network (10 roles a page), not the 240 pages of the whole listing.
    pages = ROLE_SEARCHES["large"] - before
    assert 4 <= pages <= 10, pages


async def _decide_in_a_large_directory(client: httpx.AsyncClient, container: Container) -> None:
    bundle = example_request("in-network-pcp-care", "-large")
    pcp_group = 7
    # The member's PCP is fm-7 in Medical Group 7; the member lives downtown and prefers Spanish.
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Practitioner":
            resource["identifier"] = [{"system": NPI, "value": f"9{pcp_group:09d}"}]
            entry["request"]["ifNoneExist"] = f"identifier={NPI}|9{pcp_group:09d}"
    patient = resource_of(bundle, "Patient")
    patient["communication"] = [
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]},
            "preferred": True,
        }
    ]
    patient["address"] = [
        {
            "city": "Los Angeles",
            "state": "CA",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                    "extension": [
                        {"url": "latitude", "valueDecimal": MEMBER_AT[0]},
                        {"url": "longitude", "valueDecimal": MEMBER_AT[1]},
                    ],
                }
            ],
        }
    ]
    task = await submit(client, bundle)
    response = await decision_of(client, task)
    assert business_status(task) == "approved-in-network", response.get("disposition")
    roles = offered(response)
    assert len(roles) == container.settings.candidates_offered == 5
    data = large_directory()
    ids = [r.rsplit("/", 1)[-1] for r in roles]
    listed = [data["PractitionerRole"][i] for i in ids]
    # Same medical group first: all five are the PCP's group (it has many qualified roles).
    assert {r["organization"]["reference"] for r in listed} == {f"Organization/group-{pcp_group}"}
    assert f"fm-{pcp_group}-role" not in ids  # never the professional whose opinion is questioned

    def key(role: dict[str, Any]) -> tuple[int, int, float]:
        accepting = role["extension"][1]["extension"][0]["valueBoolean"]
        number = int(role["id"].split("-")[1])
        office = data["Location"][role["location"][0]["reference"].split("/")[1]]["position"]
        where = (office["latitude"], office["longitude"])
        return (0 if accepting else 1, 0 if number % 7 == 0 else 1, distance_km(MEMBER_AT, where))

    assert [key(r) for r in listed] == sorted(key(r) for r in listed)
    assert key(listed[0])[:2] == (0, 0)  # accepting new patients and Spanish-speaking
    # Contact details the directory holds: organization, address, phone, one line each.
    notes = [n["text"] for n in response["processNote"]]
    for role in listed:
        line = next(n for n in notes if n.startswith(f"Dr. Doctor{role['id'].split('-')[1]}:"))
        assert f"Medical Group {pcp_group}" in line
        assert "Main Street" in line and "Los Angeles, CA" in line
        assert role["telecom"][0]["value"] in line


# -- 6. the early warning ------------------------------------------------------------------------


async def test_a_pended_request_past_the_warning_share_is_flagged_once(
    up: tuple[httpx.AsyncClient, Container], clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    client, container = up
    task = await submit(client, example_request("review", "-warning"))
    assert business_status(task) == "pending-review"
    workflow = container.workflow
    assert await workflow.flag_nearing_deadline() == 0
    assert await workflow.nearing_deadline_count() == 0

    clock.advance(days=5)  # due 2026-12-02 (7 days); 75 % of the window is 5 1/4 days
    assert await workflow.flag_nearing_deadline() == 0
    clock.advance(hours=7)
    with caplog.at_level(logging.WARNING):
        assert await workflow.flag_nearing_deadline() == 1
    flagged = (await client.get(f"/Task/{task['id']}")).json()
    assert flagged["priority"] == "urgent"  # raised from routine
    assert any(e["url"] == DEADLINE_WARNING_EXTENSION for e in flagged["extension"])
    assert flagged["status"] == "on-hold"  # still the reviewer's to decide
    warning = next(r for r in caplog.records if "past 75% of its window" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert f"Task/{task['id']}" in warning.getMessage()
    patient = resource_of(example_request("review"), "Patient")
    assert patient["name"][0]["family"] not in warning.getMessage()  # ids only, no PHI
    assert await workflow.nearing_deadline_count() == 1
    assert await workflow.flag_nearing_deadline() == 0  # flagged once


# -- 2. the PAS IG's own example request Bundles ---------------------------------------------------

IG_EXAMPLES = sorted(  # the new requests: the update and the inquiry are issue #12's
    p
    for p in (EXAMPLES / "pas" / "ig").glob("Bundle-*.json")
    if "Inquiry" not in p.name and "Update" not in p.name
)


@pytest.mark.parametrize("path", IG_EXAMPLES, ids=[p.stem for p in IG_EXAMPLES])
async def test_every_pas_ig_example_request_is_accepted_and_decided(
    up: tuple[httpx.AsyncClient, Container], path: Path
) -> None:
    """The IG's insurer is not this plan: an administrative denial with its specific reason,
    recorded with the Bundle it answers (never a 422 or a 500)."""
    client, _ = up
    request = json.loads(path.read_text())
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 200, response.text
    answer = response.json()
    claim_response = answer["entry"][0]["resource"]
    assert claim_response["resourceType"] == "ClaimResponse"
    assert claim_response["outcome"] == "complete"
    assert review_action(claim_response) == "A3"
    assert "not coverage with this plan" in claim_response["disposition"]
    assert trail(claim_response)[-1] == ("coverage_is_with_the_plan", "denied")
    claim = request["entry"][0]["resource"]
    assert claim_response["request"]["identifier"]["value"] == claim["identifier"][0]["value"]
    stored = await client.get(f"/ClaimResponse/{claim_response['id']}")
    assert stored.status_code == 200
    kept = (await client.get("/DocumentReference", params={"_count": "50"})).json()
    related = [
        r["reference"]
        for e in kept.get("entry", [])
        for r in e["resource"].get("context", {}).get("related", [])
    ]
    assert f"ClaimResponse/{claim_response['id']}" in related  # the request is kept with it


async def test_a_plan_members_pas_request_for_something_else_is_422_and_stores_nothing(
    up: tuple[httpx.AsyncClient, Container], engine: AsyncEngine
) -> None:
    client, _ = up
    request = json.loads(
        (EXAMPLES / "pas" / "ig" / "Bundle-ReferralAuthorizationBundleExample.json").read_text()
    )
    resource_of(request, "Coverage")["payor"] = [{"identifier": PLAN_ID}]
    before = await count_rows(engine)
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.item"]
    assert await count_rows(engine) == before


async def test_a_batch_resolves_references_by_the_same_rules_entry_by_entry(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = up
    ehr = "https://ehr.example.org/fhir"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://ehr.example.org/mrn", "value": "B-1"}],
    }
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},  # relative: the Patient entry on the EHR's base
        "code": {"text": "Condition in question"},
    }
    twin = {**condition, "subject": {"reference": "urn:uuid:nowhere"}}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "fullUrl": f"{ehr}/Patient/p1",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"{ehr}/Condition/c1",
                "resource": condition,
                "request": {"method": "POST", "url": "Condition"},
            },
            {
                "fullUrl": f"{ehr}/Condition/c2",
                "resource": twin,
                "request": {"method": "POST", "url": "Condition"},
            },
        ],
    }
    response = await client.post("", json=batch)
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    assert [a["response"]["status"] for a in answers] == ["201 Created", "201 Created", "422"]
    patient_key = answers[0]["response"]["location"].split("/_history")[0]
    stored = (await client.get(answers[1]["response"]["location"].split("/_history")[0])).json()
    assert stored["subject"]["reference"] == patient_key
    issue = answers[2]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.subject.reference"]


async def test_a_pas_entry_of_a_type_not_stored_here_stays_at_its_full_url(
    up: tuple[httpx.AsyncClient, Container],
) -> None:
    """The IG's Bundles carry Locations and Encounters, which this server does not hold: the
    request is still decided, and the references to them name their absolute fullUrls."""
    client, _ = up
    request = load("pas/ig-style-request.json")
    location_url = "https://example.org/fhir/Location/ReferringOfficeExample"
    request["entry"].append(
        {
            "fullUrl": location_url,
            "resource": {
                "resourceType": "Location",
                "id": "ReferringOfficeExample",
                "name": "Office",
            },
        }
    )
    role = next(
        e["resource"]
        for e in request["entry"]
        if e["fullUrl"].endswith("/PractitionerRole/ReferringRoleExample")
    )
    role["location"] = [{"reference": "Location/ReferringOfficeExample"}]
    for item in request["entry"]:  # a new request, not a resubmission
        if item["resource"]["resourceType"] in ("Claim", "ServiceRequest"):
            for identifier in item["resource"].get("identifier") or []:
                identifier["value"] = str(identifier.get("value")) + "-loc"
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 200, response.text
    assert review_action(response.json()["entry"][0]["resource"]) == "NA"
    roles = (await client.get("/PractitionerRole", params={"_count": "100"})).json()
    locations = [
        ref["reference"] for e in roles["entry"] for ref in e["resource"].get("location", [])
    ]
    assert location_url in locations
