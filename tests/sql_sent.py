"""What reaches the database, by either path a statement takes: SQLAlchemy's execution or, in a
PostgreSQL read, asyncpg itself (store/driver_reads.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def as_sent(statement: str, parameters: Any) -> Any:
    return (statement, parameters)


@contextmanager
def sql_sent(
    engines: list[AsyncEngine], keep: Callable[[str, Any], Any] = as_sent
) -> Iterator[list[Any]]:
    """Each statement that reaches PostgreSQL or SQLite through `engines` while inside, as
    `keep(statement, parameters)`: SQLAlchemy's, from its cursor events, and what asyncpg runs
    itself (a read's SELECT, store/driver_reads.py; BEGIN, COMMIT, a ping), from asyncpg's query
    logger, which logs only what it sends unprepared (SQLAlchemy prepares its statements: each
    statement is seen once)."""
    sent: list[Any] = []
    logged: list[Any] = []

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        raw = getattr(dbapi_connection, "_connection", None)  # asyncpg's, under the adapter
        if hasattr(raw, "add_query_logger") and raw not in logged:
            raw.add_query_logger(log_query)
            logged.append(raw)

    def log_query(record: Any) -> None:
        sent.append(keep(record.query, record.args))

    def on_cursor(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append(keep(statement, parameters))

    for each in engines:
        event.listen(each.sync_engine.pool, "checkout", on_checkout)
        event.listen(each.sync_engine, "before_cursor_execute", on_cursor)
    try:
        yield sent
    finally:
        for each in engines:
            event.remove(each.sync_engine, "before_cursor_execute", on_cursor)
            event.remove(each.sync_engine.pool, "checkout", on_checkout)
        for raw in logged:
            raw.remove_query_logger(log_query)


def first_word(statement: str, _parameters: Any) -> str:
    return statement.split()[0].upper().rstrip(";")
