"""Real adapter processes on one PostgreSQL database of their own, with a real directory server and
a real receiving FHIR endpoint on loopback: what the crash tests (docs/durability.md) run against."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhir_adapter.api import handlers
from fhir_adapter.bootstrap import demo_directory_file
from fhir_adapter.demo.directory import DEMO_ORIGIN, directory_router, load_directory
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.tables import outbox, resources, workflow_jobs
from tests.e2e.test_live_server import free_port
from tests.loopback import serve_on_loopback
from tests.receiver import Receiver

START_TIMEOUT = 30.0
__all__ = ["free_port"]


@pytest.fixture
async def own_database(postgres_database_url: str) -> AsyncIterator[str]:
    """A PostgreSQL database for this test alone (the processes migrate it), dropped after."""
    admin_url = make_url(postgres_database_url)
    name = f"fhir_adapter_crash_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@dataclass
class OutsideWorld:
    directory_url: str  # the provider directory's FHIR base
    origin: str  # the receiving endpoint: the PCPs' EHRs and the member-notice service
    receiver: Receiver


@pytest.fixture
def outside_world(tmp_path: Path) -> Iterator[OutsideWorld]:
    """The PCPs' EHRs (failing 30% of the time, deterministically) and the directory whose
    Endpoints point at them: two real servers on loopback."""
    receiver = Receiver(fail_rate=0.3, seed=13)
    with serve_on_loopback(receiver.app) as origin:
        data = tmp_path / "directory.json"
        data.write_text(demo_directory_file().read_text().replace(DEMO_ORIGIN, origin))
        directory = FastAPI()
        handlers.install(directory)
        directory.include_router(directory_router(load_directory(data)), prefix="/directory/fhir")
        with serve_on_loopback(directory) as directory_origin:
            yield OutsideWorld(f"{directory_origin}/directory/fhir", origin, receiver)


@dataclass
class Adapter:
    """`python -m fhir_adapter serve` on a fixed port, started, killed and started again."""

    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fhir_adapter", "serve"],
                env={**self.env, "FHIR_ADAPTER_PORT": str(self.port)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.log.parent,
            )
        self.starts.append(time.monotonic())
        deadline = time.monotonic() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as probe:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"the adapter exited:\n{self.log_text()}"
                try:
                    if (await probe.get(f"{self.base}/metadata")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"the adapter did not come up:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, leases left behind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""


def adapter_env(
    database_url: str, world: OutsideWorld, spool: Path, base_url: str
) -> dict[str, str]:
    """Settings for every adapter process: one database, one public base URL (so one token works
    on all of them), retries and leases shortened so that a run takes a minute, not hours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env.update(
        FHIR_ADAPTER_HOST="127.0.0.1",
        FHIR_ADAPTER_BASE_URL=base_url,
        FHIR_ADAPTER_DATABASE_URL=database_url,
        FHIR_ADAPTER_DIRECTORY_URL=world.directory_url,
        FHIR_ADAPTER_MEMBER_NOTICE_URL=f"{world.origin}/notices",
        FHIR_ADAPTER_AUDIT_SPOOL_DIR=str(spool),  # shared: a survivor replays the dead's spool
        FHIR_ADAPTER_RATE_LIMIT="off",
        FHIR_ADAPTER_AUTH_TOKEN_LIFETIME_SECONDS="3600",
        FHIR_ADAPTER_WORKER_INTERVAL_SECONDS="0.5",
        FHIR_ADAPTER_WORKER_LEASE_SECONDS="10",  # the killed process's leases run out in 10 s
        FHIR_ADAPTER_RETRY_BASE_SECONDS="0.5",
        FHIR_ADAPTER_DELIVERY_TIMEOUT_SECONDS="2",
        FHIR_ADAPTER_DELIVERY_BACKOFF_BASE_SECONDS="0.05",
        FHIR_ADAPTER_DELIVERY_BACKOFF_MAX_SECONDS="1",
        FHIR_ADAPTER_DELIVERY_MAX_ATTEMPTS="100",
        FHIR_ADAPTER_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


async def contents(engine: AsyncEngine, resource_type: str) -> list[dict[str, Any]]:
    statement = select(resources.c.content).where(resources.c.resource_type == resource_type)
    async with engine.connect() as conn:
        return [row[0] for row in await conn.execute(statement)]


async def outstanding_work(engine: AsyncEngine, spool: Path) -> dict[str, int]:
    """What is still to do: deliveries not settled, jobs not evaluated, spooled audit events."""
    async with engine.connect() as conn:
        pending = (
            await conn.execute(
                select(outbox.c.destination, outbox.c.attempts, outbox.c.last_error).where(
                    outbox.c.state == "pending"
                )
            )
        ).all()
        jobs = (
            await conn.execute(
                select(workflow_jobs.c.task_id).where(workflow_jobs.c.state == "evaluate")
            )
        ).all()
    segments = list(spool.glob("*.jsonl")) if spool.is_dir() else []
    errors = Counter(f"{row.destination}: {row.last_error}" for row in pending)
    return {"deliveries": len(pending), "jobs": len(jobs), "audit segments": len(segments)} | {
        f"(last error {error})": n for error, n in errors.items()
    }


async def wait_quiescent(engine: AsyncEngine, spool: Path, *, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        left = await outstanding_work(engine, spool)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


def engine_for(database_url: str) -> AsyncEngine:
    return create_engine(database_url)
