"""SqlResourceStore: the resource store on SQLAlchemy 2 (async), SQLite or PostgreSQL by URL.

A transaction is made of parts sharing one connection: `resources` (store/resources.py, with
search in store/search_sql.py), `jobs` and `outbox` (store/queues.py), `events`
(store/events.py) and `auth` (store/auth.py). The engine comes from store/engine.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fhir_adapter.store.auth import SqlAuth
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.driver_reads import DriverStatements
from fhir_adapter.store.engine import read_engine
from fhir_adapter.store.events import SqlEvents
from fhir_adapter.store.queues import SqlJobs, SqlOutbox
from fhir_adapter.store.resources import SqlResources


class SqlResourceStore:
    """Implements ports.store.ResourceStore on an AsyncEngine."""

    def __init__(self, engine: AsyncEngine, *, base_url: str | None = None) -> None:
        self.engine = engine
        self.base_url = base_url
        # SQLite takes one writer at a time. Queue this process's writers here, in order, rather
        # than in SQLite's busy handler, whose growing sleeps turn a queue into long stalls.
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # PostgreSQL: reads on a pool of AUTOCOMMIT connections (store/engine.py)
        self.read_engine = read_engine(engine)
        # ... whose SELECTs asyncpg runs itself, each compiled once (store/driver_reads.py)
        self.driver_statements = (
            DriverStatements(self.read_engine.dialect) if self.read_engine is not None else None
        )
        self.work_queued = asyncio.Event()  # set on the commit of outbox work: wakes the worker
        self.estimates: dict[Any, tuple[int, float]] = {}  # recent estimated totals (search_sql)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[SqlTransaction]:
        if write and self._writers is not None:
            async with self._writers, self._transaction(write) as tx:
                yield tx
        else:
            async with self._transaction(write) as tx:
                yield tx

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[SqlTransaction]:
        if not write and self.read_engine is not None:
            # Issue #18: under PostgreSQL's READ COMMITTED each statement sees its own
            # snapshot, in a transaction or not; BEGIN and COMMIT would only add two round
            # trips to a read.
            async with self.read_engine.connect() as conn:
                tx = SqlTransaction(
                    conn,
                    base_url=self.base_url,
                    read_only=True,
                    estimates=self.estimates,
                    driver_statements=self.driver_statements,
                )
                yield tx
                if tx.resources.pending():
                    raise RuntimeError("a read-only transaction cannot write")
            return
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(fhir_write=write)
            async with conn.begin():
                tx = SqlTransaction(conn, base_url=self.base_url, estimates=self.estimates)
                yield tx
                await tx.resources.flush()
                await tx.outbox.flush()
            if tx.outbox.queued:  # committed: this process's worker starts on it now
                self.work_queued.set()

    async def close(self) -> None:
        await self.engine.dispose()


class SqlTransaction:
    """Implements ports.store.StoreTransaction: its parts share one connection inside one
    transaction."""

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        base_url: str | None,
        read_only: bool = False,
        estimates: dict[Any, tuple[int, float]] | None = None,
        driver_statements: DriverStatements | None = None,
    ) -> None:
        self.db = SqlConnection(
            conn, read_only=read_only, estimates=estimates, driver_statements=driver_statements
        )
        self.resources = SqlResources(self.db, base_url=base_url)
        self.jobs = SqlJobs(self.db)
        self.outbox = SqlOutbox(self.db)
        self.events = SqlEvents(self.db)
        self.auth = SqlAuth(self.db)
