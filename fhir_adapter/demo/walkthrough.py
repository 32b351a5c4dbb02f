"""`fhir-adapter demo`: submit the example requests to a service and print what happened.

Against `--url` it talks to a running service; otherwise it starts one in this process (SQLite in
a temporary folder, the built-in directory) on a free loopback port, so the whole flow runs over
real HTTP exactly as an EHR would see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from fhir_adapter.bootstrap import examples_dir
from fhir_adapter.codes import (
    PAS_AUTHORIZED_PROVIDER,
    PAS_REVIEW_ACTION,
    RULE_TRAIL_EXTENSION,
    STATUS_SYSTEM,
)
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.security.client import (
    ClientCredentials,
    discover_token_endpoint,
    new_ec_key,
    request_token,
)

DEFAULT_PATHS = (
    "in-network-pcp-care",
    "in-network-specialist-care",
    "member-selected-provider",
    "out-of-network",
    "denied",
    "review",
    "expedited",
    "representative",
)


DEMO_SCOPE = "system/*.cruds"


@contextlib.asynccontextmanager
async def in_process_service() -> AsyncIterator[tuple[str, ClientCredentials]]:
    """A real server on a free loopback port with a throwaway SQLite database; yields its FHIR
    base and the credentials of a demo system registered with its built-in token endpoint."""
    import uvicorn

    from fhir_adapter.api.app import create_app
    from fhir_adapter.config import Settings

    with tempfile.TemporaryDirectory(prefix="fhir-adapter-demo-") as folder:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = Settings(
            host="127.0.0.1",
            port=port,
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'demo.db'}",
            directory_url=None,
            base_url=None,
            demo=True,  # the demo EHR inboxes the demo directory's Endpoints point to
            _env_file=None,
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        deadline = time.monotonic() + 20
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("the in-process service did not start")
            await asyncio.sleep(0.05)
        try:
            yield settings.fhir_base_url, await _register_demo_client(settings.database_url)
        finally:
            server.should_exit = True
            await task


async def _register_demo_client(database_url: str) -> ClientCredentials:
    from fhir_adapter.security.issuer import register_client
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.sql import SqlResourceStore

    private, kid, jwks = new_ec_key()
    engine = create_engine(database_url)
    try:
        client = await register_client(
            SqlResourceStore(engine), name="fhir-adapter demo", jwks=jwks, scope=DEMO_SCOPE
        )
    finally:
        await engine.dispose()
    return ClientCredentials(client.client_id, private, kid)


async def run_demo(
    base_url: str | None,
    paths: tuple[str, ...] = DEFAULT_PATHS,
    *,
    credentials: ClientCredentials | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Walk the example paths; returns how many ended as the example says they should."""
    if base_url:
        if credentials is None:
            raise ValueError(
                "a running service needs --client-id and --key (fhir-adapter clients add)"
            )
        return await _walk(base_url.rstrip("/"), paths, say, credentials)
    async with in_process_service() as (url, registered):
        say(f"Started fhir-adapter in this process at {url} (SQLite in a temporary folder)")
        return await _walk(url, paths, say, registered)


async def _walk(
    base_url: str,
    paths: tuple[str, ...],
    say: Callable[[str], None],
    credentials: ClientCredentials,
) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        token_url = await discover_token_endpoint(http, base_url)
        token = await request_token(http, token_url, credentials, DEMO_SCOPE)
    say(
        f"Access token from {token_url} (SMART Backend Services, client {credentials.client_id},"
        f" {credentials.algorithm} assertion): scope '{token['scope']}',"
        f" expires in {token['expires_in']} s"
    )
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
        metadata = await client.get("/metadata")
        metadata.raise_for_status()
        say(f"FHIR {metadata.json()['fhirVersion']} server: {base_url}\n")
        good = 0
        approved: dict[str, dict[str, str]] = {}
        for name in paths:
            keys = await _one(client, name, say)
            good += keys is not None
            if keys and name == "in-network-specialist-care":
                approved = {name: keys}
        say(f"\n{good} of {len(paths)} requests ended as their example says.")
        if approved:
            await _close_the_loop(client, base_url, approved["in-network-specialist-care"], say)
        return good


async def _close_the_loop(
    client: httpx.AsyncClient, base_url: str, keys: dict[str, str], say: Callable[[str], None]
) -> None:
    """Policy VI: the second-opinion provider's Consultation Report goes to the PCP and the member."""
    say("\n== consultation report for the in-network specialist-care request")
    report = consultation_report(
        keys, "Second opinion: surgery is reasonable; physical therapy first is an option."
    )
    answer = await client.post("/DiagnosticReport", json=report)
    say(f"   report    POST /fhir/DiagnosticReport -> HTTP {answer.status_code}")
    if answer.status_code != 201:
        # e.g. a second demo run on the same database: that request's Task is already completed
        say(f"   refused   {answer.json().get('issue', [{}])[0].get('diagnostics')}")
        return
    task = (await client.get(f"/{keys['Task']}")).json()
    say(f"   task      {keys['Task']} is {task['status']}")
    report_key = f"DiagnosticReport/{answer.json()['id']}"
    for communication in await _communications_about(client, keys["ServiceRequest"], report_key):
        recipient = communication["recipient"][0]["reference"]
        communication = await _past(client, communication, "preparation")  # letter rendering
        communication = await _past(client, communication, "in-progress")  # being delivered
        who = "member" if recipient.startswith("Patient/") else "PCP"
        how = (
            "readable through the API"
            if who == "member"
            else "delivered to the PCP's FHIR endpoint"
        )
        say(f"   to {who:6} Communication/{communication['id']} {communication['status']} ({how})")
    origin = base_url.rsplit("/fhir", 1)[0]
    endpoints = await client.get(f"{origin}/directory/fhir/Endpoint", params={"_count": "100"})
    if endpoints.status_code != 200:
        return  # not the built-in directory: the PCP's own EHR holds the copy
    addresses = {e["resource"]["address"] for e in endpoints.json().get("entry", [])}
    for address in sorted(addresses):
        inbox = await client.get(f"{address}/Communication")
        if inbox.status_code == 200 and inbox.json()["total"]:
            say(f"   PCP EHR   {address} holds {inbox.json()['total']} Communication(s)")


