"""`fhir-adapter clients add|list|remove|keygen|token`: the systems the built-in authorization
server issues tokens to."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from fhir_adapter.config import Settings

clients_app = typer.Typer(
    help="Systems allowed to get access tokens from the built-in authorization server.",
    no_args_is_help=True,
)


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
