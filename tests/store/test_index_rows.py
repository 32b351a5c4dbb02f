"""The search index rows have no foreign key to their resource (migration 0010): what the key
guarded, the store keeps by itself. Every index row belongs to a stored resource, and holds what
the current version of that resource indexes: nothing of a replaced version, nothing of a
transaction that rolled back. On SQLite and PostgreSQL, and across the migration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.errors import ConflictError
from fhir_adapter.fhir.search_index import index_rows
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import current_revision, upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import (
    INDEX_TABLES,
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)
from tests.conftest import BASE_URL, new_postgres_database
from tests.store import test_search_shapes as search_shapes

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def task(id: str, patient: str, status: str) -> dict[str, Any]:
    """A Task with a token, a reference and a date to index (and a code, another token)."""
    return {**search_shapes.task(id, patient, status, "a"), "authoredOn": "2026-12-01T09:00:00Z"}


def organization(id: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": id, "name": name}


async def stored_index(engine: AsyncEngine) -> dict[str, set[tuple[Any, ...]]]:
    """Every index row, by the `Type/id` of the resource its key names (None: no such resource)."""
    found: dict[str, set[tuple[Any, ...]]] = {}
    columns = {
        search_token: ("param", "system", "code"),
        search_reference: ("param", "target_type", "target_id", "url"),
        search_date: ("param", "low", "high"),
        search_string: ("param", "value"),
    }
    async with engine.connect() as conn:
        for table, names in columns.items():
            owner = resources.c.resource_type + "/" + resources.c.id
            statement = select(owner, *(table.c[name] for name in names)).select_from(
                table.outerjoin(resources, resources.c.pk == table.c.resource_pk)
            )
            for key, *values in (await conn.execute(statement)).all():
                found.setdefault(key, set()).add((table.name, *values))
    return found


def expected_index(*contents: dict[str, Any]) -> dict[str, set[tuple[Any, ...]]]:
    """What the index of these current versions should hold."""
    expected: dict[str, set[tuple[Any, ...]]] = {}
    for content in contents:
        rows = index_rows(content, base_url=BASE_URL)
        key = f"{content['resourceType']}/{content['id']}"
        entries = expected.setdefault(key, set())
        entries.update(("search_token", *row) for row in rows.tokens)
        entries.update(("search_reference", *row) for row in rows.references)
        entries.update(("search_date", *row) for row in rows.dates)
        entries.update(("search_string", *row) for row in rows.strings)
    return expected


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[SqlResourceStore]:
    yield SqlResourceStore(engine, base_url=BASE_URL)


async def test_index_rows_belong_to_current_versions_only(
    store: SqlResourceStore, engine: AsyncEngine
) -> None:
    async with store.transaction() as tx:  # a batch of inserts in one transaction
        for n in range(3):
            await tx.resources.insert(task(f"t{n}", f"p{n}", "requested"), now=T0)
        await tx.resources.insert(organization("o1", "North Clinic"), now=T0)
    async with store.transaction() as tx:  # a replace changes what is indexed
        current = await tx.resources.read_for_update("Task", "t1")
        assert current is not None
        await tx.resources.replace(
            current, task("t1", "p9", "completed"), now=T0 + timedelta(minutes=1)
        )
    with pytest.raises(RuntimeError, match="boom"):  # a rolled-back insert leaves no rows
        async with store.transaction() as tx:
            await tx.resources.insert(task("t-lost", "p7", "requested"), now=T0)
            await tx.resources.flush()
            raise RuntimeError("boom")
    with pytest.raises(ConflictError):  # so does a refused one
        async with store.transaction() as tx:
            await tx.resources.insert(task("t3", "p8", "requested"), now=T0)
            await tx.resources.insert(task("t0", "p8", "cancelled"), now=T0)

    assert await stored_index(engine) == expected_index(
        task("t0", "p0", "requested"),
        task("t1", "p9", "completed"),
        task("t2", "p2", "requested"),
        organization("o1", "North Clinic"),
    )


async def test_the_index_tables_have_no_foreign_key_and_the_history_keeps_its_own(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        keys = await conn.run_sync(
            lambda sync: {
                name: inspect(sync).get_foreign_keys(name)
                for name in ("resource_versions", *(t.name for t in INDEX_TABLES))
            }
        )
    assert {name for name, found in keys.items() if found} == {"resource_versions"}
    assert keys["resource_versions"][0]["referred_table"] == "resources"


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: await conn.scalar(text(f"SELECT count(*) FROM {table.name}"))
            for table in INDEX_TABLES
        }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database no migration has run on yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
        return
    with new_postgres_database("fhir_adapter_migration") as url:
        yield url


async def test_the_migration_keeps_the_index_of_a_populated_database(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    try:
        await upgrade_database(engine, "0009")  # the keys still in place
        store = SqlResourceStore(engine, base_url=BASE_URL)
        async with store.transaction() as tx:
            for n in range(5):
                await tx.resources.insert(task(f"t{n}", f"p{n % 2}", "requested"), now=T0)
        before, counted = await stored_index(engine), await row_counts(engine)

        await upgrade_database(engine)

        assert await current_revision(engine) == "0010"
        assert await stored_index(engine) == before
        assert await row_counts(engine) == counted  # no row copied twice or left behind
        async with store.transaction() as tx:  # and the store writes on after it
            await tx.resources.insert(task("t5", "p1", "requested"), now=T0)
        assert await stored_index(engine) == expected_index(
            *(task(f"t{n}", f"p{n % 2}", "requested") for n in range(6))
        )
    finally:
        await engine.dispose()
