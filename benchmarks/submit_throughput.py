"""Submissions per second and p50/p99 latency of the full submit path, against a baseline run in
the same script: a bare endpoint that only parses the same Bundle with fhir.resources.

Both run as real servers (uvicorn, one process each) on loopback; the adapter uses its built-in
directory, whose answers it caches, so after the warm-up the directory costs no HTTP round trips.
Each adapter submission is a new request (identifiers fresh for this run, so a database kept from
an earlier run, as PostgreSQL's is, matches none of them), so every one is stored and decided.

    .venv/bin/python benchmarks/submit_throughput.py [--requests 300] [--concurrency 8]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "requests" / "in-network-specialist-care.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh(bundle: dict[str, Any], n: str) -> dict[str, Any]:
    copied = copy.deepcopy(bundle)
    for entry in copied["entry"]:
        resource, request = entry["resource"], entry["request"]
        # the member's own resources; the professionals stay the example's (conditional)
        if resource["resourceType"] in (
            "ServiceRequest",
            "Task",
            "Patient",
            "Coverage",
            "Condition",
        ):
            for identifier in resource.get("identifier", []):
                identifier["value"] += f"-bench-{n}"
            if request.get("ifNoneExist"):
                request["ifNoneExist"] += f"-bench-{n}"
    return copied


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def adapter_token(database_url: str, origin: str) -> str:
    """Register a benchmark system and get its access token, as a deployed EHR would."""
    from fhir_adapter.security.client import ClientCredentials, new_ec_key, request_token
    from fhir_adapter.security.issuer import register_client
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.sql import SqlResourceStore

    private, kid, jwks = new_ec_key()
    engine = create_engine(database_url)
    try:
        client = await register_client(
            SqlResourceStore(engine), name="benchmark", jwks=jwks, scope="system/*.cruds"
        )
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await request_token(
            http,
            f"{origin}/auth/token",
            ClientCredentials(client.client_id, private, kid),
            "system/*.cruds",
        )
    return str(answer["access_token"])


async def load(
    url: str, bodies: list[bytes], concurrency: int, expect: int, token: str | None = None
) -> tuple[float, list[float]]:
    """Send every body with `concurrency` clients; returns (seconds, latencies in ms)."""
    latencies: list[float] = []
    queue = list(reversed(bodies))
    headers = {"Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != expect:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def summary(name: str, seconds: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "name": name,
        "requests": len(ordered),
        "per_second": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--database-url", default=None, help="default: SQLite in a temporary folder"
    )
    args = parser.parse_args()

    bundle = json.loads(EXAMPLE.read_text())
    with tempfile.TemporaryDirectory() as folder:
        adapter_port, baseline_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
        database_url = args.database_url or f"sqlite+aiosqlite:///{folder}/bench.db"
        env.update(
            FHIR_ADAPTER_HOST="127.0.0.1",
            FHIR_ADAPTER_PORT=str(adapter_port),
            FHIR_ADAPTER_DATABASE_URL=database_url,
            FHIR_ADAPTER_LOG_LEVEL="WARNING",
            # The limiter still counts every request; its limit must not be what is measured.
            FHIR_ADAPTER_RATE_LIMIT="1000000/minute",
        )
        adapter = subprocess.Popen(
            [sys.executable, "-m", "fhir_adapter", "serve"], env=env, cwd=folder
        )
        baseline = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "baseline_app.py"), str(baseline_port)]
        )
        try:
            await wait_ready(f"http://127.0.0.1:{adapter_port}/fhir/metadata", adapter)
            await wait_ready(f"http://127.0.0.1:{baseline_port}/ready", baseline)
            adapter_url = f"http://127.0.0.1:{adapter_port}/fhir"
            token = await adapter_token(database_url, f"http://127.0.0.1:{adapter_port}")
            baseline_url = f"http://127.0.0.1:{baseline_port}/baseline"
            total = args.warmup + args.requests
            run = uuid.uuid4().hex[:8]
            adapter_bodies = [
                json.dumps(fresh(bundle, f"{run}-{n}")).encode() for n in range(total)
            ]
            baseline_bodies = adapter_bodies  # the same Bundles, parsed and echoed
            await load(baseline_url, baseline_bodies[: args.warmup], args.concurrency, 200)
            await load(adapter_url, adapter_bodies[: args.warmup], args.concurrency, 200, token)
            base = summary(
                "baseline: parse the Bundle",
                *await load(baseline_url, baseline_bodies[args.warmup :], args.concurrency, 200),
            )
            full = summary(
                "full submit path",
                *await load(
                    adapter_url, adapter_bodies[args.warmup :], args.concurrency, 200, token
                ),
            )
        finally:
            for process in (adapter, baseline):
                process.terminate()
                process.wait(timeout=10)
    store = (args.database_url or "sqlite").split(":")[0]
    print(
        f"store: {store}; {args.requests} requests, concurrency {args.concurrency}, {len(bundle['entry'])}-entry Bundle"
    )
    print("| path | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for row in (base, full):
        print(
            f"| {row['name']} | {row['per_second']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    print(f"ratio (full / baseline throughput): {full['per_second'] / base['per_second']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
