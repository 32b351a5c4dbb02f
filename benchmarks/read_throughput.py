"""Reads per second of the adapter against a same-run floor: a bare FastAPI endpoint reading the
same row by id with the same driver (asyncpg). Both are real servers (uvicorn, one process each)
on loopback over PostgreSQL; the load comes from wrk (one thread, `--concurrency` connections,
a Lua script adds the bearer token), or from an httpx client when wrk is not installed (it says
so: httpx costs the client more CPU, on the same cores).

The machine is shared, so each of `--rounds` rounds measures the floor, every path, then the
floor again, and each path is set against the floors around it; the table shows the medians.
It also shows each server's own CPU time per request (from /proc), which the load of other work
moves far less than a rate does: the floor's CPU per request over the path's is the ratio the
path would have on a quiet machine, leaving out what PostgreSQL spends. The adapter's counts its
child processes too (on PostgreSQL its audit writer stores the AuditEvents of the reads), and a
column shows the answering process's part alone.

    .venv/bin/python benchmarks/read_throughput.py [--seconds 10] [--concurrency 8] [--rounds 3]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from submit_throughput import (
    adapter_token,
    cpu_of,
    free_port,
    refresh_statistics,
    stat_fields,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def seed(database_url: str, run: str, others: int) -> datetime:
    """The rows read: for this run's member, three Tasks and three ClaimResponses; `others`
    Tasks and ClaimResponses of other members around them. Returns a time before them all."""
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.migrate import upgrade_database
    from fhir_adapter.store.sql import SqlResourceStore

    engine = create_engine(database_url)
    start = datetime.now(UTC) - timedelta(hours=1)
    try:
        await upgrade_database(engine)
        store = SqlResourceStore(engine)
        async with store.transaction() as tx:
            for n in range(others + 3):
                patient = f"{run}-member" if n < 3 else f"{run}-other{n % 97}"
                now = start + timedelta(seconds=n)
                await tx.resources.insert(
                    {
                        "resourceType": "Task",
                        "id": f"{run}-t{n}",
                        "status": "requested",
                        "intent": "order",
                        "for": {"reference": f"Patient/{patient}"},
                    },
                    now=now,
                )
                await tx.resources.insert(
                    {
                        "resourceType": "ClaimResponse",
                        "id": f"{run}-c{n}",
                        "status": "active",
                        "type": {"coding": [{"code": "professional"}]},
                        "use": "preauthorization",
                        "patient": {"reference": f"Patient/{patient}"},
                        "created": start.date().isoformat(),
                        "insurer": {"reference": "Organization/plan"},
                        "outcome": "complete",
                    },
                    now=now,
                )
        async with engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return start


LUA = """
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Accept"] = "application/fhir+json"
local statuses = {{}}
response = function(status, headers, body)
  if status ~= 200 then statuses[status] = true end
end
done = function(summary, latency, requests)
  io.write(string.format("P50 %.3f\\n", latency:percentile(50) / 1000))
  io.write(string.format("P99 %.3f\\n", latency:percentile(99) / 1000))
  io.write(string.format("NON200 %d\\n", summary.errors.status))
