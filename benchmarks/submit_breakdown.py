"""Where one submission's time goes, stage by stage, against the bare parse measured in the same
process: the numbers behind the throughput ratio of `submit_throughput.py`.

Both the adapter and the baseline endpoint (`baseline_app.py`) run in this process behind httpx's
ASGI transport, one request at a time, so no socket, server or other client shares the measurement.
The adapter runs on its defaults (SQLite in a temporary folder, the demo directory, reached over
in-process HTTP and cached after the warm-up). A few named functions are timed by wrapping them
for the run; they do not nest in each other, so their times add up, and "everything else" is the
rest of the request (FastAPI, JSON, the FHIR mapping, the policy rules, the Task machine).

A decision's notices are rendered by the worker after the answer (issue #13), so they are not
in a submission's time: the render jobs the submissions queued are run afterwards, once, and
timed as a line of their own (their time per submission, as the worker spends it).

With `--worker thread` or `--worker process` the background worker runs beside the measured
submissions (woken by each commit, rendering in a dedicated thread or in one worker process), so
the submission time shows what rendering at the same time costs the answers; the stage lines then
include the worker's own SQL.

The CPU each thread of the process spent over the timed submissions is printed too (Linux's
/proc): the event loop's thread, and on SQLite aiosqlite's connection threads, whose hand-offs
cost CPU on both sides.

With `--cpu` another `--requests` submissions run, each right after a baseline request, and the
process CPU (`time.process_time()`) of each is summed: the CPU figure and ratio to trust on a
shared machine, where wall times are not. `--profile FILE` writes a cProfile (CPU time) of the
timed submissions.

    .venv/bin/python benchmarks/submit_breakdown.py [--requests 200] [--database-url URL]
        [--worker off|thread|process] [--cpu] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import inspect
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_app import app as baseline_app
from submit_throughput import EXAMPLE, fresh

from fhir_adapter.api import handlers
from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import build_container, demo_directory_file
from fhir_adapter.config import Settings
from fhir_adapter.demo.directory import directory_router, load_directory
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.security.tokens import TokenVerifier
from fhir_adapter.services import bundles
from fhir_adapter.services.background import run_background
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore

SECONDS: Counter[str] = Counter()
CALLS: Counter[str] = Counter()

_TRANSACTIONS = "SQL transactions (connect, begin, commit, give the connection back)"
# (owner, attribute, stage): leaves of the request that never call one another.
STAGES: list[tuple[Any, str, str]] = [
    (TokenVerifier, "verify", "verify the bearer token (ES384)"),
    (bundles, "validate_resource", "validate the submitted Bundle (fhir.resources + checks)"),
    (AsyncConnection, "execute", "SQL statements (SQLAlchemy + driver, incl. the database)"),
    (AsyncConnection, "start", _TRANSACTIONS),
    (AsyncConnection, "execution_options", _TRANSACTIONS),
    (AsyncTransaction, "start", _TRANSACTIONS),
    (AsyncTransaction, "__aexit__", _TRANSACTIONS),
    (AsyncConnection, "close", _TRANSACTIONS),
]


def _timed(stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                SECONDS[stage] += time.perf_counter() - started
                CALLS[stage] += 1

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[stage] += time.perf_counter() - started
            CALLS[stage] += 1

    return timed


@contextmanager
def stages_timed() -> Iterator[None]:
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in STAGES]
    for (owner, name, stage), (_, _, original) in zip(STAGES, originals, strict=True):
        setattr(owner, name, _timed(stage, original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user and system) each live thread of this process has spent, by name; empty
    where /proc/self/task is not there."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the name, which may hold spaces
        name = "aiosqlite" if "_connection_worker_thread" in thread.name else thread.name
        spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return spent


def _executor(worker: str) -> Executor:
    if worker == "process":
        return ProcessPoolExecutor(max_workers=1)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile the measured submissions into `path` (pstats format) when one is given."""
    if path is None:
        yield
        return
    profile = cProfile.Profile(time.process_time)  # CPU, not wall: the machine may be shared
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


async def cpu_pair(
    adapter: httpx.AsyncClient, baseline: httpx.AsyncClient, bodies: list[bytes]
) -> tuple[float, float]:
    """Process CPU (ms) a baseline request and a submission take, measured in pairs, one of each
    in turn: on a shared machine the CPU a request costs drifts over seconds (other processes,
    clock speed), and the pairs see the same drift, so their ratio holds where wall time does not.
    """
    base = full = 0.0
    for body in bodies:
        started = time.process_time()
        assert (await baseline.post("/baseline", content=body)).status_code == 200
        between = time.process_time()
        answer = await adapter.post("", content=body)
        assert answer.status_code == 200, answer.text[:300]
        base, full = base + between - started, full + time.process_time() - between
    return base / len(bodies) * 1000, full / len(bodies) * 1000


