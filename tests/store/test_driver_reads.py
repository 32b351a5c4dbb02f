"""Issue #18: PostgreSQL reads run by asyncpg itself (store/driver_reads.py) answer exactly what
SQLAlchemy's execution answers, for every search shape the store builds and for a read by id;
statements SQLAlchemy must run still go through it; a connection that died under a driver read
never goes back to the pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Enum, Numeric, bindparam, event, func, select, text, type_coerce

from fhir_adapter.fhir.search import SearchCursor, SearchQuery, parse_search
from fhir_adapter.ports.store import SearchPage, StoredResource
from fhir_adapter.store.driver_reads import DriverStatements, compile_for_driver
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.resources import _CURRENT
from fhir_adapter.store.search_filters import query_shape
from fhir_adapter.store.search_sql import _built
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import UtcDateTime, resources
from tests.conftest import BASE_URL

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(postgres_database_url: str) -> AsyncIterator[SqlResourceStore]:
    engine = create_engine(postgres_database_url)
    await upgrade_database(engine)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE resources RESTART IDENTITY CASCADE"))
    sql = SqlResourceStore(engine, base_url=BASE_URL)
    async with sql.transaction() as tx:
        for n in range(12):
            patient = "p1" if n % 3 else "p2"
            at = T0 + timedelta(minutes=n // 2)  # pairs share an instant: ties in id order
            await tx.resources.insert(
                {
                    "resourceType": "ClaimResponse",
                    "id": f"c{n:02}",
                    "status": "active",
                    "use": "preauthorization",
                    "patient": {"reference": f"Patient/{patient}"},
                    "request": {"reference": f"Claim/claim{n}"},
                    "outcome": "complete",
                },
                now=at,
            )
            await tx.resources.insert(
                {"resourceType": "Claim", "id": f"claim{n}", "status": "active"}, now=at
            )
    yield sql
    await sql.close()


def claim_responses(*params: tuple[str, str]) -> SearchQuery:
    return parse_search(
        "ClaimResponse", params, base_url=BASE_URL, default_count=50, max_count=500, strict=True
    )


SHAPES = [
    (),
    (("_count", "5"),),
    (("patient", "p1"), ("_count", "3")),
    (("patient", "Patient/p2"), ("_lastUpdated", f"gt{T0:%Y-%m-%dT%H:%M:%SZ}")),
    (("_sort", "_lastUpdated"), ("_count", "4")),
    (("_sort", "-_lastUpdated"), ("_count", "4"), ("_total", "accurate")),
    (("_summary", "count"),),
    (("_count", "0"), ("_total", "accurate")),
    (("_total", "none"), ("_count", "7")),
    (("patient", "p1"), ("_include", "ClaimResponse:request"), ("_count", "2")),
]


def seen(page: SearchPage) -> tuple[Any, ...]:
    def each(found: list[StoredResource]) -> list[tuple[Any, ...]]:
        return [(r.resource_type, r.id, r.version_id, r.last_updated, r.content) for r in found]

    return (each(page.matches), each(page.included), page.total, page.total_estimated)


async def every_page(store: SqlResourceStore, query: SearchQuery) -> list[tuple[Any, ...]]:
    pages = []
    while True:
        async with store.transaction(write=False) as tx:
            page = await tx.resources.search(query)
        pages.append((*seen(page), str(page.next_cursor)))
        if page.next_cursor is None:
            return pages
        query = dataclasses.replace(query, cursor=page.next_cursor)


async def test_driver_reads_answer_what_sqlalchemy_answers(store: SqlResourceStore) -> None:
    assert store.driver_statements is not None
    for params in SHAPES:
        driven = await every_page(store, claim_responses(*params))
        driver_statements, store.driver_statements = store.driver_statements, None
        try:
            through_sqlalchemy = await every_page(store, claim_responses(*params))
        finally:
            store.driver_statements = driver_statements
        assert driven == through_sqlalchemy, params
        counting_only = ("_summary", "count") in params or ("_count", "0") in params
        assert bool(driven[0][0]) != counting_only, params  # matches, unless only counted
    for id in ("c03", "c11", "absent"):
        async with store.transaction(write=False) as tx:
            driven_read = await tx.resources.read("ClaimResponse", id)
        async with store.transaction() as tx:  # a write transaction: SQLAlchemy runs it
            read = await tx.resources.read("ClaimResponse", id)
        assert (driven_read is None) == (read is None) == (id == "absent")
        if read is not None and driven_read is not None:
            assert (driven_read.version_id, driven_read.last_updated, driven_read.content) == (
                read.version_id,
                read.last_updated,
                read.content,
            )
            assert driven_read.last_updated.tzinfo is not None


async def test_the_hot_statements_are_the_drivers_and_the_rest_stay_with_sqlalchemy(
    store: SqlResourceStore,
) -> None:
    dialect = store.engine.dialect
    paged = claim_responses(("patient", "p1"), ("_sort", "_lastUpdated"))
    first = await every_page(store, paged)
    assert len(first) == 1
    # a later page: its cursor's instant binds through UtcDateTime
    after = SearchCursor("_lastUpdated", last_updated=T0, id="c00", total=12, estimated=False)
    cursor_query = dataclasses.replace(paged, cursor=after)
    shape, values = query_shape(cursor_query)
    page = compile_for_driver(_built(shape).page(20, "estimate"), dialect)
    assert page is not None
    arguments = page.arguments(values)
    assert T0 in arguments  # the instant bound, converted to UTC-aware as SQLAlchemy binds it
    assert compile_for_driver(_CURRENT, dialect) is not None
    with pytest.raises(KeyError, match="p_id"):
        compile_for_driver(_CURRENT, dialect).arguments({"p_type": "ClaimResponse"})  # type: ignore[union-attr]
    # an IN list expands per execution; SQLAlchemy converts an Enum's and a Numeric's values
    assert (
        compile_for_driver(select(resources.c.id).where(resources.c.pk.in_([1, 2])), dialect)
        is None
    )
    assert (
        compile_for_driver(select(type_coerce(resources.c.id, Enum("c00", "c01"))), dialect) is None
    )
    assert compile_for_driver(select(type_coerce(resources.c.pk, Numeric())), dialect) is None
    # a JSON column is decoded by the codec SQLAlchemy gave the driver's connection: the same
    contents = select(resources.c.content).order_by(resources.c.pk)
    assert compile_for_driver(contents, dialect) is not None
    async with store.transaction(write=False) as tx:
        driven = [content for (content,) in await tx.db.rows(contents)]
    async with store.transaction() as tx:
        assert driven == [content for (content,) in await tx.db.rows(contents)]
    assert driven[0]["resourceType"] == "ClaimResponse"
    assert compile_for_driver(text("SELECT 1"), dialect) is None
    # a naive instant is refused by the same bind processor as on SQLAlchemy's path
    naive = select(resources.c.id).where(
        resources.c.last_updated > bindparam("at", type_=UtcDateTime())
    )
    with pytest.raises(ValueError, match="naive"):
        compile_for_driver(naive, dialect).arguments({"at": datetime(2026, 1, 1)})  # type: ignore[union-attr]


def test_each_statement_is_compiled_once_and_kept_with_its_statement() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/unused")
    statements = DriverStatements(engine.dialect)
    first = statements.get(_CURRENT)
    assert first is not None and statements.get(_CURRENT) is first
    copy = _CURRENT.where(resources.c.version_id > 0)
    assert statements.get(copy) is not first  # another statement: compiled for itself
    statements.KEPT = 2
    statements.get(select(resources.c.id))
    assert statements.get(_CURRENT) is not first  # dropped with the rest when full, then again


@pytest.fixture
def invalidated(store: SqlResourceStore) -> list[Any]:
    """The read pool's connections invalidated from here on (the pool opens others)."""
    assert store.read_engine is not None
    seen: list[Any] = []
    event.listen(store.read_engine.sync_engine.pool, "invalidate", lambda *args: seen.append(args))
    return seen


