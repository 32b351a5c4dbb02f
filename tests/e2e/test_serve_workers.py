"""Issue #13, several processes and graceful shutdown, over real HTTP: `fhir-adapter serve
--workers 2` on PostgreSQL answers and its /metrics sums both workers; SQLite refuses more than
one process; a request in flight when SIGTERM arrives still gets its answer."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_live_server import (
    LiveServer,
    _server_env,
    free_port,
    start_server,
)
from tests.tokens import live_token

pytestmark = pytest.mark.live

# Each worker is a fresh interpreter importing the whole service: on a busy two-core machine that
# has taken 20 s (one process too, at a load average of 15); the probe waits longer than
# test_live_server's does.
WORKERS_START_TIMEOUT = 120.0


async def wait_until_ready(server: LiveServer, timeout: float = WORKERS_START_TIMEOUT) -> None:
    """Until GET /readyz says ready (every worker serves on the same socket once up)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as probe:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log()
            try:
                if (await probe.get(f"http://127.0.0.1:{server.port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    server.stop()
    pytest.fail(f"not ready within {timeout:.0f} s; log:\n{server.log()}")


@pytest.mark.postgres
async def test_two_workers_on_postgresql_answer_and_metrics_sum_both(
    postgres_database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = _server_env(port, postgres_database_url)
    env.update(FHIR_ADAPTER_WORKERS="2", FHIR_ADAPTER_LOG_FORMAT="json", TMPDIR=str(scratch))
    server = start_server(port, env, tmp_path)
    try:
        await wait_until_ready(server)
        origin = f"http://127.0.0.1:{port}"
        token = await live_token(postgres_database_url, origin)
        async with httpx.AsyncClient(
            base_url=origin, headers={"authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            searched = await http.get("/fhir/Task", params={"_count": "1"})
            assert searched.status_code == 200, searched.text
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            async with httpx.AsyncClient(base_url=origin, timeout=10) as once:
                assert (await once.get("/healthz")).status_code == 200
        async with httpx.AsyncClient(base_url=origin, timeout=10) as scraper:
            metrics = (await scraper.get("/metrics")).text
        (folder,) = scratch.glob("fhir-adapter-metrics-*")
        pids = {re.sub(r"\D", "", p.stem) for p in folder.glob("*.db")}
        assert len(pids) >= 2, sorted(p.name for p in folder.iterdir())
    except (AssertionError, httpx.HTTPError) as exc:
        server.stop()
        pytest.fail(f"{exc!r}; log:\n{server.log()}")
    finally:
        code = server.stop()
    assert code == 0, server.log()
    # Summed over both workers, whichever answered each probe.
    healthz = 'fhir_adapter_http_requests_total{method="GET",route="/healthz",status="2xx"} 30.0'
    assert healthz in metrics
    assert 'route="/fhir/{resource_type}",status="2xx"' in metrics
    assert not folder.exists()  # the multiprocess folder goes with the server
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # FHIR_ADAPTER_LOG_FORMAT=json: every line
    access = [r for r in records if r["logger"] == "fhir_adapter.access"]
    assert any(r["route"] == "/fhir/{resource_type}" and r["status"] == 200 for r in access)
    assert "Traceback" not in server.log()


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path) -> None:
    port = free_port()
    env = _server_env(port, f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}")
    result = subprocess.run(
        [sys.executable, "-m", "fhir_adapter", "serve", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: SQLite is one process: --workers 2")
    assert "PostgreSQL" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fhir.db").exists()  # refused before anything was created


async def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    server: LiveServer = start_server(port, _server_env(port, database_url), tmp_path)
    try:
        await wait_until_ready(server)
        token = await live_token(database_url, f"http://127.0.0.1:{port}")
        body = json.dumps({"resourceType": "Patient", "gender": "unknown"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                "POST /fhir/Patient HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"authorization: Bearer {token}\r\ncontent-type: application/fhir+json\r\n"
                f"accept: application/fhir+json\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            + body[:10]
        )
        await writer.drain()
        await asyncio.sleep(0.5)  # the request is in flight, its body half sent
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert server.process.poll() is None  # waiting for the request, not gone
        writer.write(body[10:])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 201"), status_line
        assert server.process.wait(timeout=10) == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()
