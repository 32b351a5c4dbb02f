"""Shared fixtures: a store on each backend, the app on top, and an HTTP client for it.

The `backend` fixture is parametrised over SQLite and PostgreSQL. PostgreSQL runs when
FHIR_ADAPTER_TEST_POSTGRES_URL is set (CI sets it); each test session creates its own database
there and drops it at the end. With FHIR_ADAPTER_TEST_REQUIRE_POSTGRES=1 a missing database is an
error, not a skip, so CI can never pass without running the PostgreSQL variant.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhir_adapter.api import handlers
from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container, demo_directory_file
from fhir_adapter.config import Settings
from fhir_adapter.demo.directory import directory_router, load_directory
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import ALL_TABLES, resources
from tests.fakes import FrozenClock
from tests.tokens import bearer

BASE_URL = "http://testserver/fhir"
POSTGRES_URL = os.environ.get("FHIR_ADAPTER_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("FHIR_ADAPTER_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with new_postgres_database("fhir_adapter_test") as url:
        yield url


@contextlib.contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database made for the caller (named `prefix`_...), dropped afterwards."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("FHIR_ADAPTER_TEST_POSTGRES_URL is not set but PostgreSQL is required")
        pytest.skip("FHIR_ADAPTER_TEST_POSTGRES_URL is not set")
    import asyncio

    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at {admin_url.host}:{admin_url.port} is required: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend; SQLite gets a new file per test."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine with empty tables."""
    engine = create_engine(database_url)
    await upgrade_database(engine)
    if engine.dialect.name == "postgresql":
        names = ", ".join(t.name for t in ALL_TABLES)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        base_url=BASE_URL,
        max_body_bytes=64 * 1024,
        max_bundle_entries=100,
        # issue #16: rest-hook receivers in tests are on loopback or in process over plain http
        subscription_allowed_hosts="127.0.0.1,payer.test",
    )


DIRECTORY_BASE = "http://directory.test/directory/fhir"


@pytest.fixture(scope="session")
def directory_app() -> FastAPI:
    """The demo directory as its own app, reached over (in-process) HTTP like a real one."""
    app = FastAPI()
    handlers.install(app)
    app.include_router(
        directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir"
    )
    return app


@pytest.fixture
async def directory(directory_app: FastAPI) -> AsyncIterator[DirectoryClient]:
    transport = httpx.ASGITransport(app=directory_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://directory.test") as http:
        yield DirectoryClient(
            http, DIRECTORY_BASE, network="Organization/medi-cal-network", backoff_seconds=0.001
        )


@pytest.fixture
def clock() -> FrozenClock:
    """Wednesday 2026-11-25 10:00 in California, the day before Thanksgiving."""
    return FrozenClock()


@pytest.fixture
async def container(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient, clock: FrozenClock
) -> AsyncIterator[Container]:
    store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
    built = await build_container(settings, store=store, directory=directory, clock=clock)
    yield built
    await built.audit.close()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in process (ASGI)."""
    app = create_app(container=container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE_URL,
        headers={
            "content-type": "application/fhir+json",
            "accept": "application/fhir+json",
            **bearer(container),
        },
    ) as client:
        yield client


async def count_rows(engine: AsyncEngine) -> dict[str, int]:
    """Rows in every table, to prove a rejected write stored nothing. The audit trail is left
    out: recording the refused request is its job, and it is written in the background."""
    audit_pks = select(resources.c.pk).where(resources.c.resource_type == "AuditEvent")
    counts = {}
    async with engine.connect() as conn:
        for table in ALL_TABLES:
            statement = select(func.count()).select_from(table)
            if table is resources:
                statement = statement.where(resources.c.resource_type != "AuditEvent")
            elif "resource_pk" in table.c:
                statement = statement.where(table.c.resource_pk.not_in(audit_pks))
            counts[table.name] = (await conn.execute(statement)).scalar_one()
    return counts
