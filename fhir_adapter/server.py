"""`fhir-adapter serve`: one process, or `--workers N` processes sharing the listening socket.

Several processes need PostgreSQL: every job, delivery and rate limit they share goes through the
database (or Redis), and SQLite is one writer in one process, so it is refused with a message.
With N > 1 each worker is a fresh interpreter that builds its own app from the environment
(`worker_app`), and prometheus-client's multiprocess mode is on: PROMETHEUS_MULTIPROC_DIR is a
temporary folder made for this server start and removed when it stops, so `/metrics` from any
worker sums all of them.

Stopping (SIGTERM or Ctrl-C): the listening socket closes, requests in flight get up to
FHIR_ADAPTER_SHUTDOWN_TIMEOUT_SECONDS to finish, then the background loop and the audit writer
stop and the store closes (the app's lifespan). Exit code 0.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from fhir_adapter import startup
from fhir_adapter.config import Settings
from fhir_adapter.telemetry.exposition import MULTIPROC_ENV

# The lines `serve` has always written, under the logger name operators and tests know.
log = logging.getLogger("fhir_adapter.cli")

WORKER_HEALTHCHECK_SECONDS = 30

# SQLite is reached through aiosqlite, which runs each statement call in a thread of its own and
# hands the result back to the event loop: every hop needs the GIL. A busy event loop keeps the GIL
# for CPython's switch interval (5 ms) before that thread gets it, and as SQLite takes one writer
# at a time, the writer's wait becomes every submission's wait. Half a millisecond lets the
# hops through (issue #13: about 1.5 times the SQLite submissions a second, docs/performance.md).
# A writer's own statements no longer hop (store/sqlite_driver.py); its BEGIN and COMMIT and
# every read still do.
SQLITE_SWITCH_INTERVAL_SECONDS = 0.0005

SQLITE_ONE_PROCESS = (
    "SQLite is one process: --workers {workers} (FHIR_ADAPTER_WORKERS) needs PostgreSQL; set"
    " FHIR_ADAPTER_DATABASE_URL=postgresql+asyncpg://user@host:5432/database or serve with one"
    " worker"
)


def serve(*, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Check what the operator can get wrong, then run uvicorn until a signal stops it."""
    from fhir_adapter.logs import configure_logging

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    with startup.reported():  # one line and exit 1 for what the operator can fix (issue #17)
        settings = startup.load_settings(**overrides)
        configure_logging(settings.log_level, settings.log_format)
        url = startup.database_url(settings)
        if settings.workers > 1 and url.drivername.startswith("sqlite"):
            raise startup.StartupError(SQLITE_ONE_PROCESS.format(workers=settings.workers))
        store = startup.describe_store(url)
        log.info("serving FHIR at %s (store: %s)", settings.fhir_base_url, store)
        if settings.workers > 1:
            log.info("with %d worker processes", settings.workers)
        for warning in startup.misspelled_settings():
            log.warning(warning)
        startup.check_port(settings.host, settings.port)  # before migrations take their time
        startup.check_database(settings)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 instead of dying by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if url.drivername.startswith("sqlite"):
        sys.setswitchinterval(SQLITE_SWITCH_INTERVAL_SECONDS)
    if settings.workers == 1:
        from fhir_adapter.api.app import create_app

        _run(create_app(settings), settings)
        return
    _serve_workers(settings, overrides)


def _serve_workers(settings: Settings, overrides: dict[str, Any]) -> None:
    """Workers read their settings from the environment: pass the command line's on that way."""
    for name, value in overrides.items():
        os.environ[startup.env_name(name)] = str(value)
    asyncio.run(_prepare(settings))
    folder = tempfile.mkdtemp(prefix="fhir-adapter-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    options: dict[str, Any] = {"factory": True, "workers": settings.workers}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.run).parameters:
        # uvicorn kills a worker that misses a 5 s ping; a busy worker (a long PDF) is not hung.
        options["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_SECONDS
    try:
        _run("fhir_adapter.server:worker_app", settings, **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)


async def _prepare(settings: Settings) -> None:
    """What the first start writes (migrations, the plan's Organization, the built-in issuer's
    signing key), done once here before the workers start: workers starting together on a new
    database would each write their own (a second key: tokens one signs, another refuses)."""
    from fhir_adapter.bootstrap import build_container

    container = await build_container(settings)
    await container.aclose()


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each)."""
    from fhir_adapter.api.app import create_app
    from fhir_adapter.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def _run(app: FastAPI | str, settings: Settings, **options: Any) -> None:
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # ours (fhir_adapter.access) leaves out query strings, which may hold PHI
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # whose X-Forwarded-* to believe
        h11_max_incomplete_event_size=settings.max_header_bytes,  # issue #16: header cap
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        **options,
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
