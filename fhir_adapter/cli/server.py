"""`fhir-adapter serve`, `db upgrade`, `rotate-signing-key` and `version`: running the service
and keeping its schema and signing key."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

import typer

db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


def configure_logging(level: str) -> None:
    """Plain one-line logs to stderr (fhir_adapter/logs.py: no SQL parameters, rows or secrets
    at any level; control characters escaped)."""
    from fhir_adapter.logs import configure_logging as configure

    configure(level)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    host: str = typer.Option(None, help="Listen address (FHIR_ADAPTER_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="Listen port (FHIR_ADAPTER_PORT, default 8080)"),
) -> None:
    """Run the FHIR server; the schema is created or migrated on start."""
    import uvicorn

    from fhir_adapter import startup
    from fhir_adapter.api.app import create_app

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port}.items() if v is not None
    }
    log = logging.getLogger("fhir_adapter.cli")  # the name operators grep for
    with startup.reported():  # one line and exit 1 for what the operator can fix (issue #17)
        settings = startup.load_settings(**overrides)
        configure_logging(settings.log_level)
        store = startup.describe_store(startup.database_url(settings))
        log.info("serving FHIR at %s (store: %s)", settings.fhir_base_url, store)
        for warning in startup.misspelled_settings():
            log.warning(warning)
        startup.check_port(settings.host, settings.port)  # before migrations take their time
        startup.check_database(settings)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 instead of dying by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,  # ours (fhir_adapter.access) leaves out query strings, which may hold PHI
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # whose X-Forwarded-* to believe
        h11_max_incomplete_event_size=settings.max_header_bytes,  # issue #16: header cap
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Create or migrate the schema of FHIR_ADAPTER_DATABASE_URL."""
    from fhir_adapter import startup
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.migrate import current_revision, upgrade_database

    with startup.reported():
        settings = startup.load_settings()
        configure_logging(settings.log_level)
        startup.check_database(settings)

    async def run() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine, revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {asyncio.run(run())}")


def rotate_signing_key() -> None:
    """Make a new signing key for the built-in token endpoint; processes use it from their next
    start (restart them all; tokens signed with the old key are then refused, clients get new ones)."""
    from datetime import UTC, datetime

    from fhir_adapter import startup
    from fhir_adapter.bootstrap import build_container
    from fhir_adapter.security.issuer import new_signing_key

    with startup.reported():
        settings = startup.load_settings()
        if settings.auth_issuer:
            raise startup.StartupError(
                "FHIR_ADAPTER_AUTH_ISSUER is set: that issuer signs the tokens; rotate its keys there"
            )
        startup.check_database(settings)

    async def run() -> str:
        container = await build_container(settings)
        try:
            key = new_signing_key()
            async with container.store.transaction() as tx:
                await tx.auth.add_signing_key(key, now=datetime.now(UTC))
            return key.kid
        finally:
            await container.aclose()

    typer.echo(f"new signing key {asyncio.run(run())}: restart every fhir-adapter process")


def version() -> None:
    """Print the version."""
    from fhir_adapter import __version__

    typer.echo(__version__)