async def test_a_connection_that_died_under_a_driver_read_is_not_pooled_again(
    store: SqlResourceStore, invalidated: list[Any]
) -> None:
    # the server's "terminating connection", or the driver's "connection was closed" or
    # "another operation is in progress" (when the server's notice is still being read)
    with pytest.raises(
        (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    ):
        async with store.transaction(write=False) as tx:
            pid = (await tx.db.rows(select(text("pg_backend_pid()"))))[0][0]
            async with store.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await tx.resources.read("ClaimResponse", "c01")
    assert invalidated, "the dead connection was handed back to the pool"
    for _ in range(12):  # every pooled connection answers afterwards
        async with store.transaction(write=False) as tx:
            found = await tx.resources.read("ClaimResponse", "c01")
        assert found is not None and found.id == "c01"


async def test_a_driver_read_cancelled_midway_leaves_its_connection_out_of_the_pool(
    store: SqlResourceStore, invalidated: list[Any]
) -> None:
    started = asyncio.Event()

    async def slow_read() -> None:
        async with store.transaction(write=False) as tx:
            started.set()
            await tx.db.rows(select(func.pg_sleep(5)))

    reading = asyncio.create_task(slow_read())
    await started.wait()
    await asyncio.sleep(0.2)  # the statement is on the server
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert invalidated, "a connection with a cancelled statement went back to the pool"
    for _ in range(12):
        async with store.transaction(write=False) as tx:
            found = await tx.resources.read("ClaimResponse", "c02")
        assert found is not None and found.id == "c02"
