"""`fhir-adapter staff add|list|disable`: accounts of the review workspace at /review
(README "Review workspace")."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import typer

from fhir_adapter.config import Settings

staff_app = typer.Typer(
    help="Staff accounts of the review workspace (reviewers decide, auditors read).",
    no_args_is_help=True,
)
T = TypeVar("T")


def _with_accounts(work: Callable[..., Awaitable[T]]) -> T:
    from fhir_adapter.review.accounts import StaffAccounts
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.migrate import upgrade_database

    settings = Settings()

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return await work(
                StaffAccounts(
                    engine,
                    max_failures=settings.review_max_failures,
                    lockout_seconds=settings.review_lockout_seconds,
                    session_seconds=settings.review_session_seconds,
                )
            )
        finally:
            await engine.dispose()

    return asyncio.run(run())


@staff_app.command("add")
def staff_add(
    name: str = typer.Argument(..., help="the account name the person signs in with"),
    role: str = typer.Option(..., help="reviewer (decides) or auditor (reads)"),
    credentials: str = typer.Option(
        "", help='shown with the name on decisions, e.g. "MD, Internal Medicine"'
    ),
    npi: str = typer.Option(None, help="the reviewer's NPI (on decisions)"),
    specialty: str = typer.Option(None, help="the reviewer's NUCC taxonomy code (on decisions)"),
    practitioner: str = typer.Option(
        None, help="the reviewer's Practitioner reference (default: urn:uuid of the account)"
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from standard input"
    ),
) -> None:
    """Create a staff account; the password is asked for (or read from stdin), never an option."""
    from fhir_adapter.review.accounts import Role, StaffAccounts

    if role not in {r.value for r in Role}:
        typer.echo("error: --role must be reviewer or auditor", err=True)
        raise typer.Exit(code=2)
    if role == Role.REVIEWER.value and not (credentials and specialty):
        typer.echo(
            "error: a reviewer needs --credentials and --specialty (42 CFR 438.210(b)(3): they"
            " go on every decision)",
            err=True,
        )
        raise typer.Exit(code=2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 12:
        typer.echo("error: the password must have at least 12 characters", err=True)
        raise typer.Exit(code=2)

    async def add(accounts: StaffAccounts) -> str:
        if await accounts.by_name(name) is not None:
            raise ValueError(f"a staff account named '{name}' exists already")
        account = await accounts.add(
            name,
            password,
            role=Role(role),
            credentials=credentials,
            now=datetime.now(UTC),
            npi=npi,
            specialty=specialty,
            practitioner=practitioner,
        )
        return account.staff_id

    try:
        staff_id = _with_accounts(add)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"staff account {name} ({role}) created: {staff_id}")


@staff_app.command("list")
def staff_list() -> None:
    """List the staff accounts (never their passwords)."""
    from fhir_adapter.review.accounts import StaffAccounts

    async def listed(accounts: StaffAccounts) -> list[str]:
        return [
            f"{a.name}  {a.role.value}  {a.credentials or '-'}"
            + ("  disabled" if a.disabled else "")
            + (f"  locked until {a.locked_until.isoformat()}" if a.locked_until else "")
            for a in await accounts.list()
        ]

    lines = _with_accounts(listed)
    typer.echo("\n".join(lines) if lines else "no staff accounts")


@staff_app.command("disable")
def staff_disable(name: str = typer.Argument(...)) -> None:
    """Disable an account; its sessions end at once."""
    from fhir_adapter.review.accounts import StaffAccounts

    async def disable(accounts: StaffAccounts) -> bool:
        return await accounts.disable(name)

    if not _with_accounts(disable):
        typer.echo(f"error: no staff account named '{name}'", err=True)
        raise typer.Exit(code=2)
    typer.echo(f"staff account {name} disabled")
