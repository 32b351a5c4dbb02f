"""Where one submission's time goes, stage by stage, against the bare parse measured in the same
process: the numbers behind the throughput ratio of `submit_throughput.py`.

Both the adapter and the baseline endpoint (`baseline_app.py`) run in this process behind httpx's
ASGI transport, one request at a time, so no socket, server or other client shares the measurement.
The adapter runs on its defaults (SQLite in a temporary folder, the demo directory, reached over
in-process HTTP and cached after the warm-up). A few named functions are timed by wrapping them
for the run; they do not nest in each other, so their times add up, and "everything else" is the
rest of the request (FastAPI, JSON, the FHIR mapping, the policy rules, the Task machine).

    .venv/bin/python benchmarks/submit_breakdown.py [--requests 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
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
from fhir_adapter.services.second_opinion import recorder, reports
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
    (recorder, "render", "render the notices (text, HTML, PDF)"),
    (reports, "render", "render the notices (text, HTML, PDF)"),
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


async def run(requests: int, warmup: int, database_url: str | None) -> None:
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
            json.dumps(fresh(bundle, f"{run_id}-{n}")).encode() for n in range(warmup + requests)
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
            started = time.perf_counter()
            for body in bodies[warmup:]:
                assert (await baseline.post("/baseline", content=body)).status_code == 200
            base_ms = (time.perf_counter() - started) / requests * 1000
            with stages_timed():
                started = time.perf_counter()
                for body in bodies[warmup:]:
                    answer = await adapter.post("", content=body)
                    assert answer.status_code == 200, answer.text[:300]
                full_ms = (time.perf_counter() - started) / requests * 1000
        finally:
            await adapter.aclose()
            await baseline.aclose()
            await directory_http.aclose()
            await container.aclose()

    store = url.split(":")[0]
    print(f"store: {store}; {requests} submissions one at a time, in process (ASGI)")
    print(f"baseline (parse the Bundle and return it): {base_ms:.2f} ms a request")
    print(f"full submit path: {full_ms:.2f} ms a submission ({full_ms / base_ms:.1f}x baseline)")
    print()
    print("| stage | calls a submission | ms a submission | x baseline |")
    print("|---|---|---|---|")
    for stage in dict.fromkeys(stage for _, _, stage in STAGES):
        ms = SECONDS[stage] / requests * 1000
        print(f"| {stage} | {CALLS[stage] / requests:.1f} | {ms:.2f} | {ms / base_ms:.2f} |")
    rest = full_ms - sum(SECONDS.values()) / requests * 1000
    print(f"| everything else | | {rest:.2f} | {rest / base_ms:.2f} |")
    print(f"\nthe 0.5 throughput target allows {2 * base_ms:.2f} ms a submission (2x baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.warmup, args.database_url))


if __name__ == "__main__":
    main()
