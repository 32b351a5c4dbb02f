"""Submissions per second and p50/p99 latency of the full submit path, against a baseline run in
the same script: a bare endpoint that only parses the same Bundle with fhir.resources.

Both run as real servers (uvicorn) on loopback; the adapter uses its built-in directory, whose
answers it caches, so after the warm-up the directory costs no HTTP round trips. Each adapter
submission is a new request (identifiers fresh for this run and request, so a database kept from
an earlier run, as PostgreSQL's is, matches none of them), so every one is stored and decided.

The load comes from wrk (one client thread, `--concurrency` connections, `--seconds` long; a Lua
script numbers each request's identifiers) so the client costs the server's two cores little;
without wrk an httpx client sends `--requests` submissions instead, and says so. `--workers 1,2`
runs the adapter once per worker count (PostgreSQL only), against the one baseline. After each
burst the script waits until the worker has rendered every notice the burst decided (no
Communication left in `preparation`) and reports how long that took. On PostgreSQL with
autovacuum off (the development machine's), the warm-up is followed by an ANALYZE, which
autovacuum would have done: the tables grew from nothing.

    .venv/bin/python benchmarks/submit_throughput.py [--seconds 20] [--concurrency 8]
        [--workers 1,2] [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
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


async def refresh_statistics(database_url: str | None) -> None:
    """ANALYZE, when PostgreSQL's autovacuum is off (as on the development machine): a table that
    grew from nothing during a run would otherwise be planned from the statistics of an empty one
    (a LIMIT over a sequential scan where an index finds the few rows), which autovacuum, on by
    default in production, keeps current. Outside the timed bursts."""
    if not database_url or not database_url.startswith("postgresql"):
        return
    import asyncpg

    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        if await connection.fetchval("SHOW autovacuum") == "off":
            await connection.execute("ANALYZE")
    finally:
        await connection.close()


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


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
{auth}
local template = [==[{template}]==]
local counter = 0
request = function()
  counter = counter + 1
  local body = string.gsub(template, "@@N@@", tostring(counter))
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("P50 %.3f\\n", latency:percentile(50) / 1000))
  io.write(string.format("P99 %.3f\\n", latency:percentile(99) / 1000))
  io.write(string.format("NON2XX %d\\n", summary.errors.status))
  io.write(string.format("REQUESTS %d\\n", summary.requests))
end
"""


def wrk_command(concurrency: int, seconds: float, script: Path, url: str) -> list[str]:
    duration = f"-d{max(1, round(seconds))}s"
    return ["wrk", "-t1", f"-c{concurrency}", duration, "--timeout", "60s", "-s", str(script), url]


