"""The `fhir-adapter` command: parses arguments and calls the composition root, nothing more."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from fhir_adapter.config import Settings

app = typer.Typer(
    help="FHIR R4 adapter for the Second Medical Opinion policy.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
outbox_app = typer.Typer(
    help="Deliveries owed: list them, retry failed ones.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")
clients_app = typer.Typer(
    help="Systems allowed to get access tokens from the built-in authorization server.",
    no_args_is_help=True,
)
app.add_typer(clients_app, name="clients")
notices_app = typer.Typer(
    help="Member notices: sample letters, catalog gaps, translations owed.", no_args_is_help=True
)
app.add_typer(notices_app, name="notices")


def configure_logging(level: str) -> None:
    """Plain one-line logs to stderr (fhir_adapter/logs.py: no SQL parameters, rows or secrets
    at any level; control characters escaped)."""
    from fhir_adapter.logs import configure_logging as configure

    configure(level)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _install_metrics_commands() -> None:
    """`metrics`, `appeals` and `extensions` live in cli_metrics.py (CMS-0057-F)."""
    from fhir_adapter.cli_metrics import install

    install(app)


_install_metrics_commands()


def _install_staff_commands() -> None:
    """`staff add|list|disable` (the review workspace) live in cli_staff.py."""
    from fhir_adapter.cli_staff import install

    install(app)


_install_staff_commands()


@app.command()
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
    log = logging.getLogger(__name__)
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


@app.command()
def demo(
    url: str = typer.Option(
        None, help="FHIR base of a running service; default: start one in-process"
    ),
    client_id: str = typer.Option(None, help="with --url: a client registered for system/*.cruds"),
    key: Path = typer.Option(
        None, exists=True, dir_okay=False, help="with --url: that client's private key (PEM)"
    ),
    kid: str = typer.Option(None, help="with --url: the key's kid in the registered JWKS"),
) -> None:
    """Submit the example second-opinion requests and print each one's way through the workflow."""
    import httpx

    from fhir_adapter.demo.walkthrough import DEFAULT_PATHS, run_demo
    from fhir_adapter.security.client import ClientCredentials, load_private_key

    configure_logging("WARNING")
    credentials = None
    if url:
        if not client_id or key is None:
            typer.echo(
                "error: --url needs --client-id and --key (see fhir-adapter clients add)", err=True
            )
            raise typer.Exit(code=2)
        credentials = ClientCredentials(client_id, load_private_key(key), kid)
    try:
        good = asyncio.run(run_demo(url, credentials=credentials))
    except httpx.TransportError as exc:
        from fhir_adapter.startup import unreachable

        typer.echo(f"error: {unreachable(exc)}", err=True)
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=0 if good == len(DEFAULT_PATHS) else 1)


