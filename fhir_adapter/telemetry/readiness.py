"""`/readyz`: is this process fit to take traffic? The database answers, and its schema is at the
migration head this package ships (a process started before `fhir-adapter db upgrade` finished,
or a database migrated by a newer release, is not ready)."""

from __future__ import annotations

import asyncio
from functools import cache

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


@cache
def package_heads() -> frozenset[str]:
    """The Alembic head revision(s) in fhir_adapter/store/migrations (read once)."""
    from alembic.script import ScriptDirectory

    from fhir_adapter.store.migrate import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def problems(engine: AsyncEngine | None, *, timeout_seconds: float = 2.0) -> list[str]:
    """What is not ready, in short phrases without secrets; empty when ready. One statement."""
    if engine is None:
        return ["starting: the store is not open yet"]
    try:
        async with asyncio.timeout(timeout_seconds), engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except TimeoutError:
        return [f"database: no answer within {timeout_seconds:g} s"]
    except DBAPIError as exc:
        if _missing_table(exc):
            return ["migrations: the database has no schema yet (fhir-adapter db upgrade)"]
        return [f"database: unreachable ({type(exc.orig).__name__})"]
    except OSError as exc:
        return [f"database: unreachable ({type(exc).__name__})"]
    current = frozenset(row[0] for row in rows)
    heads = package_heads()
    if current != heads:
        return [
            f"migrations: the database is at {_names(current)}, this release needs "
            f"{_names(heads)} (fhir-adapter db upgrade)"
        ]
    return []


def _names(revisions: frozenset[str]) -> str:
    return ", ".join(sorted(revisions)) or "no revision"


def _missing_table(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == "42P01" or "no such table" in str(exc.orig)
