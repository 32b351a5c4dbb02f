"""The database engine: an async SQLAlchemy engine for SQLite or PostgreSQL, by URL.

PostgreSQL's pool pings connections that sat idle; SQLite gets WAL, a busy timeout and real
transactions (writers BEGIN IMMEDIATE and queue up, readers never block).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhir_adapter.store import sqlite_driver


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL, a busy timeout and real transactions."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
            connect_args={"async_creator_fn": sqlite_driver.connect},
        )
        _make_sqlite_transactional(engine)
        return engine
    engine = _postgres_engine(url, echo=echo, pool_size=WRITE_POOL[0], max_overflow=WRITE_POOL[1])
    _ping_when_idle(engine)
    return engine


# Issue #18: PostgreSQL reads have a pool of their own whose connections are AUTOCOMMIT from the
# start; switching a pooled connection to AUTOCOMMIT and back around each read was a sixth of a
# read's CPU. The two pools split the 20 connections one pool had before (10, plus 10 under
# load), as docs/operations.md says: 10 each, kept open, with no overflow, because an overflow
# connection is closed when it comes back to a full pool, and opening connections again and
# again under a steady load of 8 cost more than the switch saved. (pool_size, max_overflow):
WRITE_POOL = (10, 0)
READ_POOL = (10, 0)
_read_engines: weakref.WeakKeyDictionary[Any, AsyncEngine] = weakref.WeakKeyDictionary()


def read_engine(engine: AsyncEngine) -> AsyncEngine | None:
    """The AUTOCOMMIT engine for `engine`'s PostgreSQL database (one per engine, made on first
    use, disposed with it); None for SQLite, whose reads stay in transactions."""
    if engine.dialect.name != "postgresql":
        return None
    reads = _read_engines.get(engine.sync_engine)
    if reads is None:
        reads = _postgres_engine(
            engine.url,
            echo=engine.echo,
            pool_size=READ_POOL[0],
            max_overflow=READ_POOL[1],
            isolation_level="AUTOCOMMIT",
        )
        _ping_when_idle(reads)
        _read_engines[engine.sync_engine] = reads
        sync_reads = reads.sync_engine

        @event.listens_for(engine.sync_engine, "engine_disposed")
        def _dispose_reads(_engine: Any) -> None:  # in dispose's greenlet: it may close them
            sync_reads.dispose()

    return reads


def _postgres_engine(url: Any, *, echo: bool, **pool: Any) -> AsyncEngine:
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,  # SQL errors must never carry patient data into logs
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"plan_cache_mode": CUSTOM_PLANS}},
        **pool,
    )


# Each statement is planned for its own values. The stored resources are skewed by type (an
# AuditEvent for every read outnumbers everything else), and a prepared statement's generic plan,
# costed for an average type, scanned the table in order for `Task?_count=50`'s count and read
# every AuditEvent to find the few Tasks (40 ms instead of 0.2 ms, docs/performance.md).
CUSTOM_PLANS = "force_custom_plan"


# A pooled connection unused this long is pinged before it is handed out (issue #18). SQLAlchemy's
# `pool_pre_ping` pings at every checkout: a round trip as long as the read it precedes. A busy
# pool's connections are seconds old at most; a connection a restarted or failed-over server
# dropped while idle is found here, and one dropped under load fails its statement, after which
# SQLAlchemy discards the whole pool.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:  # the pool drops it and checks out another
            raise DisconnectionError("an idle pooled connection no longer answers")


def _make_sqlite_transactional(engine: AsyncEngine) -> None:
    """Take over BEGIN from the sqlite3 driver so transactions are real and writers queue up.

    Writers open with BEGIN IMMEDIATE: they wait (busy_timeout) instead of failing when another
    writer holds the database, and then run their statements in place (`sqlite_driver`).
    Readers use a deferred BEGIN and never block under WAL.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("fhir_write", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            sqlite_driver.began_writing(connection.connection.dbapi_connection)
        else:
            connection.exec_driver_sql("BEGIN")
