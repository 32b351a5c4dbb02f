"""`fhir-adapter notices samples|check|pending-translation|fonts`: the member letters' samples,
catalog gaps, translations owed and derived fonts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from fhir_adapter.config import Settings

notices_app = typer.Typer(
    help="Member notices: sample letters, catalog gaps, translations owed.", no_args_is_help=True
)


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