async def run(
    requests: int,
    warmup: int,
    database_url: str | None,
    worker: str,
    profile: str | None = None,
    cpu_pass: bool = False,
) -> None:
    bundle = json.loads(EXAMPLE.read_text())
    with tempfile.TemporaryDirectory() as folder:
        url = database_url or f"sqlite+aiosqlite:///{folder}/breakdown.db"
        settings = Settings(database_url=url, base_url="http://adapter/fhir")
        engine = create_engine(url)
        await upgrade_database(engine)
        directory_app = FastAPI()
        handlers.install(directory_app)
        directory_app.include_router(
            directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir"
        )
        directory_http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=directory_app), base_url="http://directory"
        )
        container = await build_container(
            settings,
            store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
            directory=DirectoryClient(
                directory_http,
                "http://directory/directory/fhir",
                network=settings.network,
            ),
        )
        assert container.issuer is not None
        token = container.issuer.mint("benchmark", "system/*.cruds")
        headers = {"content-type": "application/fhir+json", "authorization": f"Bearer {token}"}
        run_id = uuid.uuid4().hex[:8]
        bodies = [
            json.dumps(fresh(bundle, f"{run_id}-{n}")).encode()
            for n in range(warmup + requests * (2 if cpu_pass else 1))
        ]
        adapter = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container=container)),
            base_url="http://adapter/fhir",
            headers=headers,
        )
        baseline = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=baseline_app), base_url="http://baseline"
        )
        try:
            for body in bodies[:warmup]:
                assert (await adapter.post("", content=body)).status_code == 200
                assert (await baseline.post("/baseline", content=body)).status_code == 200
            while await container.delivery.rendering.run_due(limit=100):
                pass  # the warm-up's notices: rendered, and warming the renderer
            started = time.perf_counter()
            for body in bodies[warmup : warmup + requests]:
                assert (await baseline.post("/baseline", content=body)).status_code == 200
            base_ms = (time.perf_counter() - started) / requests * 1000
            cpu = (
                await cpu_pair(adapter, baseline, bodies[warmup + requests :]) if cpu_pass else None
            )
            stop = asyncio.Event()
            background = None
            if worker != "off":
                container.delivery.rendering.executor = _executor(worker)
                background = asyncio.create_task(
                    run_background(container.workflow.jobs, container.delivery, stop)
                )
            with stages_timed(), profiled(profile):
                threads_before = thread_cpu()
                started = time.perf_counter()
                for body in bodies[warmup : warmup + requests]:
                    answer = await adapter.post("", content=body)
                    assert answer.status_code == 200, answer.text[:300]
                full_ms = (time.perf_counter() - started) / requests * 1000
                threads_ms = {
                    name: (spent - threads_before.get(name, 0.0)) / requests * 1000
                    for name, spent in thread_cpu().items()
                }
            stop.set()
            if background is not None:
                await background
            started = time.perf_counter()
            rendered = 0
            while tried := await container.delivery.rendering.run_due(limit=100):
                rendered += tried
            submitted = len(bodies) - warmup  # the --cpu pass's too
            render_ms = (time.perf_counter() - started) / submitted * 1000
            rendered_each = rendered / submitted
        finally:
            await adapter.aclose()
            await baseline.aclose()
            await directory_http.aclose()
            await container.aclose()

    store = url.split(":")[0]
    print(
        f"store: {store}; {requests} submissions one at a time, in process (ASGI); worker {worker}"
    )
    print(f"baseline (parse the Bundle and return it): {base_ms:.2f} ms a request")
    print(f"full submit path: {full_ms:.2f} ms a submission ({full_ms / base_ms:.1f}x baseline)")
    if cpu is not None:
        base_cpu, full_cpu = cpu
        print(
            f"process CPU (--cpu, {requests} pairs interleaved): baseline {base_cpu:.2f} ms a"
            f" request, full submit path {full_cpu:.2f} ms a submission"
            f" ({full_cpu / base_cpu:.2f}x baseline; floor ratio {base_cpu / full_cpu:.3f})"
        )
    by_thread = ", ".join(f"{name} {ms:.2f} ms" for name, ms in threads_ms.items() if ms > 0)
    print(f"CPU a timed submission by thread (the stage timers' own cost included): {by_thread}")
    print()
    print("| stage | calls a submission | ms a submission | x baseline |")
    print("|---|---|---|---|")
    for stage in dict.fromkeys(stage for _, _, stage in STAGES):
        ms = SECONDS[stage] / requests * 1000
        print(f"| {stage} | {CALLS[stage] / requests:.1f} | {ms:.2f} | {ms / base_ms:.2f} |")
    rest = full_ms - sum(SECONDS.values()) / requests * 1000
    print(f"| everything else | | {rest:.2f} | {rest / base_ms:.2f} |")
    print(
        f"\nrender jobs still queued after the answers, run then: {rendered_each:.1f} a submission,"
        f" {render_ms:.2f} ms a submission ({render_ms / base_ms:.2f}x baseline; not in the above)"
    )
    print(f"the 0.5 throughput target allows {2 * base_ms:.2f} ms a submission (2x baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--worker", choices=("off", "thread", "process"), default="off")
    parser.add_argument("--profile", default=None, help="write a cProfile of the submissions here")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also measure process CPU a submission, in pairs with the baseline (another"
        " --requests submissions)",
    )
    args = parser.parse_args()
    asyncio.run(
        run(args.requests, args.warmup, args.database_url, args.worker, args.profile, args.cpu)
    )


if __name__ == "__main__":
    main()