def wrk_load(
    url: str, template: str, seconds: float, concurrency: int, folder: str, token: str | None
) -> dict[str, float]:
    """POST the template (its @@N@@ numbered per request) for `seconds` from wrk."""
    script = Path(folder) / f"post-{uuid.uuid4().hex[:6]}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script.write_text(WRK_LUA.format(auth=auth, template=template))
    done = subprocess.run(
        wrk_command(concurrency, seconds, script, url),
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout

    def number(name: str) -> float:
        found = re.search(rf"{name}\s+([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"wrk printed no {name}:\n{out}\n{done.stderr}")
        return float(found.group(1))

    if number("REQUESTS") == 0:
        raise RuntimeError(f"no request completed within {seconds:g} s: give --seconds more")
    if number("NON2XX") > 0:
        raise RuntimeError(f"{url} answered other than 2xx:\n{out}")
    return {
        "requests": number("REQUESTS"),
        "per_second": number("Requests/sec:"),
        "p50_ms": number("P50"),
        "p99_ms": number("P99"),
    }


def stat_fields(pid: int | str) -> list[str]:
    """A process's /proc/PID/stat fields after its command name (which may hold spaces): [0] is
    its state, [1] its parent's pid, [11:15] its CPU ticks (Linux proc(5))."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(fields: list[str], *, reaped: bool = True) -> float:
    """Seconds of user and system CPU of a process (`stat_fields`) and of its reaped children
    (cutime, cstime): a child that exits keeps counting, in its parent's figure. `reaped=False`:
    the process's own alone."""
    return sum(int(ticks) for ticks in fields[11 : 15 if reaped else 13]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """The user and system CPU time PostgreSQL has used so far on this machine (Linux /proc):
    what it spends on the cores the adapter shares with it.

    A backend that exits takes its own time out of the sum of live processes, and the postmaster
    adds it to its reaped children's when it reaps the backend (`cpu_of`), so the total never
    goes back; the live processes alone went negative when an adapter's pool closed its
    connections mid-burst."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "postgres":
                continue  # (not the command line: a client's names the database URL)
            total += cpu_of(stat_fields(entry))
        except OSError:
            continue  # gone meanwhile
    return total


def summary(name: str, seconds: float, latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "name": name,
        "requests": len(ordered),
        "per_second": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


async def notices_rendered(adapter_url: str, token: str, limit: float = 600) -> float:
    """Seconds until no Communication is left in `preparation` (every notice rendered)."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() - started < limit:
            answer = await client.get(
                f"{adapter_url}/Communication",
                params={"status": "preparation", "_summary": "count"},
                headers=headers,
            )
            answer.raise_for_status()
            if answer.json().get("total", 0) == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.5)
    raise RuntimeError(f"notices still in preparation after {limit} s")


class Bench:
    """One benchmark run: the bodies, the client (wrk or httpx) and the figures."""

    def __init__(self, args: argparse.Namespace, folder: str) -> None:
        self.args, self.folder = args, folder
        self.use_wrk = shutil.which("wrk") is not None and not args.httpx
        self.run = uuid.uuid4().hex[:8]
        self.bundle = json.loads(EXAMPLE.read_text())
        self.serial = 0

    def bodies(self, count: int) -> list[bytes]:
        self.serial += 1
        return [
            json.dumps(fresh(self.bundle, f"{self.run}-{self.serial}-{n}")).encode()
            for n in range(count)
        ]

    def template(self) -> str:
        self.serial += 1
        return json.dumps(fresh(self.bundle, f"{self.run}-{self.serial}-@@N@@"))

    async def measure(self, name: str, url: str, token: str | None, warm: bool) -> dict[str, Any]:
        """Warm up, then the timed burst; the same client kind for the baseline and the adapter.
        On PostgreSQL the adapter's row also has PostgreSQL's CPU over the burst."""
        args = self.args
        if warm:
            if self.use_wrk:
                wrk_load(url, self.template(), 3, args.concurrency, self.folder, token)
            else:
                await load(url, self.bodies(args.warmup), args.concurrency, 200, token)
            await refresh_statistics(args.database_url)
        postgres = postgres_cpu_seconds()
        if self.use_wrk:
            figures = wrk_load(
                url, self.template(), args.seconds, args.concurrency, self.folder, token
            )
            row = {"name": name, **figures}
        else:
            timed = await load(url, self.bodies(args.requests), args.concurrency, 200, token)
            row = summary(name, *timed)
        if token is not None and (args.database_url or "").startswith("postgresql"):
            row["postgres_cpu_ms"] = 1000 * (postgres_cpu_seconds() - postgres) / row["requests"]
        return row


def start_adapter(
    database_url: str, port: int, workers: int, folder: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env.update(
        FHIR_ADAPTER_HOST="127.0.0.1",
        FHIR_ADAPTER_PORT=str(port),
        FHIR_ADAPTER_DATABASE_URL=database_url,
        FHIR_ADAPTER_LOG_LEVEL="WARNING",
        # The limiter still counts every request; its limit must not be what is measured.
        FHIR_ADAPTER_RATE_LIMIT="1000000/minute",
    )
    command = [sys.executable, "-m", "fhir_adapter", "serve"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return subprocess.Popen(command, env=env, cwd=folder)


async def adapter_runs(bench: Bench, database_url: str) -> list[dict[str, Any]]:
    """The full submit path once per worker count, each adapter started afresh."""
    rows = []
    for workers in bench.args.workers:
        port = free_port()
        adapter = start_adapter(database_url, port, workers, bench.folder)
        try:
            await wait_ready(f"http://127.0.0.1:{port}/fhir/metadata", adapter)
            origin = f"http://127.0.0.1:{port}"
            token = await adapter_token(database_url, origin)
            name = "full submit path" + (f", --workers {workers}" if workers > 1 else "")
            row = await bench.measure(name, f"{origin}/fhir", token, warm=True)
            row["workers"] = workers
            row["rendered_s"] = await notices_rendered(f"{origin}/fhir", token)
            rows.append(row)
        finally:
            adapter.terminate()
            adapter.wait(timeout=30)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="wrk: length of each burst")
    parser.add_argument("--requests", type=int, default=300, help="httpx: submissions a burst")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20, help="httpx: warm-up submissions")
    parser.add_argument("--workers", default="1", help="adapter worker counts, e.g. 1,2")
    parser.add_argument("--httpx", action="store_true", help="load with httpx even if wrk exists")
    parser.add_argument(
        "--database-url", default=None, help="default: SQLite in a temporary folder"
    )
    args = parser.parse_args()
    args.workers = [int(w) for w in str(args.workers).split(",")]
    if args.database_url is None and max(args.workers) > 1:
        parser.error("--workers above 1 needs PostgreSQL (--database-url)")

    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(args, folder)
        database_url = args.database_url or f"sqlite+aiosqlite:///{folder}/bench.db"
        baseline_port = free_port()
        baseline = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "baseline_app.py"), str(baseline_port)]
        )
        try:
            await wait_ready(f"http://127.0.0.1:{baseline_port}/ready", baseline)
            baseline_url = f"http://127.0.0.1:{baseline_port}/baseline"
            base = await bench.measure("baseline: parse the Bundle", baseline_url, None, True)
            rows = await adapter_runs(bench, database_url)
        finally:
            baseline.terminate()
            baseline.wait(timeout=10)
    report(args, bench, base, rows)


def report(
    args: argparse.Namespace, bench: Bench, base: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    store = (args.database_url or "sqlite").split(":")[0]
    client = f"wrk, {args.seconds:g} s a burst" if bench.use_wrk else "httpx (wrk not installed)"
    print(
        f"store: {store}; client: {client}; concurrency {args.concurrency}; "
        f"{len(bench.bundle['entry'])}-entry Bundle"
    )
    print("| path | requests | requests/s | p50 ms | p99 ms | notices rendered after (s) |")
    print("|---|---|---|---|---|---|")
    for row in (base, *rows):
        rendered = f"{row['rendered_s']:.1f}" if "rendered_s" in row else "-"
        print(
            f"| {row['name']} | {row['requests']:.0f} | {row['per_second']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {rendered} |"
        )
    for row in rows:
        print(
            f"ratio ({row['name']} / baseline throughput): "
            f"{row['per_second'] / base['per_second']:.3f}"
        )
    for row in rows:
        if "postgres_cpu_ms" in row:
            print(
                f"PostgreSQL's CPU over the burst ({row['name']}): "
                f"{row['postgres_cpu_ms']:.1f} ms a submission"
            )
    if len(rows) > 1:
        one = rows[0]
        for row in rows[1:]:
            print(
                f"scaling ({row['workers']} workers / {one['workers']}): "
                f"{row['per_second'] / one['per_second']:.2f}x"
            )


if __name__ == "__main__":
    asyncio.run(main())
