"""SQLite: a write transaction's statements run on the event loop, what can wait runs on
aiosqlite's thread (store/sqlite_driver.py). These tests hold the driver to that split: where
each statement ran, that a writer waiting for another process's write lock leaves the event loop
free, and that a statement failing in place leaves a connection the next writer can use."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.sqlite_driver import IN_PLACE_MAX_VALUES, WriterInPlaceConnection
from tests.conftest import BASE_URL

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def task(id: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": id, "status": "requested", "intent": "order"}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "fhir.db"


@pytest.fixture
async def store(database: Path) -> AsyncIterator[SqlResourceStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await upgrade_database(engine)
    store = SqlResourceStore(engine, base_url=BASE_URL)
    yield store
    await store.close()


@pytest.fixture
async def traced(store: SqlResourceStore) -> list[tuple[str, str]]:
    """Each SQL statement SQLite runs from now on, with where it ran: "loop" or "thread"."""
    loop_thread = threading.get_ident()
    seen: list[tuple[str, str]] = []

    def trace(sql: str) -> None:
        where = "loop" if threading.get_ident() == loop_thread else "thread"
        seen.append((where, " ".join(sql.split()).split(" (")[0]))

    @event.listens_for(store.engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection._connection._conn.set_trace_callback(trace)

    await store.engine.dispose()  # the migration's pooled connections: closed, so all are traced
    return seen


async def test_the_engine_connects_through_the_in_place_driver(store: SqlResourceStore) -> None:
    async with store.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, WriterInPlaceConnection)


async def test_a_writers_statements_run_on_the_loop_its_begin_and_commit_on_the_thread(
    store: SqlResourceStore, traced: list[tuple[str, str]]
) -> None:
    async with store.transaction() as tx:
        await tx.resources.insert(task("t1"), now=NOW)
    written = list(traced)
    traced.clear()
    async with store.transaction(write=False) as tx:
        assert (await tx.resources.read("Task", "t1")) is not None
    read = list(traced)

    assert ("thread", "BEGIN IMMEDIATE") in written
    assert written[-1] == ("thread", "COMMIT")
    inserts = [(where, sql) for where, sql in written if sql.startswith("INSERT")]
    assert inserts, written
    assert {where for where, _ in inserts} == {"loop"}
    begin = written.index(("thread", "BEGIN IMMEDIATE"))
    assert all(where == "loop" for where, _ in written[begin + 1 : -1]), written
    # a read's statements can wait (a long search): they all stay on the thread
    assert read and {where for where, _ in read} == {"thread"}, read


async def test_a_bulk_write_goes_to_the_thread_and_a_small_one_stays_on_the_loop(
    store: SqlResourceStore, traced: list[tuple[str, str]]
) -> None:
    """A batch as large as the audit trail's (hundreds of resources in one transaction) would
    hold up the event loop for tens of milliseconds: its statements run on the thread."""
    bulk = IN_PLACE_MAX_VALUES // 5 + 1  # five values a resource row: one more than in place
    async with store.transaction() as tx:
        for n in range(bulk):
            await tx.resources.insert(task(f"bulk{n}"), now=NOW)
    written = list(traced)
    traced.clear()
    async with store.transaction() as tx:
        for n in range(bulk - 2):
            await tx.resources.insert(task(f"small{n}"), now=NOW)
    small = list(traced)

    assert ("thread", "INSERT INTO resources") in written, written
    assert ("loop", "INSERT INTO resources") not in written
    assert ("loop", "INSERT INTO resources") in small, small
    async with store.transaction(write=False) as tx:
        assert (await tx.resources.read("Task", f"bulk{bulk - 1}")) is not None


async def test_a_writer_waiting_for_another_process_leaves_the_loop_free(
    store: SqlResourceStore, database: Path
) -> None:
    """Another process holds the write lock: the writer waits on aiosqlite's thread (SQLite's
    busy timeout) while the event loop goes on answering; it writes once the lock is free."""
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with store.transaction() as tx:
            await tx.resources.insert(task("waited"), now=NOW)

    writer = asyncio.create_task(write())
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writer.done()  # still waiting for the lock...
    assert ticks == 20  # ...and the loop was never held up by it
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writer, timeout=10)

    async with store.transaction(write=False) as tx:
        assert (await tx.resources.read("Task", "waited")) is not None


async def test_a_statement_failing_in_place_rolls_back_and_the_next_writer_goes_on(
    store: SqlResourceStore, traced: list[tuple[str, str]]
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE probe (n INTEGER PRIMARY KEY)"))

    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(text("INSERT INTO probe VALUES (1)"))
            await conn.execute(text("INSERT INTO probe VALUES (1)"))
    assert ("thread", "ROLLBACK") in traced

    async with store.engine.begin() as conn:
        await conn.execute(text("INSERT INTO probe VALUES (2)"))
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT n FROM probe"))).scalars().all()
        driver = (await conn.get_raw_connection()).driver_connection
    assert rows == [2]  # the failed transaction's first row went with it
    assert driver.holds_write_lock is False  # the pool gave back a connection that is not writing
