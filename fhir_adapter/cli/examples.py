"""`fhir-adapter demo` and `validate`: the example requests run through the workflow, and FHIR
files checked offline as the server would check them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from fhir_adapter.cli.server import configure_logging
from fhir_adapter.config import Settings


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
