"""The real server process (`python -m fhir_adapter serve`) over real HTTP, on both backends.

Every test starts `fhir-adapter serve` as a subprocess on a free loopback port, configured only
through FHIR_ADAPTER_* environment variables (contract §1), waits for `GET /healthz`, talks to
it with a plain `httpx.AsyncClient`, and stops it with SIGTERM, which must end the process cleanly
(exit code 0) within a few seconds.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tokens import live_token

pytestmark = pytest.mark.live

# Seconds for the server to answer GET /healthz: polled, so a quick start returns at once; the bound
# is generous because a loaded two-core machine can take far longer than usual to import and migrate.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 5.0  # seconds for the server to exit after SIGTERM
FHIR_JSON = "application/fhir+json"


# ---------------------------------------------------------------------------------------------
# The server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    exit_code: int | None = None
    stop_seconds: float | None = None
    token: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT; returns the exit code."""
        if self.exit_code is not None:
            return self.exit_code
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
                self.exit_code = -signal.SIGKILL
                self.stop_seconds = time.monotonic() - started
                return self.exit_code
        self.stop_seconds = time.monotonic() - started
        self.exit_code = self.process.returncode
        return self.exit_code


def _server_env(port: int, database_url: str) -> dict[str, str]:
    # Nothing of ours may leak in from the caller's environment (a FHIR_ADAPTER_BASE_URL would
    # change every Location header); the server sees exactly the settings below.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env.update(
        FHIR_ADAPTER_HOST="127.0.0.1",
        FHIR_ADAPTER_PORT=str(port),
        FHIR_ADAPTER_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
    )
    return env


