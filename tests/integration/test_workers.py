"""Background work is claimed through the database: several workers, crashes and restarts lose
nothing and do nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import DIRECTORY_BASE
from tests.factories import example_request
from tests.fakes import FrozenClock, SwitchableTransport


@pytest.fixture
async def second_engine(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Another process's view of the same database: its own engine and connection pool."""
    other = create_engine(database_url)
    yield other
    await other.dispose()


@pytest.fixture
def transport(directory_app: FastAPI) -> SwitchableTransport:
    return SwitchableTransport(httpx.ASGITransport(app=directory_app))


async def make_container(
    settings: Settings,
    engine: AsyncEngine,
    transport: SwitchableTransport,
    clock: FrozenClock,
    http: httpx.AsyncClient,
) -> Container:
    directory = DirectoryClient(
        http,
        DIRECTORY_BASE,
        network="Organization/medi-cal-network",
        backoff_seconds=0.001,
        cache_seconds=0,
    )
    return await build_container(
        settings,
        store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
        directory=directory,
        clock=clock,
    )


async def task_statuses(container: Container) -> list[str]:
    query = container.resources.parse_query(
        "Task", [("code", "http://hl7.org/fhir/CodeSystem/task-code|fulfill"), ("_count", "500")]
    )
    page = await container.resources.search(query)
    return sorted(r.content["status"] for r in page.matches)


async def claim_responses(container: Container) -> int:
    query = container.resources.parse_query("ClaimResponse", [("_summary", "count")])
    return (await container.resources.search(query)).total


async def test_pended_requests_survive_a_restart(
    settings: Settings,
    engine: AsyncEngine,
    second_engine: AsyncEngine,
    transport: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    async with httpx.AsyncClient(transport=transport, base_url="http://directory.test") as http:
        first = await make_container(settings, engine, transport, clock, http)
        transport.down = True
        for i in range(5):
            await first.bundles.process(example_request("in-network-specialist-care", f"-r{i}"))
        assert await task_statuses(first) == ["on-hold"] * 5
        # The process goes away; a new one starts on the same database with the directory back.
        transport.down = False
        restarted = await make_container(settings, second_engine, transport, clock, http)
        clock.advance(hours=1)
        while await restarted.workflow.run_due_jobs():
            pass
        assert await task_statuses(restarted) == ["accepted"] * 5
        assert await claim_responses(restarted) == 5


async def test_two_workers_expire_each_overdue_request_once(
    settings: Settings,
    engine: AsyncEngine,
    second_engine: AsyncEngine,
    transport: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    async with httpx.AsyncClient(transport=transport, base_url="http://directory.test") as http:
        one = await make_container(settings, engine, transport, clock, http)
        two = await make_container(settings, second_engine, transport, clock, http)
        for i in range(12):
            await one.bundles.process(example_request("review", f"-w{i}"))
        assert await task_statuses(one) == ["on-hold"] * 12
        clock.advance(days=8)
        counts = await asyncio.gather(
            one.workflow.expire_overdue(limit=5),
            two.workflow.expire_overdue(limit=5),
            one.workflow.expire_overdue(limit=5),
            two.workflow.expire_overdue(limit=5),
        )
        assert sum(counts) == 12
        assert await task_statuses(one) == ["rejected"] * 12
        assert await claim_responses(one) == 12  # each request's ClaimResponse updated, none added
        assert await one.workflow.expire_overdue() == 0 and await two.workflow.expire_overdue() == 0


async def test_a_crashed_workers_lease_runs_out_and_another_takes_over(
    settings: Settings,
    engine: AsyncEngine,
    second_engine: AsyncEngine,
    transport: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    async with httpx.AsyncClient(transport=transport, base_url="http://directory.test") as http:
        one = await make_container(settings, engine, transport, clock, http)
        transport.down = True
        await one.bundles.process(example_request("out-of-network", "-lease"))
        transport.down = False
        clock.advance(hours=1)
        # A worker claims the job, then dies before it finishes.
        async with one.store.transaction() as tx:
            claimed = await tx.jobs.claim(
                now=clock(), lease_until=clock() + timedelta(minutes=2), limit=10
            )
        assert len(claimed) == 1
        survivor = await make_container(settings, second_engine, transport, clock, http)
        assert await survivor.workflow.run_due_jobs() == 0  # still leased
        clock.advance(minutes=3)
        assert await survivor.workflow.run_due_jobs() == 1
        assert await task_statuses(survivor) == ["accepted"]
