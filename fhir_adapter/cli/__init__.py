"""The `fhir-adapter` command: parses arguments and calls the composition root, nothing more.

One module per command group; this one puts them together under `app`, in the order `--help`
lists them.
"""

from __future__ import annotations

import typer

from fhir_adapter.cli import clients, examples, metrics, notices, operations, server, staff

app = typer.Typer(
    help="FHIR R4 adapter for the Second Medical Opinion policy.", no_args_is_help=True
)
app.add_typer(server.db_app, name="db")
app.add_typer(operations.outbox_app, name="outbox")
app.add_typer(clients.clients_app, name="clients")
app.add_typer(notices.notices_app, name="notices")
app.command()(metrics.metrics)
app.add_typer(metrics.appeals_app, name="appeals")
app.add_typer(metrics.extensions_app, name="extensions")
app.add_typer(staff.staff_app, name="staff")
app.command()(server.serve)
app.command()(examples.demo)
app.command()(examples.validate)
app.command("deadlines")(operations.deadlines)
app.command("rotate-signing-key")(server.rotate_signing_key)
app.command()(server.version)


def main() -> None:
    app()


__all__ = ["app", "main"]
