"""200 reports delivered to a real receiving endpoint on loopback that fails 30% of requests and is
down for a stretch, across an adapter killed
with SIGKILL mid-delivery and restarted: every report arrives, and is stored once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from fhir_adapter.api import handlers
from fhir_adapter.bootstrap import demo_directory_file
from fhir_adapter.demo.directory import directory_router, load_directory
from tests.factories import example_request
from tests.receiver import Receiver
from tests.tokens import live_token

pytestmark = pytest.mark.live
REPORTS = 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def outside_world() -> Iterator[tuple[str, Receiver]]:
    """The directory and the PCPs' EHRs: one real server the adapter reaches over loopback."""
    receiver = Receiver(fail_rate=0.3)
    handlers.install(receiver.app)
    receiver.app.include_router(
        directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir"
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(receiver.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", receiver
    server.should_exit = True
    thread.join(timeout=10)


def start_adapter(port: int, database: Path, directory: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env.update(
        FHIR_ADAPTER_HOST="127.0.0.1",
        FHIR_ADAPTER_PORT=str(port),
        FHIR_ADAPTER_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        FHIR_ADAPTER_DIRECTORY_URL=directory,
        FHIR_ADAPTER_WORKER_INTERVAL_SECONDS="0.2",
        FHIR_ADAPTER_DELIVERY_BACKOFF_BASE_SECONDS="0.05",
        FHIR_ADAPTER_DELIVERY_BACKOFF_MAX_SECONDS="2",
        FHIR_ADAPTER_DELIVERY_MAX_ATTEMPTS="100",
        FHIR_ADAPTER_WORKER_LEASE_SECONDS="3",  # the killed process's leases run out quickly
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fhir_adapter", "serve"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=database.parent,
        )


async def wait_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the adapter exited"
            try:
                if (await client.get(f"{base}/metadata")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the adapter did not come up")


async def test_deliveries_survive_sigkill_and_arrive_once(
    tmp_path: Path, outside_world: tuple[str, Receiver]
) -> None:
    origin, receiver = outside_world
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    database, log = tmp_path / "adapter.db", tmp_path / "adapter.log"
    adapter = start_adapter(port, database, f"{origin}/directory/fhir", log)
    try:
        await wait_up(base, adapter)
        token = await live_token(f"sqlite+aiosqlite:///{database}", f"http://127.0.0.1:{port}")
        auth = {"authorization": f"Bearer {token}"}
        receiver.refusing = True  # nothing gets through while the reports go in
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth) as client:
            for i in range(REPORTS):
                answer = (
                    await client.post(
                        "", json=example_request("in-network-specialist-care", f"-crash{i}")
                    )
                ).json()
                keys = {
                    e["response"]["location"].split("/")[0]: e["response"]["location"].split(
                        "/_history"
                    )[0]
                    for e in answer["entry"]
                }
                report = {
                    "resourceType": "DiagnosticReport", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                    "subject": {"reference": keys["Patient"]}, "basedOn": [{"reference": keys["ServiceRequest"]}],
                    "conclusion": f"Report {i}",
                }  # fmt: skip
                assert (await client.post("/DiagnosticReport", json=report)).status_code == 201
        receiver.refusing = False
        receiver.delay = 0.05  # slow enough that the kill lands mid-delivery
        receiver.fail_rate = 0.3  # 30% fail, half of them after storing (the answer is lost)
        deadline = time.monotonic() + 30
        while len(receiver.reports_received()) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        adapter.send_signal(signal.SIGKILL)  # mid-delivery: no shutdown, leases left behind
        adapter.wait(timeout=10)
        delivered_before_kill = len(receiver.reports_received())
        assert delivered_before_kill < REPORTS
        adapter = start_adapter(port, database, f"{origin}/directory/fhir", log)
        await wait_up(base, adapter)
        receiver.delay = 0.0
        receiver.refusing = True  # and then the receiver is down for a stretch
        await asyncio.sleep(2)
        receiver.refusing = False
        deadline = time.monotonic() + 240
        while len(receiver.of_type("Communication")) < 2 * REPORTS and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(receiver.reports_received()) == REPORTS
        assert len(receiver.of_type("Communication")) == 2 * REPORTS  # with the requesters' notices
        assert len(receiver.of_type("DiagnosticReport")) == REPORTS
        assert sorted(r["conclusion"] for r in receiver.of_type("DiagnosticReport")) == sorted(
            f"Report {i}" for i in range(REPORTS)
        )
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth) as client:
            for _ in range(120):  # lost answers are retried after their backoff
                pending = (
                    await client.get(
                        "/Communication", params={"status": "in-progress", "_summary": "count"}
                    )
                ).json()
                if pending["total"] == 0:
                    break
                await asyncio.sleep(0.5)
            assert pending["total"] == 0
            done = (
                await client.get(
                    "/Communication", params={"status": "completed", "_summary": "count"}
                )
            ).json()
            # Reports to the PCPs and members, approval notices to the members and requesters.
            assert done["total"] == 4 * REPORTS
    finally:
        adapter.send_signal(signal.SIGTERM)
        adapter.wait(timeout=10)
