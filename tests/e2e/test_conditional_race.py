"""Optimistic conditional creates on PostgreSQL (issue #13): criteria are searched without a lock;
only those that matched nothing are locked and searched again. Two writers that both found
nothing still store the resource once: the one that loses the lock finds the winner's resource
with the search after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.access.guard import UNRESTRICTED
from fhir_adapter.ports.store import StoredResource
from fhir_adapter.services.resources import ResourceService, matches_locked, utc_now, with_meta
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL

pytestmark = pytest.mark.postgres

CRITERIA = "identifier=urn:race|1"
ORGANIZATION = {
    "resourceType": "Organization",
    "identifier": [{"system": "urn:race", "value": "1"}],
}


@pytest.fixture
async def engines(postgres_database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Three engines on one database, as separate processes would have: two writers, a watcher."""
    made = [create_engine(postgres_database_url) for _ in range(3)]
    await upgrade_database(made[0])
    async with made[0].begin() as conn:
        await conn.execute(text("TRUNCATE resources RESTART IDENTITY CASCADE"))
    yield made
    for engine in made:
        await engine.dispose()


async def lock_waiters(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        statement = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int((await conn.execute(text(statement))).scalar_one())


async def test_two_writers_that_both_found_nothing_store_the_resource_once(
    engines: list[AsyncEngine],
) -> None:
    first_store, second_store = (SqlResourceStore(e, base_url=BASE_URL) for e in engines[:2])
    service = ResourceService(first_store, base_url=BASE_URL)
    query = service.conditional_query("Organization", CRITERIA, UNRESTRICTED)
    searched = [asyncio.Event(), asyncio.Event()]
    locked = asyncio.Event()

    async def first() -> StoredResource:
        async with first_store.transaction() as tx:
            found = await tx.resources.matches([query])
            searched[0].set()
            await searched[1].wait()  # both searched before either created: both found nothing
            assert await matches_locked(tx, [query], found) == [[]]
            locked.set()
            now = utc_now()
            created = await tx.resources.insert(with_meta(ORGANIZATION, "winner", 1, now), now=now)
            for _ in range(1000):  # commit only once the other writer waits for the lock
                if await lock_waiters(engines[2]):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the second writer never waited for the lock")
        return created

    async def second() -> list[list[StoredResource]]:
        async with second_store.transaction() as tx:
            await searched[0].wait()
            found = await tx.resources.matches([query])
            searched[1].set()
            assert found == [[]]
            await locked.wait()
            return await matches_locked(tx, [query], found)  # waits for the first to commit

    created, after_lock = await asyncio.gather(first(), second())

    assert [[m.key for m in matches] for matches in after_lock] == [[created.key]]
    async with second_store.transaction(write=False) as tx:
        stored = await tx.resources.matches([query])
    assert [m.id for m in stored[0]] == ["winner"]


async def test_a_match_found_before_any_lock_is_used_as_it_is(engines: list[AsyncEngine]) -> None:
    """A resource stored before (the EHR's practitioners, in every submission) takes no lock:
    submissions do not queue behind one another for it."""
    store = SqlResourceStore(engines[0], base_url=BASE_URL)
    service = ResourceService(store, base_url=BASE_URL)
    created = await service.create("Organization", ORGANIZATION, if_none_exist=CRITERIA)
    async with store.transaction() as tx:
        await tx.db.conn.execute(text("SELECT 1"))  # the transaction has begun
        found = await service.find_conditional(tx, "Organization", CRITERIA)
        advisory_locks = [
            row[0]
            for row in await tx.db.conn.execute(
                text(
                    "SELECT locktype FROM pg_locks "
                    "WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
                )
            )
        ]

    assert found is not None and found.key == created.resource.key
    assert advisory_locks == []