def consultation_report(keys: dict[str, str], conclusion: str, **extra: Any) -> dict[str, Any]:
    """A final Consultation Report (LOINC 11488-4) for the request and member in `keys`."""
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]
        },
        "subject": {"reference": keys["Patient"]},
        "basedOn": [{"reference": keys["ServiceRequest"]}],
        "conclusion": conclusion,
        **extra,
    }


async def _one(
    client: httpx.AsyncClient, name: str, say: Callable[[str], None]
) -> dict[str, str] | None:
    bundle = json.loads((examples_dir() / "requests" / f"{name}.json").read_text())
    expected = bundle.get("meta", {}).get("tag", [{}])[0].get("display", "")
    say(f"== {name}: {expected}")
    started = time.perf_counter()
    response = await client.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})
    elapsed = (time.perf_counter() - started) * 1000
    say(
        f"   request   POST /fhir transaction, {len(bundle['entry'])} entries -> HTTP {response.status_code} ({elapsed:.0f} ms)"
    )
    if response.status_code != 200:
        say(f"   refused   {response.json().get('issue', [{}])[0].get('diagnostics')}")
        return None
    keys = {
        key.type: str(key)
        for key in (ResourceKey.parse(e["response"]["location"]) for e in response.json()["entry"])
    }
    task_key = keys["Task"]
    task = (await client.get(f"/{task_key}")).json()
    period = task.get("restriction", {}).get("period", {})
    say(
        f"   received  {task_key}, clock started {period.get('start')}, decision due {period.get('end')}"
    )
    # The decision is the Task's ClaimResponse output; a later Consultation Report adds its own.
    decided = [
        o["valueReference"]["reference"]
        for o in task.get("output", [])
        if o.get("valueReference", {}).get("reference", "").startswith("ClaimResponse/")
    ]
    if not decided:
        say("   decision  not yet recorded (the worker will retry)")
        return None
    await _report_decision(client, keys, task, decided[-1], say)
    return keys


async def _report_decision(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    task: dict[str, Any],
    decision_key: str,
    say: Callable[[str], None],
) -> None:
    """What the decision says: the rules passed, the providers, the action, the notices sent."""
    decision = (await client.get(f"/{decision_key}")).json()
    trail = [
        {x["url"]: x.get("valueString") or x.get("valueCode") for x in ext["extension"]}
        for ext in decision.get("extension", [])
        if ext["url"] == RULE_TRAIL_EXTENSION
    ]
    checks = ", ".join(step["rule"] for step in trail if step["result"] == "passed")
    say(f"   checks    {checks or '-'}")
    providers = [
        ext["extension"][0]["valueReference"].get("display")
        or ext["extension"][0]["valueReference"]["reference"]
        for ext in decision["item"][0].get("extension", [])
        if ext["url"] == PAS_AUTHORIZED_PROVIDER
    ]
    say(f"   network   {'; '.join(providers) if providers else 'no provider listed'}")
    action = next(
        e
        for e in decision["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
    status = next(
        c["code"] for c in task["businessStatus"]["coding"] if c["system"] == STATUS_SYSTEM
    )
    say(
        f"   decision  {action} / Task {task['status']} ({status}) by rule {trail[-1]['rule'] if trail else '-'}"
    )
    say(f"             {decision.get('disposition')}")
    for drafted in await _communications_about(client, keys["ServiceRequest"], decision_key):
        notice = await _past(client, drafted, "preparation")  # the worker renders its letter
        if "payload" not in notice:
            say(f"   notice    Communication/{notice['id']} {notice['status']} (not rendered yet)")
            continue
        attachments = [
            p["contentAttachment"] for p in notice["payload"] if "contentAttachment" in p
        ]
        to = "member" if notice["recipient"][0]["reference"].startswith("Patient/") else "requester"
        kinds = "+".join(a["contentType"].split(";")[0].split("/")[1].upper() for a in attachments)
        language = attachments[0]["language"] if attachments else "-"
        say(
            f"   notice    to {to}: {notice['payload'][0]['contentString']} ({kinds}, {language}, {notice['status']})"
        )
    if decision.get("preAuthRef"):
        say(
            f"   authorized {decision['preAuthRef']} valid until {decision['preAuthPeriod']['end']}"
        )


async def _past(
    client: httpx.AsyncClient, communication: dict[str, Any], status: str
) -> dict[str, Any]:
    """The Communication once the background worker has moved it on from `status` (or as it
    stands after 15 seconds)."""
    deadline = time.monotonic() + 15
    while communication["status"] == status and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        communication = (await client.get(f"/Communication/{communication['id']}")).json()
    return communication


async def _communications_about(
    client: httpx.AsyncClient, request_key: str, about: str
) -> list[dict[str, Any]]:
    """The request's Communications about one resource: its decision's notices, or its report."""
    found = (
        await client.get("/Communication", params={"based-on": request_key, "_count": "100"})
    ).json()
    return [
        entry["resource"]
        for entry in found.get("entry", [])
        if any(a.get("reference") == about for a in entry["resource"].get("about", []))
    ]
