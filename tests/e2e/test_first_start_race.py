"""Issue #13: separately started instances on a new PostgreSQL database make one signing key and
one plan Organization between them (each first-start write waits on one advisory lock), and each
serves, accepting the tokens the other issues."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from fhir_adapter.config import Settings
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import auth_keys, resources
from tests.conftest import new_postgres_database
from tests.e2e.test_live_server import _server_env, free_port, start_server
from tests.e2e.test_serve_workers import wait_until_ready
from tests.tokens import fetch_token, register

pytestmark = [pytest.mark.postgres, pytest.mark.live]

PUBLIC = "http://adapter.test"  # the service's one public origin, in front of both instances
PLAN = ResourceKey.parse(Settings.model_fields["plan_organization"].default)  # the default plan

# Each process waits for the same wall-clock instant, then builds its container (migrations, the
# plan's Organization, the built-in issuer's key): the first-start writes all run at once.
STARTUP = """
import asyncio, sys, time
from fhir_adapter.bootstrap import build_container
from fhir_adapter.config import Settings

async def main():
    settings = Settings(database_url=sys.argv[1])
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    container = await build_container(settings)
    await container.aclose()

asyncio.run(main())
"""


@pytest.fixture
def new_database() -> Iterator[str]:
    """A PostgreSQL database nobody has started on yet (no schema, no key), dropped after."""
    with new_postgres_database("fhir_adapter_first") as url:
        yield url


async def first_start_rows(database_url: str) -> tuple[int, list[int]]:
    """How many signing keys there are, and the version of each plan Organization row."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            keys = (await conn.execute(select(func.count()).select_from(auth_keys))).scalar_one()
            plans = await conn.execute(
                select(resources.c.version_id).where(
                    resources.c.resource_type == PLAN[0], resources.c.id == PLAN[1]
                )
            )
            return keys, [row.version_id for row in plans]
    finally:
        await engine.dispose()


async def token_from(port: int, database_url: str) -> str:
    """A token from the instance on `port`, asked for at the service's public token URL."""
    engine = create_engine(database_url)
    try:
        client = await register(SqlResourceStore(engine))
    finally:
        await engine.dispose()

    async def to_the_instance(request: httpx.Request) -> None:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)

    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [to_the_instance]}) as http:
        return await fetch_token(http, f"{PUBLIC}/auth/token", client)


async def test_processes_starting_at_once_make_one_key_and_one_plan_organization(
    new_database: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    at = time.time() + 8.0  # after every interpreter has imported the service
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTUP, new_database, str(at)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output.decode(errors="replace")
    assert await first_start_rows(new_database) == (1, [1])


async def test_two_servers_started_together_share_one_key_and_both_serve(
    new_database: str, tmp_path: Path
) -> None:
    servers = []
    for name in ("one", "two"):
        port, folder = free_port(), tmp_path / name
        folder.mkdir()
        env = _server_env(port, new_database)
        env["FHIR_ADAPTER_BASE_URL"] = f"{PUBLIC}/fhir"  # one service, two instances
        servers.append(start_server(port, env, folder))
    try:
        await asyncio.gather(*(wait_until_ready(server) for server in servers))
        one, two = (f"http://127.0.0.1:{server.port}" for server in servers)
        token = await token_from(servers[0].port, new_database)  # issued by one, honoured by both
        for origin in (one, two):
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(
                    f"{origin}/fhir/{PLAN[0]}/{PLAN[1]}",
                    headers={"authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 200, answer.text
    except (AssertionError, httpx.HTTPError) as exc:
        logs = "\n".join(server.log() for server in servers)
        pytest.fail(f"{exc!r}; logs:\n{logs}")
    finally:
        for server in servers:
            assert server.stop() == 0, server.log()
    assert await first_start_rows(new_database) == (1, [1])
