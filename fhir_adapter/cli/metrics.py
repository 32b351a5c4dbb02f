"""`fhir-adapter metrics`, `appeals` and `extensions`: the CMS-0057-F prior-authorization
metrics and the facts they need recorded (README "Prior-authorization metrics").

Like every module of fhir_adapter/cli/, this only parses arguments and calls the composition root.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer

from fhir_adapter.config import Settings

appeals_app = typer.Typer(
    help="Appeal outcomes of denied requests, for the prior-authorization metrics.",
    no_args_is_help=True,
)
extensions_app = typer.Typer(
    help="Extended decision time frames of undecided requests (42 CFR 438.210(d)).",
    no_args_is_help=True,
)


def _instant(value: str, option: str) -> datetime:
    """An ISO 8601 date-time with a time zone (`Z` or an offset), or exit 2 naming the option."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        typer.echo(
            f"error: {option} must be a date-time with a time zone, e.g. 2026-03-02T17:00:00Z",
            err=True,
        )
        raise typer.Exit(code=2)
    return moment


def _with_container(action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `action(container)`; an AdapterError (unknown request, not denied, ...) exits 1."""
    from fhir_adapter.bootstrap import build_container
    from fhir_adapter.errors import AdapterError

    async def run() -> Any:
        container = await build_container(Settings())
        try:
            return await action(container)
        finally:
            await container.aclose()

    try:
        return asyncio.run(run())
    except AdapterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def metrics(
    from_: str = typer.Option(..., "--from", help="first day of the period, YYYY-MM-DD"),
    to: str = typer.Option(..., "--to", help="last day of the period, YYYY-MM-DD (included)"),
    fmt: str = typer.Option("json", "--format", help="json, csv or html (the public page)"),
    output: Path = typer.Option(None, "--output", dir_okay=False, help="write here, not stdout"),
    as_of: str = typer.Option(
        None, "--as-of", help="count appeals decided up to this date-time (default: now)"
    ),
) -> None:
    """CMS-0057-F prior-authorization metrics for a period (days in California time)."""
    from fhir_adapter.metrics.core import Period
    from fhir_adapter.metrics.render import FORMATS, render_report

    if fmt not in FORMATS:
        typer.echo(f"error: --format must be one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(code=2)
    try:
        period = Period(date.fromisoformat(from_), date.fromisoformat(to))
    except ValueError as exc:
        typer.echo(f"error: --from/--to: {exc}", err=True)
        raise typer.Exit(code=2) from None
    cutoff = _instant(as_of, "--as-of") if as_of else None
    settings = Settings()
    report = _with_container(lambda c: c.metrics.report(period, as_of=cutoff))
    text = render_report(report, fmt, plan_name=settings.plan_name)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@appeals_app.command("record")
def appeals_record(
    reference: str = typer.Argument(
        ..., help="the denied request: Task/ID, ClaimResponse/ID or ID"
    ),
    outcome: str = typer.Option(..., help="upheld (the denial stands) or overturned (approved)"),
    decided_at: str = typer.Option(..., help="when the plan decided the appeal (ISO, with zone)"),
    received_at: str = typer.Option(None, help="when the plan received the appeal"),
) -> None:
    """Record the plan's decision on the member's appeal of a denial (counted by `metrics`)."""
    from fhir_adapter.metrics.core import AppealOutcome

    if outcome not in {o.value for o in AppealOutcome}:
        typer.echo("error: --outcome must be upheld or overturned", err=True)
        raise typer.Exit(code=2)
    decided = _instant(decided_at, "--decided-at")
    received = _instant(received_at, "--received-at") if received_at else None
    stored = _with_container(
        lambda c: c.metrics.record_appeal(
            reference, AppealOutcome(outcome), decided_at=decided, received_at=received
        )
    )
    typer.echo(f"recorded {stored.key} ({outcome})")


@extensions_app.command("record")
def extensions_record(
    task_id: str = typer.Argument(..., help="the undecided request's Task id"),
    reason: str = typer.Option(..., help="member-request, provider-request or need-information"),
    until: str = typer.Option(..., help="the new due date (ISO date-time with zone)"),
) -> None:
    """Record an extension of a request's decision time frame; the deadline moves with it."""
    from fhir_adapter.metrics.records import ExtensionReason

    if reason not in {r.value for r in ExtensionReason}:
        typer.echo(
            "error: --reason must be member-request, provider-request or need-information",
            err=True,
        )
        raise typer.Exit(code=2)
    due = _instant(until, "--until")
    stored = _with_container(
        lambda c: c.metrics.extend(task_id, ExtensionReason(reason), until=due)
    )
    typer.echo(f"extended {stored.key} to {stored.content['restriction']['period']['end']}")
