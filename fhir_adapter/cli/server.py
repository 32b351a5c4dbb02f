"""`fhir-adapter serve`, `db upgrade`, `rotate-signing-key` and `version`: running the service
and keeping its schema and signing key."""

from __future__ import annotations

import asyncio

import typer

db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


def configure_logging(level: str) -> None:
    """Plain one-line logs to stderr (fhir_adapter/logs.py: no SQL parameters, rows or secrets
    at any level; control characters escaped)."""
    from fhir_adapter.logs import configure_logging as configure

    configure(level)


def serve(
    host: str = typer.Option(None, help="Listen address (FHIR_ADAPTER_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="Listen port (FHIR_ADAPTER_PORT, default 8080)"),
    workers: int = typer.Option(
        None, min=1, help="Server processes (FHIR_ADAPTER_WORKERS, default 1; over 1: PostgreSQL)"
    ),
) -> None:
    """Run the FHIR server; the schema is created or migrated on start (fhir_adapter/server.py)."""
    from fhir_adapter.server import serve as run

    run(host=host, port=port, workers=workers)


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