end
"""


def wrk(url: str, token: str, seconds: float, concurrency: int, folder: str) -> dict[str, float]:
    script = Path(folder) / "auth.lua"
    script.write_text(LUA.format(token=token))
    done = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    if int(re.search(r"NON200 (\d+)", out).group(1)) > 0:  # type: ignore[union-attr]
        raise RuntimeError(f"{url} answered other than 200:\n{out}")
    return {
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": float(re.search(r"P50 ([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": float(re.search(r"P99 ([\d.]+)", out).group(1)),  # type: ignore[union-attr]
    }


async def httpx_load(url: str, token: str, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await client.get(url, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": float(len(ordered)),
        "per_second": len(ordered) / elapsed,
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def tree_cpu_seconds(pid: int) -> float:
    """The CPU time of a process and of its child processes, living or reaped: the adapter's
    audit writer (on PostgreSQL) and render processes work for its answers, so their CPU counts
    too."""
    total = cpu_of(stat_fields(pid))
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            try:
                fields = stat_fields(entry)
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid:
                total += cpu_of(fields)
    return total


def paths_of(fhir: str, run: str, since: str) -> list[tuple[str, str]]:
    return [
        ("read by id: Task/{id}", f"{fhir}/Task/{run}-t1"),
        ("Task?patient=", f"{fhir}/Task?patient={run}-member"),
        (
            "ClaimResponse?patient=&_lastUpdated=gt",
            f"{fhir}/ClaimResponse?patient={run}-member&_lastUpdated=gt{since}",
        ),
        ("a page of 50: Task?_count=50", f"{fhir}/Task?_count=50"),
    ]


class Load:
    """Runs the load on one URL and notes what it cost the server process that answered."""

    def __init__(self, token: str, args: argparse.Namespace, folder: str) -> None:
        self.token, self.args, self.folder = token, args, folder
        self.use_wrk = shutil.which("wrk") is not None and not args.httpx

    async def __call__(self, url: str, pid: int, *, warm: bool) -> dict[str, float]:
        seconds, concurrency = self.args.seconds, self.args.concurrency
        if warm:
            await self._run(url, min(2.0, seconds), concurrency)
        await refresh_statistics(self.args.database_url)  # every read adds an AuditEvent
        before, own_before = tree_cpu_seconds(pid), cpu_of(stat_fields(pid), reaped=False)
        row = await self._run(url, seconds, concurrency)
        requests = max(1.0, row["requests"])
        row["cpu_ms"] = 1000 * (tree_cpu_seconds(pid) - before) / requests
        own_after = cpu_of(stat_fields(pid), reaped=False)
        row["own_cpu_ms"] = 1000 * (own_after - own_before) / requests
        return row

    async def _run(self, url: str, seconds: float, concurrency: int) -> dict[str, float]:
        if self.use_wrk:
            return wrk(url, self.token, seconds, concurrency, self.folder)
        return await httpx_load(url, self.token, seconds, concurrency)


async def rounds(
    load: Load, floor: tuple[str, int], paths: list[tuple[str, str]], adapter: int, count: int
) -> dict[str, list[dict[str, float]]]:
    """Each round: the floor, each path, the floor again; a path's ratio is against the mean of
    the two floors around it in its round, so the shared machine's drifting load cancels out."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in [FLOOR, *dict(paths)]}
    for number in range(count):
        first = await load(floor[0], floor[1], warm=number == 0)
        measured = [(name, await load(url, adapter, warm=number == 0)) for name, url in paths]
        last = await load(floor[0], floor[1], warm=False)
        rate = (first["per_second"] + last["per_second"]) / 2
        cpu = (first["cpu_ms"] + last["cpu_ms"]) / 2
        own = (first["own_cpu_ms"] + last["own_cpu_ms"]) / 2
        rows[FLOOR].append(
            {
                **last,
                "per_second": rate,
                "cpu_ms": cpu,
                "own_cpu_ms": own,
                "ratio": 1,
                "cpu_ratio": 1,
            }
        )
        for name, row in measured:
            row.update(ratio=row["per_second"] / rate, cpu_ratio=cpu / row["cpu_ms"])
            rows[name].append(row)
    return rows


FLOOR = "floor: bare asyncpg read by id"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="the medians of this many")
    parser.add_argument("--others", type=int, default=500, help="other members' rows")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--httpx", action="store_true", help="load with httpx even if wrk exists")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    start = await seed(args.database_url, run, args.others)
    since = (start - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    with tempfile.TemporaryDirectory() as folder:
        adapter_port, floor_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
        env.update(
            FHIR_ADAPTER_HOST="127.0.0.1",
            FHIR_ADAPTER_PORT=str(adapter_port),
            FHIR_ADAPTER_DATABASE_URL=args.database_url,
            FHIR_ADAPTER_LOG_LEVEL="WARNING",
            FHIR_ADAPTER_RATE_LIMIT="1000000/minute",  # counted, never the limit measured
        )
        adapter = subprocess.Popen(
            [sys.executable, "-m", "fhir_adapter", "serve"], env=env, cwd=folder
        )
        floor = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "read_floor_app.py"), str(floor_port), dsn]
        )
        try:
            origin = f"http://127.0.0.1:{adapter_port}"
            await wait_ready(f"{origin}/fhir/metadata", adapter)
            await wait_ready(f"http://127.0.0.1:{floor_port}/ready", floor)
            token = await adapter_token(args.database_url, origin)
            paths = paths_of(f"{origin}/fhir", run, since)
            floor_url = f"http://127.0.0.1:{floor_port}/floor/Task/{run}-t1"
            async with httpx.AsyncClient() as check:  # each answers 200 before it is timed
                for url in (floor_url, *dict(paths).values()):
                    answer = await check.get(url, headers={"Authorization": f"Bearer {token}"})
                    if answer.status_code != 200:
                        raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:300]}")
            load = Load(token, args, folder)
            rows = await rounds(load, (floor_url, floor.pid), paths, adapter.pid, args.rounds)
        finally:
            for process in (adapter, floor):
                process.terminate()
                process.wait(timeout=10)
    report(rows, args, load.use_wrk)


def report(
    rows: dict[str, list[dict[str, float]]], args: argparse.Namespace, use_wrk: bool
) -> None:
    client = "wrk -t1" if use_wrk else "httpx (wrk not found: the client's own CPU cost is higher)"
    print(
        f"store: postgresql; client: {client}; {args.concurrency} connections; "
        f"{args.seconds:g} s per path; {args.rounds} round(s), medians; one server process each"
    )
    print(
        "| path | requests/s | p50 ms | p99 ms | of the floor | server CPU ms/request "
        "| of it, the answering process | of the floor, by CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, measured in rows.items():
        mid = {key: statistics.median(row[key] for row in measured) for key in measured[0]}
        print(
            f"| {name} | {mid['per_second']:.1f} | {mid['p50_ms']:.1f} | {mid['p99_ms']:.1f} "
            f"| {mid['ratio']:.3f} | {mid['cpu_ms']:.3f} | {mid['own_cpu_ms']:.3f} "
            f"| {mid['cpu_ratio']:.3f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
