"""`fhir-adapter outbox list|retry` and `deadlines`: the deliveries owed and the decisions
coming due, for operators and monitoring."""

from __future__ import annotations

import asyncio
from enum import StrEnum

import typer

from fhir_adapter.config import Settings

outbox_app = typer.Typer(
    help="Deliveries owed: list them, retry failed ones.", no_args_is_help=True
)


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
