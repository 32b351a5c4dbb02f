"""A store on each backend for the store contract: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import ALL_TABLES
from tests.conftest import BASE_URL
from tests.memory_store import MemoryStore


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Which store: "memory", or a database URL (resolved outside the event loop)."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ResourceStore]:
    """An empty store of each kind."""
    if store_url == "memory":
        yield MemoryStore(base_url=BASE_URL)
        return
    url = store_url
    engine = create_engine(url)
    await upgrade_database(engine)
    if engine.dialect.name == "postgresql":
        names = ", ".join(t.name for t in ALL_TABLES)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    sql = SqlResourceStore(engine, base_url=BASE_URL)
    yield sql
    await sql.close()