async def _wait_until_up(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_problem = "no answer yet"
    async with httpx.AsyncClient(timeout=2.0) as probe:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(
                    f"the server exited with code {server.process.returncode} while starting;"
                    f" log:\n{server.log()}"
                )
            try:
                response = await probe.get(f"http://127.0.0.1:{server.port}/healthz")
                if response.status_code == 200:
                    return
                last_problem = (
                    f"GET /healthz answered {response.status_code}: {response.text[:500]}"
                )
            except httpx.TransportError as exc:
                last_problem = repr(exc)
            await asyncio.sleep(0.05)
    server.stop()
    pytest.fail(
        f"the server did not answer GET /healthz with 200 within {START_TIMEOUT:.0f} s"
        f" ({last_problem}); log:\n{server.log()}"
    )


def start_server(port: int, env: dict[str, str], workdir: Path) -> LiveServer:
    """`python -m fhir_adapter serve` with exactly `env`, logging to `workdir`/server.log."""
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fhir_adapter", "serve"],
            env=env,
            cwd=workdir,  # no stray .env is read, no default database file is written elsewhere
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return LiveServer(process, port, log_path)


@pytest.fixture
async def live_server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """`python -m fhir_adapter serve` on a free port over the backend's database."""
    port = free_port()
    server = start_server(port, _server_env(port, database_url), tmp_path)
    try:
        await _wait_until_up(server)
        server.token = await live_token(database_url, f"http://127.0.0.1:{port}")
        yield server
    finally:
        code = server.stop()
    # After every test: SIGTERM alone ends the process within STOP_TIMEOUT (no SIGKILL needed).
    # That the exit code is 0 is test_sigterm_shuts_down_cleanly's business, so that one bug
    # fails one test rather than every teardown.
    assert code in (0, -signal.SIGTERM), (
        f"the server exited with {code} after SIGTERM; log:\n{server.log()}"
    )
    assert "Traceback" not in server.log(), f"the server logged a traceback:\n{server.log()}"


@pytest.fixture
async def live(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP client for the live server's FHIR base."""
    async with httpx.AsyncClient(
        base_url=live_server.base_url,
        headers={
            "content-type": FHIR_JSON,
            "accept": FHIR_JSON,
            "authorization": f"Bearer {live_server.token}",
        },
        timeout=15.0,
    ) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Helpers


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def count(client: httpx.AsyncClient, resource_type: str) -> int:
    response = await client.get(f"/{resource_type}", params={"_summary": "count"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "searchset"
    total: int = body["total"]
    return total


def without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def http_date(value: str) -> datetime:
    parsed = parsedate_to_datetime(value)
    assert parsed.tzinfo is not None, f"Last-Modified '{value}' has no zone"
    return parsed


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for child in value.values():
            yield from strings_in(child)
    elif isinstance(value, list):
        for child in value:
            yield from strings_in(child)
    elif isinstance(value, str):
        yield value


def replace_strings(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: replace_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_strings(v, mapping) for v in value]
    if isinstance(value, str):
        return mapping.get(value, value)
    return value


def issue_expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome.get("issue", []) for e in issue.get("expression", [])]


# ---------------------------------------------------------------------------------------------
# 1. The CapabilityStatement


TASK_SEARCH_PARAMS = {
    "_id", "identifier", "status", "business-status", "patient", "focus", "owner", "requester",
    "authored-on", "period",
}  # fmt: skip


async def test_metadata_is_a_capability_statement(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    response = await live.get("/metadata")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert "json" in statement["format"]
    assert statement["implementation"]["url"] == live_server.base_url
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    assert "transaction" in {i["code"] for i in rest["interaction"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert "Task" in by_type
    task = by_type["Task"]
    assert {p["name"] for p in task["searchParam"]} >= TASK_SEARCH_PARAMS
    assert all(p.get("type") for p in task["searchParam"])
    assert {"read", "vread", "update", "create", "search-type", "history-instance"} <= {
        i["code"] for i in task["interaction"]
    }
    for served in ("Patient", "ServiceRequest", "Coverage", "Communication"):
        assert served in by_type, f"{served} missing from the CapabilityStatement"
        assert by_type[served]["searchParam"], f"{served} lists no search parameters"


# ---------------------------------------------------------------------------------------------
# 2. Create, read, update, vread, history, search


async def test_patient_round_trip(live: httpx.AsyncClient, live_server: LiveServer) -> None:
    base = live_server.base_url
    member = unique("M-")
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:live-member", "value": member}],
        "name": [{"family": "Rivera", "given": ["Ana"]}],
        "birthDate": "1980-02-29",
    }

    created = await live.post("/Patient", json=patient)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith(FHIR_JSON)
    v1 = created.json()
    pid = v1["id"]
    assert v1["meta"]["versionId"] == "1"
    assert without_server_fields(v1) == without_server_fields(patient)
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == f"{base}/Patient/{pid}/_history/1"
    modified_v1 = http_date(created.headers["last-modified"])
    assert modified_v1 == instant(v1["meta"]["lastUpdated"]).replace(microsecond=0)

    read = await live.get(f"/Patient/{pid}")
    assert read.status_code == 200, read.text
    assert read.json() == v1
    assert read.headers["etag"] == 'W/"1"'
    assert http_date(read.headers["last-modified"]) == modified_v1

    changed = {**patient, "id": pid, "name": [{"family": "Reyes", "given": ["Ana"]}]}
    updated = await live.put(
        f"/Patient/{pid}", json=changed, headers={"If-Match": read.headers["etag"]}
    )
    assert updated.status_code == 200, updated.text
    v2 = updated.json()
    assert v2["id"] == pid
    assert v2["meta"]["versionId"] == "2"
    assert v2["name"][0]["family"] == "Reyes"
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.headers["location"] == f"{base}/Patient/{pid}/_history/2"
    modified_v2 = http_date(updated.headers["last-modified"])
    assert modified_v2 >= modified_v1
    assert instant(v2["meta"]["lastUpdated"]) >= instant(v1["meta"]["lastUpdated"])

    # The ETag we read is stale now: a version-aware update with it must fail and change nothing.
    stale = await live.put(
        f"/Patient/{pid}", json=patient | {"id": pid}, headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412, stale.text
    assert stale.json()["resourceType"] == "OperationOutcome"

    first = await live.get(f"/Patient/{pid}/_history/1")
    assert first.status_code == 200, first.text
    assert first.json() == v1
    assert first.headers["etag"] == 'W/"1"'
    second = await live.get(f"/Patient/{pid}/_history/2")
    assert second.status_code == 200, second.text
    assert second.json() == v2
    assert second.headers["etag"] == 'W/"2"'
    assert (await live.get(f"/Patient/{pid}/_history/3")).status_code == 404

    current = await live.get(f"/Patient/{pid}")
    assert current.json() == v2
    assert current.headers["etag"] == 'W/"2"'

    history = await live.get(f"/Patient/{pid}/_history")
    assert history.status_code == 200, history.text
    bundle = history.json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert [e["resource"] for e in bundle["entry"]] == [v2, v1]
    assert all(e["fullUrl"] == f"{base}/Patient/{pid}" for e in bundle["entry"])

    found = await live.get("/Patient", params={"identifier": f"urn:test:live-member|{member}"})
    assert found.status_code == 200, found.text
    searchset = found.json()
    assert searchset["type"] == "searchset"
    assert searchset["total"] == 1
    (entry,) = searchset["entry"]
    assert entry["fullUrl"] == f"{base}/Patient/{pid}"
    assert entry["resource"] == v2
    assert entry["search"]["mode"] == "match"


# ---------------------------------------------------------------------------------------------
# 3. Paging


async def test_search_pages_every_match_exactly_once(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    base = live_server.base_url
    patient = await create(live, {"resourceType": "Patient", "name": [{"family": "Paging"}]})
    pid = patient["id"]
    batch = unique()
    tasks: dict[str, dict[str, Any]] = {}
    for n in range(23):
        task = await create(live, {
            "resourceType": "Task",
            "identifier": [{"system": "urn:test:live-task", "value": f"{batch}-{n}"}],
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
        })  # fmt: skip
        tasks[task["id"]] = task
    # Noise that must not show up: a Task for another patient.
    other = await create(live, {"resourceType": "Patient", "name": [{"family": "Other"}]})
    await create(live, {
        "resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": f"Patient/{other['id']}"},
    })  # fmt: skip

    seen: list[str] = []
    pages: list[list[str]] = []
    updated: list[str] = []
    response = await live.get("/Task", params={"patient": f"Patient/{pid}", "_count": "5"})
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        assert bundle["total"] == 23
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(f"{base}/Task?")
        page = [
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        ]
        assert 0 < len(page) <= 5, bundle
        pages.append(page)
        seen.extend(page)
        assert len(pages) <= 10, "paging does not end"
        if len(pages) == 1:
            # A Task already seen changes while the client pages: it must not come back.
            changed = tasks[page[0]]
            put = await live.put(
                f"/Task/{changed['id']}", json={**changed, "status": "in-progress"}
            )
            assert put.status_code == 200, put.text
            updated.append(changed["id"])
        elif len(pages) == 2:
            # A Task not seen yet changes: it must still come exactly once.
            changed = tasks[next(i for i in tasks if i not in seen)]
            put = await live.put(f"/Task/{changed['id']}", json={**changed, "status": "accepted"})
            assert put.status_code == 200, put.text
            updated.append(changed["id"])
        if "next" not in links:
            break
        assert links["next"].startswith(f"{base}/Task?")
        response = await live.get(links["next"])  # followed verbatim

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert len(seen) == len(set(seen)), f"repeated: {[i for i in set(seen) if seen.count(i) > 1]}"
    assert set(seen) == set(tasks), f"missing: {set(tasks) - set(seen)}"
    assert len(updated) == 2


# ---------------------------------------------------------------------------------------------
# 4. Transaction Bundles


BUNDLE_TYPES = (
    "Patient", "Coverage", "Organization", "Practitioner", "PractitionerRole", "Condition",
    "ServiceRequest", "Task", "Communication",
)  # fmt: skip


def linked_orders_bundle() -> dict[str, Any]:
    """Ten POST entries with urn:uuid fullUrls referring to each other (also forward): an
    ordinary order and its Task, which the second-opinion workflow leaves alone."""
    u = {name: urn() for name in (
        "patient", "coverage", "org", "practitioner", "role", "condition", "request", "task",
        "condition2", "communication",
    )}  # fmt: skip
    tag = unique()

    def ref(name: str) -> dict[str, str]:
        return {"reference": u[name]}

    resources: list[tuple[str, dict[str, Any]]] = [
        ("patient", {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:live-member", "value": f"TX-{tag}"}],
            "name": [{"family": "Okafor"}],
        }),
        ("coverage", {
            "resourceType": "Coverage", "status": "active",
            "beneficiary": ref("patient"), "payor": [ref("org")],
            "period": {"start": "2026-01-01"},
        }),
        ("org", {"resourceType": "Organization", "name": f"Plan {tag}"}),
        ("practitioner", {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        }),
        ("role", {
            "resourceType": "PractitionerRole", "practitioner": ref("practitioner"),
            "organization": ref("org"),
        }),
        ("condition", {"resourceType": "Condition", "subject": ref("patient"),
                       "code": {"text": "knee pain"}}),
        ("request", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": "urn:test:live-request", "value": tag}],
            "subject": ref("patient"), "requester": ref("role"),
            "reasonReference": [ref("condition"), ref("condition2")],
            "insurance": [ref("coverage")], "authoredOn": "2026-11-25T10:00:00Z",
            # an ordinary order (no second-opinion markers): a reference inside an extension
            "extension": [{
                "url": "http://example.org/fhir/StructureDefinition/ordered-after-review-by",
                "valueReference": ref("role"),
            }],
        }),
        ("task", {
            "resourceType": "Task", "status": "requested", "intent": "order",
            "focus": ref("request"), "for": ref("patient"), "requester": ref("role"),
            "authoredOn": "2026-11-25T10:00:00Z",
        }),
        ("condition2", {"resourceType": "Condition", "subject": ref("patient"),
                        "code": {"text": "back pain"}}),
        ("communication", {
            "resourceType": "Communication", "status": "completed",
            "subject": ref("patient"), "basedOn": [ref("request")], "about": [ref("task")],
            "recipient": [ref("patient")], "sender": ref("role"),
            "payload": [{"contentString": "Your request was received."}],
        }),
    ]  # fmt: skip
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": u[name],
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for name, resource in resources
        ],
    }


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    return {t: await count(client, t) for t in BUNDLE_TYPES}


async def test_transaction_rewrites_urn_references_and_is_atomic(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    base = live_server.base_url
    bundle = linked_orders_bundle()
    before = await counts(live)

    response = await live.post("", json=bundle)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["resourceType"] == "Bundle"
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == 10

    mapping: dict[str, str] = {}  # urn:uuid -> Type/id
    for sent, got in zip(bundle["entry"], answer["entry"], strict=True):
        resource_type = sent["resource"]["resourceType"]
        assert got["response"]["status"].startswith("201"), got
        location = got["response"]["location"]
        key, _, version = location.partition("/_history/")
        assert key.startswith(f"{resource_type}/"), location
        assert version == "1", location
        assert got["fullUrl"] == f"{base}/{key}"
        mapping[sent["fullUrl"]] = key
    assert len(set(mapping.values())) == 10

    for sent in bundle["entry"]:
        key = mapping[sent["fullUrl"]]
        stored = await live.get(f"/{key}")
        assert stored.status_code == 200, stored.text
        resource = stored.json()
        assert resource["meta"]["versionId"] == "1"
        leftovers = [s for s in strings_in(resource) if "urn:uuid" in s]
        assert not leftovers, f"{key} still holds {leftovers}"
        # Exactly the references changed, each to the `Type/id` of the entry it named.
        assert without_server_fields(resource) == replace_strings(sent["resource"], mapping), key

    by_name = {e["resource"]["resourceType"]: mapping[e["fullUrl"]] for e in bundle["entry"]}
    task = (await live.get(f"/{by_name['Task']}")).json()
    assert task["focus"] == {"reference": by_name["ServiceRequest"]}
    assert task["for"] == {"reference": by_name["Patient"]}
    assert task["requester"] == {"reference": by_name["PractitionerRole"]}
    # The search index holds the rewritten references too.
    found = await live.get("/Task", params={"focus": by_name["ServiceRequest"]})
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [task["id"]]
    found = await live.get("/ServiceRequest", params={"patient": by_name["Patient"]})
    assert found.json()["total"] == 1

    after = await counts(live)
    expected = {t: before[t] + (2 if t == "Condition" else 1) for t in BUNDLE_TYPES}
    assert after == expected

    # The same Bundle with one entry made invalid: rejected whole, naming the entry, storing nothing.
    bogus_status = copy.deepcopy(bundle)
    bogus_status["entry"][7]["resource"]["status"] = "bogus"
    unknown_element = copy.deepcopy(bundle)
    unknown_element["entry"][9]["resource"]["favouriteColour"] = "green"
    for broken, index in ((bogus_status, 7), (unknown_element, 9)):
        rejected = await live.post("", json=broken)
        assert rejected.status_code == 400, rejected.text
        outcome = rejected.json()
        assert outcome["resourceType"] == "OperationOutcome"
        expressions = issue_expressions(outcome)
        assert any(e.startswith(f"Bundle.entry[{index}]") for e in expressions), outcome
        assert await counts(live) == after

    # A failure that only shows while the entries are being written (a reference to nothing, in
    # the last entry processed) rolls back the nine entries written before it.
    dangling = copy.deepcopy(bundle)
    dangling["entry"][9]["resource"]["recipient"] = [{"reference": f"Patient/{unique('nobody-')}"}]
    rejected = await live.post("", json=dangling)
    assert rejected.status_code in (400, 422), rejected.text
    outcome = rejected.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(e.startswith("Bundle.entry[9]") for e in issue_expressions(outcome)), outcome
    assert await counts(live) == after


# ---------------------------------------------------------------------------------------------
# 5. Conditional create


def second_opinion_request(pid: str, value: str, note: str = "first") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:x", "value": value}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "note": [{"text": note}],
    }


async def test_conditional_create_returns_the_existing_resource(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    patient = await create(live, {"resourceType": "Patient"})
    value = unique("123-")
    condition = {"If-None-Exist": f"identifier=urn:x|{value}"}

    first = await live.post(
        "/ServiceRequest", json=second_opinion_request(patient["id"], value), headers=condition
    )
    assert first.status_code == 201, first.text
    sid = first.json()["id"]
    assert first.headers["location"] == f"{live_server.base_url}/ServiceRequest/{sid}/_history/1"

    again = second_opinion_request(patient["id"], value, note="resubmitted")
    second = await live.post("/ServiceRequest", json=again, headers=condition)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == sid
    assert second.json() == first.json()  # the existing resource, unchanged
    assert second.headers["etag"] == 'W/"1"'

    found = await live.get("/ServiceRequest", params={"identifier": f"urn:x|{value}"})
    assert found.status_code == 200, found.text
    assert found.json()["total"] == 1
    assert found.json()["entry"][0]["resource"]["id"] == sid
    history = (await live.get(f"/ServiceRequest/{sid}/_history")).json()
    assert history["total"] == 1


async def test_concurrent_conditional_creates_store_one_resource(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    """Resubmissions racing each other over separate connections still create one request."""
    patient = await create(live, {"resourceType": "Patient"})
    value = unique("race-")
    condition = {"If-None-Exist": f"identifier=urn:x|{value}"}
    body = second_opinion_request(patient["id"], value)

    async def submit() -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=live_server.base_url,
            headers={"content-type": FHIR_JSON, "authorization": f"Bearer {live_server.token}"},
            timeout=30.0,
        ) as client:
            return await client.post("/ServiceRequest", json=body, headers=condition)

    responses = await asyncio.gather(*(submit() for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    found = await live.get("/ServiceRequest", params={"identifier": f"urn:x|{value}"})
    assert found.json()["total"] == 1


# ---------------------------------------------------------------------------------------------
# 6. Graceful shutdown


async def test_sigterm_shuts_down_cleanly(live: httpx.AsyncClient, live_server: LiveServer) -> None:
    # A keep-alive connection is open, as a real client would leave it.
    assert (await live.get("/metadata")).status_code == 200
    code = live_server.stop()
    assert code == 0, f"exit code {code} after SIGTERM; log:\n{live_server.log()}"
    assert live_server.stop_seconds is not None and live_server.stop_seconds < STOP_TIMEOUT
    log = live_server.log()
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log, log
    # The port is free again: nothing is left listening.
    with pytest.raises(httpx.TransportError):
        await live.get("/metadata", timeout=2.0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", live_server.port)) != 0
