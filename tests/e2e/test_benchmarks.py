"""docs/performance.md quotes the benchmarks' numbers, so the scripts must keep running: each is
run here on a handful of requests (the timings themselves belong to the benchmarks, not to this
test)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import new_postgres_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_database_url() -> Iterator[str]:
    """A database of the benchmark's own: the scripts start the service on it, which must not
    find the rows other tests left in the session's shared database (a store test's signing key)."""
    with new_postgres_database("fhir_adapter_bench") as url:
        yield url


def run_script(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_throughput_benchmark_reports_both_servers_and_their_ratio() -> None:
    # httpx with a fixed count (wrk's timed bursts would count nothing on a loaded machine)
    out = run_script(
        "submit_throughput.py",
        *("--httpx", "--requests", "6", "--warmup", "2", "--concurrency", "2"),
    )
    row = r"\| \d+ \| \d+\.\d \| [\d.]+ \| [\d.]+ \|"
    assert re.search(rf"\| baseline: parse the Bundle {row} - \|", out), out
    # the adapter's row also says how long the worker took to render the burst's notices
    assert re.search(rf"\| full submit path {row} \d+\.\d \|", out), out
    assert re.search(r"ratio \(full submit path / baseline throughput\): \d\.\d{3}", out)


@pytest.mark.postgres
def test_throughput_benchmark_compares_worker_counts(bench_database_url: str) -> None:
    out = run_script(
        "submit_throughput.py",
        *("--httpx", "--requests", "4", "--warmup", "2", "--concurrency", "2"),
        *("--workers", "1,2", "--database-url", bench_database_url),
    )
    assert "| full submit path, --workers 2 |" in out, out
    assert re.search(r"scaling \(2 workers / 1\): \d+\.\d\dx", out), out
    for name in ("full submit path", "full submit path, --workers 2"):
        assert re.search(
            rf"PostgreSQL's CPU over the burst \({name}\): \d+\.\d ms a submission", out
        ), out


@pytest.mark.postgres
async def test_postgres_cpu_keeps_the_time_of_backends_that_exit(
    bench_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmarks charge PostgreSQL's CPU over a burst as the difference of two readings; a
    connection that closes between them (an adapter's pool shutting) must not take its time away
    (CI once printed -2.5 ms a submission)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from submit_throughput import postgres_cpu_seconds

    url = make_url(bench_database_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    backend = Path(f"/proc/{await connection.fetchval('SELECT pg_backend_pid()')}")
    assert (backend / "comm").read_text().strip() == "postgres"  # PostgreSQL runs on this machine
    await connection.fetchval("SELECT count(*) FROM generate_series(1, 2000000)")
    while_open = postgres_cpu_seconds()
    await connection.close()
    for _ in range(500):  # until the postmaster has reaped the backend
        if not backend.exists():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail(f"{backend} did not exit")
    assert postgres_cpu_seconds() >= while_open


def test_breakdown_benchmark_accounts_for_every_stage() -> None:
    out = run_script("submit_breakdown.py", "--requests", "3", "--warmup", "1")
    full = float(re.search(r"full submit path: (\d+\.\d+) ms", out).group(1))  # type: ignore[union-attr]
    rows = dict(re.findall(r"^\| ([^|]+?) \| [^|]* \| (-?\d+\.\d+) \|", out, re.MULTILINE))
    for stage in (
        "verify the bearer token (ES384)",
        "validate the submitted Bundle (fhir.resources + checks)",
        "SQL statements (SQLAlchemy + driver, incl. the database)",
    ):
        assert stage in rows, out
    assert float(rows["SQL statements (SQLAlchemy + driver, incl. the database)"]) > 0
    # every submission was decided and noticed: its notices' render jobs were queued by the
    # answer and run afterwards, off the answer's time (issue #13)
    rendered = re.search(r"render jobs .* run then: (\d+\.\d) a submission, (\d+\.\d+) ms", out)
    assert rendered is not None, out
    assert float(rendered.group(1)) == 2.0 and float(rendered.group(2)) > 0, out
    # the timed stages never nest (no time counted twice): together they stay within the whole
    rest = re.search(r"^\| everything else \| \| (-?\d+\.\d+) \|", out, re.MULTILINE)
    assert rest is not None and 0 <= float(rest.group(1)) < full, out


@pytest.mark.postgres
def test_read_benchmark_reports_each_read_against_the_floor(bench_database_url: str) -> None:
    out = run_script(
        "read_throughput.py",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--others",
        "20",
        "--concurrency",
        "2",
        "--database-url",
        bench_database_url,
    )
    for path in (
        "floor: bare asyncpg read by id",
        "read by id: Task/{id}",
        "Task?patient=",
        "ClaimResponse?patient=&_lastUpdated=gt",
        "a page of 50: Task?_count=50",
    ):  # rate, p50, p99, its ratio to the floor's rate, CPU per request (all the server's
        # processes, then the answering process alone), the ratio by CPU
        assert re.search(
            rf"\| {re.escape(path)} \| \d+\.\d \| [\d.]+ \| [\d.]+ \| \d+\.\d{{3}} "
            rf"\| \d+\.\d{{3}} \| \d+\.\d{{3}} \| \d+\.\d{{3}} \|",
            out,
        ), out


def test_loop_gap_benchmark_reports_each_batch() -> None:
    out = run_script("sqlite_loop_gap.py", "--events", "20", "--rounds", "2")

    lines = [line for line in out.splitlines() if line.startswith("20 AuditEvents")]
    assert len(lines) == 2
    for line in lines:
        assert re.search(r"in one transaction: [\d.]+ ms; longest event-loop gap [\d.]+ ms$", line)


@pytest.mark.postgres
def test_audit_store_benchmark_reports_both_processes_cpu(bench_database_url: str) -> None:
    out = run_script(
        "audit_store.py", "--batches", "1", "--rounds", "1", "--database-url", bench_database_url
    )
    assert re.search(
        r"^schema head; 1 batches of 500 AuditEvents, 1 round\(s\), medians: per event "
        r"[\d.]+ ms of this process's CPU, [\d.]+ ms of PostgreSQL's CPU, [\d.]+ ms of wall time$",
        out,
        re.MULTILINE,
    ), out


@pytest.mark.postgres
def test_store_reads_benchmark_sets_the_driver_path_against_sqlalchemys(
    bench_database_url: str,
) -> None:
    out = run_script(
        "store_reads.py", "--reads", "5", "--rounds", "1", "--database-url", bench_database_url
    )
    for read in ("read by id", "search, 3", "page of 50"):
        assert re.search(rf"^\| {read} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", out, re.MULTILINE), out
