"""SQLite through aiosqlite, with a write transaction's statements run on the event loop.

aiosqlite runs every call (make a cursor, execute, fetch, close) on a thread of its own and hands
the result back through the event loop, and SQLAlchemy's adapter makes three or four such calls
a statement. The hand-offs, not SQLite, were most of a submission's SQL: 9.4 to 10.1 ms of CPU on
aiosqlite's thread a submission before, 2.7 after (docs/performance.md, "SQLite: a writer's
statements on the event loop").

Once a connection holds SQLite's write lock (its BEGIN IMMEDIATE has returned) nothing it runs
can wait for another connection: under WAL readers never block the writer, and every writer of
this process queues before BEGIN (`SqlResourceStore`'s lock). So its statements run in place,
on the event loop, and are done in microseconds. What can wait or take long stays on aiosqlite's
thread, where the event loop goes on meanwhile: BEGIN (it waits for another process's writer,
`busy_timeout`), COMMIT (it may checkpoint the WAL to disk), a bulk write (`IN_PLACE_MAX_VALUES`)
and every statement of a read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import aiosqlite

# aiosqlite's own: queue the call on the connection's thread and await its result
_on_thread: Callable[..., Awaitable[Any]] = aiosqlite.Connection._execute


class WriterInPlaceConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs a write transaction's calls in place (see the module)."""

    holds_write_lock = False

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        connection = self._connection
        if connection is None or not self._running:
            return await _on_thread(self, fn, *args, **kwargs)  # it raises "Connection closed"
        if fn == connection.commit or fn == connection.rollback:
            self.holds_write_lock = False
            if not connection.in_transaction:  # nothing to end: sqlite3 does nothing either
                return fn(*args, **kwargs)
            return await _on_thread(self, fn, *args, **kwargs)
        if self.holds_write_lock and connection.in_transaction and not _bulk(fn, args):
            return fn(*args, **kwargs)
        return await _on_thread(self, fn, *args, **kwargs)


# A call that carries more values than this is a bulk write (a batch of AuditEvents, up to 500 a
# transaction): SQLite's work on it takes tens of milliseconds, so it goes to the thread, where
# the event loop goes on meanwhile. A submission's largest statement carries 125.
IN_PLACE_MAX_VALUES = 1000


def _bulk(fn: Any, args: tuple[Any, ...]) -> bool:
    """Whether `fn(*args)` (cursor.execute or executemany with their parameters) is a bulk write."""
    if len(args) < 2 or args[1] is None:
        return False
    parameters = args[1]
    if not isinstance(parameters, Collection):
        return True  # an iterator of rows: no telling how many, so not in place
    if getattr(fn, "__name__", "") == "executemany":
        first = next(iter(parameters), ())
        return len(parameters) * max(len(first), 1) > IN_PLACE_MAX_VALUES
    return len(parameters) > IN_PLACE_MAX_VALUES


def connect(database: Any, *, iter_chunk_size: int = 64, **kwargs: Any) -> WriterInPlaceConnection:
    """What SQLAlchemy's aiosqlite dialect calls instead of `aiosqlite.connect` (its
    `async_creator_fn`): the same arguments, and a connection both threads may use, one at a time.
    """
    kwargs["check_same_thread"] = False
    location = database.decode() if isinstance(database, bytes) else str(database)

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return connection

    connection = WriterInPlaceConnection(connector, iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy sets it for aiosqlite's own connections
    return connection


def began_writing(dbapi_connection: Any) -> None:
    """Called once BEGIN IMMEDIATE has returned on `dbapi_connection` (SQLAlchemy's adapter):
    the connection holds the write lock until its COMMIT or ROLLBACK."""
    driver = getattr(dbapi_connection, "_connection", None)
    if isinstance(driver, WriterInPlaceConnection):
        driver.holds_write_lock = True
