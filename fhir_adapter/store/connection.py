"""The connection the parts of one SQL transaction share: every statement goes through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fhir_adapter.store.driver_reads import DriverStatements


class SqlConnection:
    """One connection inside one transaction, shared by the transaction's parts.

    Before each statement the resources part writes the inserts it queued (`queued`, written by
    `write_queued`, with the jobs part's `queued_jobs`), so that a statement of any part may
    read or reference them.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        read_only: bool = False,
        estimates: dict[Any, tuple[int, float]] | None = None,
        driver_statements: DriverStatements | None = None,
    ) -> None:
        self.conn = conn
        # The store's recent planner estimates of large totals (store/search_sql.py), shared by
        # its transactions: {search: (estimate, when)}.
        self.estimates: dict[Any, tuple[int, float]] = {} if estimates is None else estimates
        self.read_only = read_only  # each statement on its own: nothing here may write
        # A PostgreSQL read's SELECTs, run by asyncpg itself (store/driver_reads.py)
        self.driver_statements = driver_statements if read_only else None
        self._driver: Any = None  # the asyncpg connection under `conn`, once asked for
        self.is_postgres = conn.dialect.name == "postgresql"
        self.queued: list[dict[str, Any]] = []
        # PostgreSQL: workflow jobs and outbox items added here, written by the same statement
        # as the resources (store/row_batches.py). Outbox items wait for the next outbox
        # statement or the commit, jobs for the next statement.
        self.queued_jobs: list[dict[str, Any]] = []
        self.queued_outbox: list[dict[str, Any]] = []
        self.write_queued: Callable[[], Awaitable[None]] | None = None

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Run a statement, after the queued inserts (which it may read or reference)."""
        if (self.queued or self.queued_jobs) and self.write_queued is not None:
            await self.write_queued()
        return await self.execute_before_queued(statement, parameters)

    async def execute_before_queued(self, statement: Any, parameters: Any = None) -> Any:
        """Run a statement that neither reads nor references the queued inserts: they wait,
        to go in with one INSERT."""
        if self.read_only and not getattr(statement, "is_select", False):
            raise RuntimeError("a read-only transaction cannot write")
        return await self.conn.execute(statement, parameters)

    async def rows(
        self, statement: Any, parameters: Mapping[str, Any] | None = None, *, queued: bool = True
    ) -> Sequence[Any]:
        """The rows of a SELECT, each unpacked or indexed by position (a SQLAlchemy Row or, on a
        PostgreSQL read, an asyncpg Record: never by attribute). `queued=False` runs it before
        the queued inserts, as `execute_before_queued` does."""
        driven = self.driver_statements.get(statement) if self.driver_statements else None
        if driven is None:
            run = self.execute if queued else self.execute_before_queued
            return (await run(statement, parameters)).all()  # type: ignore[no-any-return]
        if self._driver is None:
            self._driver = (await self.conn.get_raw_connection()).driver_connection
        try:
            return await self._driver.fetch(driven.sql, *driven.arguments(parameters or {}))  # type: ignore[no-any-return]
        except BaseException:
            # A read that failed or was cancelled midway (the client went away) leaves its
            # connection out of the pool, which opens another: after a server that closed it,
            # asyncpg can fail the next statement before it knows the connection is closed.
            await self.conn.invalidate()
            raise
