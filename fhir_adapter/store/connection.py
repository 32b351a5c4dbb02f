"""The connection the parts of one SQL transaction share: every statement goes through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


class SqlConnection:
    """One connection inside one transaction, shared by the transaction's parts.

    `before_statement` runs before each statement: the resources part writes the inserts it
    queued there, so that a statement of any part may read or reference them.
    """

    def __init__(self, conn: AsyncConnection, *, read_only: bool = False) -> None:
        self.conn = conn
        self.read_only = read_only  # each statement on its own: nothing here may write
        self.is_postgres = conn.dialect.name == "postgresql"
        self.before_statement: Callable[[], Awaitable[None]] | None = None

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Run a statement, after the queued inserts (which it may read or reference)."""
        if self.read_only and not getattr(statement, "is_select", False):
            raise RuntimeError("a read-only transaction cannot write")
        if self.before_statement is not None:
            await self.before_statement()
        return await self.conn.execute(statement, parameters)
