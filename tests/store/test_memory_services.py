"""The services on the in-memory store: the whole second-opinion path (intake, evaluation with
the directory, the decision, the outbox, search and history), without a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from tests.conftest import BASE_URL
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.memory_store import MemoryStore
from tests.tokens import bearer


@pytest.fixture
async def memory_container(
    tmp_path: Path, directory: DirectoryClient, clock: FrozenClock
) -> AsyncIterator[Container]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",  # never opened
        base_url=BASE_URL,
        subscription_allowed_hosts="127.0.0.1,payer.test",
    )
    store = MemoryStore(base_url=settings.fhir_base_url)
    built = await build_container(settings, store=store, directory=directory, clock=clock)
    yield built
    await built.audit.close()


@pytest.fixture
async def memory_client(memory_container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container=memory_container))
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE_URL,
        headers={"content-type": "application/fhir+json", **bearer(memory_container)},
    ) as client:
        yield client


async def test_a_request_is_decided_on_the_memory_store(memory_client: httpx.AsyncClient) -> None:
    response = await memory_client.post(
        "", json=example_request("in-network-specialist-care", "-m")
    )
    assert response.status_code == 200, response.text
    found = (await memory_client.get("/Task", params={"status": "accepted"})).json()
    [task] = [e["resource"] for e in found["entry"]]
    decision = await memory_client.get(task["output"][0]["valueReference"]["reference"])
    assert decision.json()["outcome"] == "complete"
    history = (await memory_client.get(f"/Task/{task['id']}/_history")).json()
    assert history["total"] >= 2
    again = await memory_client.post("", json=example_request("in-network-specialist-care", "-m"))
    assert again.status_code == 200  # a resubmission is the same request
    assert (
        len((await memory_client.get("/Task", params={"status": "accepted"})).json()["entry"]) == 1
    )
