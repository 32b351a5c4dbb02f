"""DirectoryClient over real HTTP on loopback: the demo directory, and directories that misbehave."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from fhir_adapter.api import handlers
from fhir_adapter.api.fhir_http import FhirResponse
from fhir_adapter.bootstrap import demo_directory_file
from fhir_adapter.demo.directory import DEMO_ORIGIN, DirectoryData, directory_router, load_directory
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.errors import DirectoryUnavailableError
from tests.loopback import serve_on_loopback

TODAY = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
NETWORK = "Organization/medi-cal-network"
ORTHO = "207X00000X"
PAGE_SIZE = 10  # the demo router's default
SLOW_SECONDS = 3.0


@dataclass
class LiveDirectory:
    """A uvicorn server on loopback and how often each misbehaving route was hit."""

    root: str
    data: DirectoryData
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def demo(self) -> str:
        return f"{self.root}/directory/fhir"


def build_app(hits: Counter[str]) -> FastAPI:
    app = FastAPI()
    handlers.install(app)
    app.include_router(
        directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir"
    )

    @app.get("/slow/fhir/{resource_type}")
    async def slow(resource_type: str, request: Request) -> Response:
        hits["slow"] += 1
        deadline = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(0.05)
        return FhirResponse({"resourceType": "Bundle", "type": "searchset", "entry": []})

    @app.get("/broken/fhir/{resource_type}")
    async def broken(resource_type: str) -> Response:
        hits["broken"] += 1
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception"}],
        }
        return FhirResponse(outcome, 500)

    @app.get("/html/fhir/{resource_type}")
    async def html(resource_type: str) -> Response:
        hits["html"] += 1
        return HTMLResponse("<html><body><h1>Down for maintenance</h1></body></html>")

    @app.get("/endless/fhir/{resource_type}")
    async def endless(resource_type: str, request: Request) -> Response:
        hits["endless"] += 1
        links = [
            {"relation": "self", "url": str(request.url)},
            {"relation": "next", "url": str(request.url)},
        ]
        return FhirResponse(
            {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": []}
        )

    return app


@pytest.fixture(scope="module")
def live_directory() -> Iterator[LiveDirectory]:
    hits: Counter[str] = Counter()
    with serve_on_loopback(build_app(hits)) as root:
        yield LiveDirectory(root, load_directory(demo_directory_file()), hits)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def demo_client(live: LiveDirectory, http: httpx.AsyncClient, **options: Any) -> DirectoryClient:
    return DirectoryClient(http, live.demo, network=NETWORK, backoff_seconds=0.001, **options)


def role_id(reference: str) -> str:
    return reference.rsplit("/PractitionerRole/", 1)[-1]


def endpoint_address(data: DirectoryData, role_id: str, root: str) -> str | None:
    """The address as the demo directory serves it: seed addresses move to the serving origin."""
    for ref in data["PractitionerRole"][role_id].get("endpoint") or []:
        endpoint = data["Endpoint"].get(ref["reference"].split("/")[-1])
        if endpoint:
            address: str = endpoint["address"]
            return address.replace(DEMO_ORIGIN, root, 1)
    return None


# -- the demo directory over real HTTP -----------------------------------------------------------


async def test_demo_directory_in_network_orthopaedic_surgeons(
    live_directory: LiveDirectory, http: httpx.AsyncClient
) -> None:
    data = live_directory.data
    client = demo_client(live_directory, http)

    found = await client.in_network_providers([ORTHO], today=TODAY)

    by_role = {role_id(p.role_reference): p for p in found}
    assert sorted(by_role) == ["garcia-role", "okafor-role", "patel-role"]
    assert "patel-old-role" not in by_role  # its period ended in 2019
    for id, provider in by_role.items():
        practitioner_id = data["PractitionerRole"][id]["practitioner"]["reference"].split("/")[-1]
        assert provider.in_network is True
        assert provider.role_reference == f"{live_directory.demo}/PractitionerRole/{id}"
        assert (
            provider.practitioner_reference
            == f"{live_directory.demo}/Practitioner/{practitioner_id}"
        )
        assert provider.npi == data["Practitioner"][practitioner_id]["identifier"][0]["value"]
        assert provider.display and practitioner_id.capitalize() in provider.display
        assert provider.fhir_endpoint is not None
        assert provider.fhir_endpoint == endpoint_address(data, id, live_directory.root)
        assert provider.specialties == {ORTHO}


async def test_demo_directory_lists_the_expired_role_but_not_in_network(
    live_directory: LiveDirectory, http: httpx.AsyncClient
) -> None:
    found = await demo_client(live_directory, http).providers_with_specialty([ORTHO], today=TODAY)

    in_network = {role_id(p.role_reference): p.in_network for p in found}
    assert in_network == {
        "okafor-role": True,
        "patel-role": True,
        "garcia-role": True,
        "patel-old-role": False,
    }


async def test_demo_directory_paging_is_followed(
    live_directory: LiveDirectory, http: httpx.AsyncClient
) -> None:
    data = live_directory.data
    seen: list[httpx.URL] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.url)

    http.event_hooks["request"] = [record]
    codes = {
        coding["code"]
        for role in data["PractitionerRole"].values()
        for concept in role.get("specialty") or []
        for coding in concept.get("coding") or []
    }
    expected = sorted(id for id, r in data["PractitionerRole"].items() if r.get("active", True))
    assert len(expected) > PAGE_SIZE, "the demo data no longer needs a second page"

    found = await demo_client(live_directory, http, page_size=PAGE_SIZE).providers_with_specialty(
        codes, today=TODAY
    )

    assert sorted(role_id(p.role_reference) for p in found) == expected
    pages = -(-len(expected) // PAGE_SIZE)
    assert len(seen) == pages
    assert [u.params.get("_offset") for u in seen] == [
        None,
        *(str(PAGE_SIZE * n) for n in range(1, pages)),
    ]
    # Every page carried the included practitioners and endpoints the roles on it name.
    for provider in found:
        id = role_id(provider.role_reference)
        assert provider.npi is not None
        assert provider.fhir_endpoint == endpoint_address(data, id, live_directory.root)
    # The same directory answers the in-network question consistently with the full listing.
    in_network = await demo_client(live_directory, http).in_network_providers(codes, today=TODAY)
    assert sorted(role_id(p.role_reference) for p in in_network) == sorted(
        role_id(p.role_reference) for p in found if p.in_network
    )


async def test_demo_directory_roles_by_npi_and_provider(
    live_directory: LiveDirectory, http: httpx.AsyncClient
) -> None:
    patel_npi = live_directory.data["Practitioner"]["patel"]["identifier"][0]["value"]
    client = demo_client(live_directory, http)

    roles = await client.roles_by_npi(patel_npi, today=TODAY)
    provider = await client.provider("Practitioner/patel", today=TODAY)
    by_url = await client.provider(
        f"{live_directory.demo}/PractitionerRole/okafor-role", today=TODAY
    )

    assert {role_id(p.role_reference): p.in_network for p in roles} == {
        "patel-role": True,
        "patel-old-role": False,
    }
    assert provider is not None
    assert role_id(provider.role_reference) == "patel-role"
    assert by_url is not None
    assert by_url.in_network is True
    assert by_url.fhir_endpoint == endpoint_address(
        live_directory.data, "okafor-role", live_directory.root
    )


# -- directories that misbehave ------------------------------------------------------------------


async def test_a_slow_directory_is_unavailable_within_a_bounded_time(
    live_directory: LiveDirectory,
) -> None:
    before = live_directory.hits["slow"]
    async with httpx.AsyncClient(timeout=0.5) as http:
        client = DirectoryClient(
            http,
            f"{live_directory.root}/slow/fhir",
            network=NETWORK,
            attempts=2,
            backoff_seconds=0.001,
        )
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailableError, match="Timeout"):
            await client.in_network_providers([ORTHO], today=TODAY)
        elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 5
    assert live_directory.hits["slow"] - before == 2


@pytest.mark.parametrize(
    ("route", "problem"), [("broken", "HTTP 500"), ("html", "not a FHIR Bundle")]
)
async def test_a_failing_directory_is_unavailable_after_every_attempt(
    live_directory: LiveDirectory, http: httpx.AsyncClient, route: str, problem: str
) -> None:
    before = live_directory.hits[route]
    client = DirectoryClient(
        http,
        f"{live_directory.root}/{route}/fhir",
        network=NETWORK,
        attempts=3,
        backoff_seconds=0.001,
    )

    with pytest.raises(DirectoryUnavailableError, match=problem):
        await client.in_network_providers([ORTHO], today=TODAY)

    assert live_directory.hits[route] - before == 3


@pytest.mark.parametrize("cache_seconds", [0, 60], ids=["uncached", "cached"])
async def test_an_endlessly_paging_directory_is_unavailable(
    live_directory: LiveDirectory, http: httpx.AsyncClient, cache_seconds: float
) -> None:
    before = live_directory.hits["endless"]
    client = DirectoryClient(
        http,
        f"{live_directory.root}/endless/fhir",
        network=NETWORK,
        backoff_seconds=0.001,
        max_pages=5,
        cache_seconds=cache_seconds,
    )

    with pytest.raises(DirectoryUnavailableError, match="paging"):
        await asyncio.wait_for(client.in_network_providers([ORTHO], today=TODAY), timeout=5)

    served = live_directory.hits["endless"] - before
    assert 1 <= served <= 2
    if cache_seconds == 0:
        assert served == 2  # the repeating next link is noticed at once


async def test_an_unreachable_directory_is_unavailable(http: httpx.AsyncClient) -> None:
    # A port that is bound but not listening refuses connections.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        client = DirectoryClient(
            http,
            f"http://127.0.0.1:{port}/fhir",
            network=NETWORK,
            attempts=2,
            backoff_seconds=0.001,
        )
        with pytest.raises(DirectoryUnavailableError, match="ConnectError"):
            await client.in_network_providers([ORTHO], today=TODAY)