@app.command()
def validate(files: list[Path] = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Check FHIR JSON files as the server would (structure, codes, the second-opinion rules).

    References to resources on the server cannot be checked offline; everything else is.
    """
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.fhir.validation import parse_json
    from fhir_adapter.workflow.intake import check_document

    failed = 0
    for path in files:
        try:
            issues = check_document(
                parse_json(path.read_bytes(), max_depth=Settings().max_json_depth)
            )
        except AdapterError as exc:
            issues = list(exc.issues)
        if issues:
            failed += 1
            typer.echo(f"{path}: {len(issues)} problem(s)")
            for issue in issues:
                where = f" [{issue.expression}]" if issue.expression else ""
                typer.echo(f"  {issue.severity} {issue.code}{where}: {issue.diagnostics}")
        else:
            typer.echo(f"{path}: ok")
    raise typer.Exit(code=1 if failed else 0)


class OutboxState(StrEnum):
    """What `outbox list --state` accepts (typer refuses anything else, listing these)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"
    all = "all"


@outbox_app.command("list")
def outbox_list(
    state: OutboxState = typer.Option(OutboxState.failed, help="which deliveries to list"),
    limit: int = typer.Option(100, min=1),
) -> None:
    """List deliveries (default: the dead letters, those that failed for good)."""
    from fhir_adapter.bootstrap import build_container

    async def run() -> list[str]:
        container = await build_container(Settings())
        try:
            async with container.store.transaction(write=False) as tx:
                items = await tx.outbox.items(
                    state=None if state is OutboxState.all else state.value, limit=limit
                )
        finally:
            await container.aclose()
        return [
            f"{i.id}  {i.state:9}  {i.destination:17}  Communication/{i.communication_id}  "
            f"attempts={i.attempts}  last_error={i.last_error or '-'}"
            for i in items
        ]

    lines = asyncio.run(run())
    none = "no deliveries" if state is OutboxState.all else f"no {state.value} deliveries"
    typer.echo("\n".join(lines) if lines else none)


@outbox_app.command("retry")
def outbox_retry(
    ids: list[str] = typer.Argument(None, help="outbox ids; none: every failed delivery"),
) -> None:
    """Queue failed deliveries again (the running service's worker picks them up)."""
    from fhir_adapter.bootstrap import build_container

    async def run() -> int:
        container = await build_container(Settings())
        try:
            return await container.delivery.retry_failed(ids or None)
        finally:
            await container.aclose()

    typer.echo(f"{asyncio.run(run())} delivery(ies) queued again")


@app.command("deadlines")
def deadlines() -> None:
    """How many undecided requests are past FHIR_ADAPTER_DEADLINE_WARNING_SHARE of their window
    (for monitoring; exit code 1 when there are any, so a check can alert on it)."""
    from fhir_adapter.bootstrap import build_container

    async def run() -> int:
        container = await build_container(Settings())
        try:
            return await container.workflow.nearing_deadline_count()
        finally:
            await container.aclose()

    count = asyncio.run(run())
    typer.echo(f"{count} undecided request(s) past the warning share of their window")
    raise typer.Exit(code=1 if count else 0)


@clients_app.command("add")
def clients_add(
    name: str = typer.Argument(..., help="a name for the system, e.g. 'payer-um'"),
    jwks: Path = typer.Option(..., exists=True, dir_okay=False, help="its public keys (JWKS)"),
    scope: str = typer.Option(
        ..., help='the most it may ask for, e.g. "system/Task.cru system/ClaimResponse.rs"'
    ),
    patient: str = typer.Option(
        None, help="a member-facing client: the Patient id its tokens are for"
    ),
) -> None:
    """Register a system with the built-in authorization server; prints its client id."""
    from fhir_adapter.bootstrap import build_container
    from fhir_adapter.security.issuer import register_client

    async def run() -> tuple[str, str]:
        container = await build_container(Settings())
        try:
            async with container.store.transaction(write=False) as tx:
                if any(c.name == name for c in await tx.auth.list_clients()):
                    raise ValueError(
                        f"a client named '{name}' is already registered (fhir-adapter clients"
                        " list); choose another name"
                    )
            client = await register_client(
                container.store,
                name=name,
                jwks=json.loads(jwks.read_text()),
                scope=scope,
                patient=patient,
            )
            assert container.issuer is not None, "an external issuer is configured"
            return client.client_id, container.issuer.urls.token_endpoint
        finally:
            await container.aclose()

    try:
        client_id, token_url = asyncio.run(run())
    except (ValueError, json.JSONDecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"client_id: {client_id}")
    typer.echo(f"token endpoint: {token_url}")


@clients_app.command("list")
def clients_list() -> None:
    """List the systems registered with the built-in authorization server."""
    from fhir_adapter.bootstrap import build_container

    async def run() -> list[str]:
        container = await build_container(Settings())
        try:
            async with container.store.transaction(write=False) as tx:
                clients = await tx.auth.list_clients()
        finally:
            await container.aclose()
        return [
            f"{c.client_id}  {c.name}  scope={c.scope!r}"
            + (f"  patient={c.patient}" if c.patient else "")
            for c in clients
        ]

    lines = asyncio.run(run())
    typer.echo("\n".join(lines) if lines else "no clients registered")


@clients_app.command("remove")
def clients_remove(
    client_id: str = typer.Argument(..., help="the id `clients list` shows"),
) -> None:
    """Unregister a system: no new tokens, and its tokens are refused from then on (within
    FHIR_ADAPTER_AUTH_CLIENT_CHECK_SECONDS on running servers)."""
    from fhir_adapter.bootstrap import build_container

    async def run() -> bool:
        container = await build_container(Settings())
        try:
            async with container.store.transaction() as tx:
                return await tx.auth.remove_client(client_id)
        finally:
            await container.aclose()

    if not asyncio.run(run()):
        typer.echo(f"error: no client {client_id!r} is registered", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"removed client {client_id}")


@clients_app.command("keygen")
def clients_keygen(
    prefix: Path = typer.Argument(..., help="writes PREFIX.pem (private) and PREFIX.jwks.json"),
) -> None:
    """Make a P-384 key pair for a client: keep the .pem secret, register the .jwks.json."""
    from cryptography.hazmat.primitives import serialization

    from fhir_adapter.security.client import new_ec_key

    private, kid, jwks = new_ec_key()
    pem_path, jwks_path = prefix.with_suffix(".pem"), prefix.with_suffix(".jwks.json")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for existing in (pem_path, jwks_path):
        if existing.exists():
            typer.echo(f"error: {existing} exists; choose another prefix", err=True)
            raise typer.Exit(code=2)
    pem_path.touch(mode=0o600, exist_ok=False)
    pem_path.write_bytes(pem)
    jwks_path.write_text(json.dumps(jwks, indent=2))
    typer.echo(f"private key: {pem_path} (kid {kid})\npublic JWKS: {jwks_path}")


@clients_app.command("token")
def clients_token(
    client_id: str = typer.Option(..., help="the id `clients add` printed"),
    key: Path = typer.Option(..., exists=True, dir_okay=False, help="the client's private key"),
    scope: str = typer.Option("system/*.rs", help="the scopes to ask for"),
    url: str = typer.Option(None, help="FHIR base (default: this machine's service)"),
    kid: str = typer.Option(None, help="the key's kid, when the JWKS holds several"),
) -> None:
    """Get an access token the way a system does (SMART Backend Services) and print it."""
    import httpx

    from fhir_adapter.security.client import (
        ClientCredentials,
        discover_token_endpoint,
        load_private_key,
        request_token,
    )

    base = url or Settings().fhir_base_url

    async def run() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            token_url = await discover_token_endpoint(http, base)
            credentials = ClientCredentials(client_id, load_private_key(key), kid)
            answer = await request_token(http, token_url, credentials, scope)
        return str(answer["access_token"])

    try:
        typer.echo(asyncio.run(run()))
    except httpx.TransportError as exc:
        from fhir_adapter.startup import unreachable

        typer.echo(f"error: {unreachable(exc)}", err=True)
        raise typer.Exit(code=1) from None
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@app.command("rotate-signing-key")
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


@app.command()
def version() -> None:
    """Print the version."""
    from fhir_adapter import __version__

    typer.echo(__version__)


def main() -> None:
    app()


@notices_app.command("samples")
def notices_samples(
    target: Path = typer.Argument(Path("examples/notices"), help="folder for the PDFs"),
) -> None:
    """Write a PDF of each letter kind, as the service writes it for the example requests."""
    from fhir_adapter.notice_samples import write_samples

    written = asyncio.run(write_samples(target, say=typer.echo))
    typer.echo(f"{len(written)} sample letter(s) written to {target}")


@notices_app.command("check")
def notices_check() -> None:
    """Report the threshold languages, taglines and translated texts the catalogs still lack
    (exit code 1 when anything is missing)."""
    from fhir_adapter.bootstrap import examples_dir
    from fhir_adapter.notices.catalog import catalog_gaps, load_taglines
    from fhir_adapter.notices.pdf import printable

    settings = Settings()
    path = settings.notice_taglines_file
    taglines = load_taglines(path.read_text(encoding="utf-8") if path else None)
    seed = json.loads((examples_dir() / "directory" / "plan-net-directory.json").read_text())
    names = {
        coding["display"]
        for entry in seed.get("entry", [])
        if entry["resource"]["resourceType"] == "PractitionerRole"
        for specialty in entry["resource"].get("specialty", [])
        for coding in specialty.get("coding", [])
        if coding.get("display")
    }
    gaps = catalog_gaps(
        taglines,
        printable=printable,
        specialty_names=names,
        plan_hours_translated={"es": _hours_translated(settings)},
    )
    typer.echo(f"{len(taglines)} tagline(s): {', '.join(sorted(taglines))}")
    typer.echo("\n".join(gaps) if gaps else "nothing missing")
    raise typer.Exit(code=1 if gaps else 0)


def _hours_translated(settings: Settings) -> bool:
    """Spanish hours are set, and were changed along with the English ones."""
    defaults = Settings.model_fields
    changed = settings.plan_hours != defaults["plan_hours"].default
    return bool(settings.plan_hours_es) and (
        not changed or settings.plan_hours_es != defaults["plan_hours_es"].default
    )


@notices_app.command("pending-translation")
def notices_pending_translation() -> None:
    """List member notices sent in English (or Spanish) with taglines because the member's
    language has no approved template: a translation is owed for each."""
    from fhir_adapter.bootstrap import build_container
    from fhir_adapter.services.notices import pending_translations

    async def run() -> list[str]:
        container = await build_container(Settings())
        try:
            owed = await pending_translations(container.store)
        finally:
            await container.aclose()
        return [
            f"{o.communication}  language={o.language or '-'}  to={o.recipient}  "
            f"sent={o.sent or '-'}"
            for o in owed
        ]

    lines = asyncio.run(run())
    typer.echo("\n".join(lines) if lines else "no translation owed")


@notices_app.command("fonts")
def notices_fonts() -> None:
    """Rebuild the derived fonts (the letter cut of DejaVu Sans, the taglines' CJK subset) from
    the packaged full fonts, after editing the built-in taglines."""
    from fhir_adapter.notices.catalog import BUILT_IN_TAGLINES
    from fhir_adapter.notices.pdf import build_fonts

    for name, glyphs in build_fonts(list(BUILT_IN_TAGLINES.values())).items():
        typer.echo(f"{name}: {glyphs} glyphs")
