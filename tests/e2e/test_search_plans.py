"""Issue #13: the searches benchmarks/search_scale.py times use the indexes added for them.

On PostgreSQL, with a few thousand Tasks and ClaimResponses written through the store and the
tables vacuumed and analysed, each search's statements are EXPLAINed as the store sent them: a
token search pages and counts by merging `ix_search_token_code_pk` with `ix_resources_type_pk`
(index-only, in key order), never reading every match's row; the lookups by patient and by
request use their reference index; a later page whose cursor carries the first page's total
sends its page alone; `_sort=-_lastUpdated` walks `ix_resources_type_updated_id` (migration
0008) on every page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.fhir.search import parse_search
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import new_postgres_database
from tests.sql_sent import sql_sent

STATUS = "https://fhir-adapter.org/fhir/CodeSystem/second-opinion-status"
OUTCOMES = [
    ("accepted", "approved-in-network"),
    ("rejected", "denied"),
    ("on-hold", "pending-review"),
]


def task(n: int) -> dict[str, Any]:
    status, business = OUTCOMES[n % len(OUTCOMES)]
    return {
        "resourceType": "Task",
        "id": f"t{n}",
        "status": status,
        "businessStatus": {"coding": [{"system": STATUS, "code": business}]},
        "intent": "order",
        "for": {"reference": f"Patient/p{n % 400}"},
        "output": [{"type": {"text": "decision"}, "valueReference": {"reference": f"ClaimResponse/c{n}"}}],
    }  # fmt: skip


def claim_response(n: int) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "id": f"c{n}",
        "status": "active",
        "use": "preauthorization",
        "patient": {"reference": f"Patient/p{n % 400}"},
        "request": {"reference": f"Claim/claim-{n}"},
        "outcome": "complete",
    }


async def load(engine: AsyncEngine, store: SqlResourceStore, count: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with store.transaction() as tx:
        for n in range(count):
            now = start + timedelta(minutes=n)
            await tx.resources.insert(task(n), now=now)
            await tx.resources.insert(claim_response(n), now=now)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        await conn.execute(text("VACUUM ANALYZE"))


async def plans_of(
    engine: AsyncEngine,
    store: SqlResourceStore,
    resource_type: str,
    params: list[Any],
    *,
    page: int = 1,
) -> list[str]:
    """The plan of every SELECT one search sends for its page `page` (reached by the cursors the
    pages before gave), as the store sent it (with its parameters)."""
    query = parse_search(resource_type, params, base_url=None, default_count=50, max_count=500)
    for _ in range(page - 1):
        async with store.transaction(write=False) as tx:
            query = replace(query, cursor=(await tx.resources.search(query)).next_cursor)
    reads = store.read_engine or engine  # reads have their own engine (issue #18)
    with sql_sent([reads]) as seen:
        async with store.transaction(write=False) as tx:
            assert (await tx.resources.search(query)).matches
    sent = [(sql, p) for sql, p in seen if sql.lstrip().upper().startswith("SELECT")]
    async with engine.connect() as conn:
        return [
            "\n".join(row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {sql}", parameters))
            for sql, parameters in sent
        ]


@pytest.fixture
def plans_database_url() -> Iterator[str]:
    """A database of its own: the plans depend on exactly the rows loaded here (and the session's
    database holds other tests' rows, some with these ids)."""
    with new_postgres_database("fhir_adapter_plans") as url:
        yield url


@pytest.mark.postgres
async def test_the_searches_at_scale_use_their_indexes(plans_database_url: str) -> None:
    engine = create_engine(plans_database_url)
    await upgrade_database(engine)
    store = SqlResourceStore(engine)
    try:
        await load(engine, store, 3000)
        status = await plans_of(engine, store, "Task", [("status", "accepted"), ("_count", "50")])
        business = await plans_of(
            engine, store, "Task", [("business-status", f"{STATUS}|denied"), ("_count", "50")]
        )
        # a later page of a cursor from before issue #13 (a bare key): the total counted again
        page = await plans_of(
            engine, store, "Task", [("status", "rejected"), ("_count", "50"), ("_cursor", "3000")]
        )
        # a later page of this server's cursor: the first page's total rides in it, no count
        carried = await plans_of(
            engine, store, "Task", [("status", "rejected"), ("_count", "50")], page=2
        )
        newest = await plans_of(
            engine,
            store,
            "Task",
            [("business-status", f"{STATUS}|denied"), ("_sort", "-_lastUpdated")],
        )
        newest_later = await plans_of(
            engine,
            store,
            "Task",
            [("business-status", f"{STATUS}|denied"), ("_sort", "-_lastUpdated")],
            page=2,
        )
        patient = await plans_of(engine, store, "Task", [("patient", "Patient/p7")])
        request = await plans_of(engine, store, "ClaimResponse", [("request", "Claim/claim-7")])
    finally:
        await engine.dispose()
    for plan in [*status, *business, *page]:
        assert "ix_search_token_code_pk" in plan, plan
        assert "Seq Scan" not in plan, plan
    # a page without a carried total counts in its own statement (at most EXACT_UP_TO + 1
    # matches: the default total is an estimate past that), from the indexes alone
    assert len(status) == 1 and len(page) == 1
    counted = page[0].split("InitPlan")[1]  # the count, before the page's own plan
    assert "ix_resources_type_pk" in counted and "Index Only Scan" in counted, counted
    assert len(carried) == 1 and "ix_search_token_code_pk" in carried[0], carried
    for plan in [*newest, *newest_later]:  # newest first along the index, no sort of every match
        assert "ix_resources_type_updated_id" in plan, plan
        assert "Seq Scan" not in plan, plan
    assert len(newest_later) == 1, newest_later
    for plan in [*patient, *request]:
        assert "ix_search_reference_lookup" in plan, plan
        assert "Seq Scan" not in plan, plan
