"""Member notices the plan still owes in another language (issue #11): the Communications
flagged `translation-owed`, for `fhir-adapter notices pending-translation`."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_adapter.fhir.search import SearchCursor, parse_search
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.workflow.letters import (
    NOTICE_FLAG_SYSTEM,
    REQUESTED_LANGUAGE_URL,
    TRANSLATION_OWED,
)

_PAGE = 200


@dataclass(frozen=True, slots=True)
class PendingTranslation:
    communication: str  # Communication/<id>
    language: str  # the member's preferred language, as the Patient gives it
    recipient: str
    sent: str | None  # when the English (or Spanish) letter went out, if it has


async def pending_translations(store: ResourceStore) -> list[PendingTranslation]:
    """Every member notice flagged translation-owed, oldest first (ids and codes only: no PHI)."""
    found: list[PendingTranslation] = []
    cursor: SearchCursor | None = None
    while True:
        params = [("category", f"{NOTICE_FLAG_SYSTEM}|{TRANSLATION_OWED}")]
        if cursor is not None:
            params.append(("_cursor", str(cursor)))
        query = parse_search(
            "Communication", params, base_url=None, default_count=_PAGE, max_count=_PAGE
        )
        async with store.transaction(write=False) as tx:
            page = await tx.resources.search(query)
        for resource in page.matches:
            content = resource.content
            language = next(
                (
                    str(e.get("valueCode"))
                    for e in content.get("extension") or []
                    if e.get("url") == REQUESTED_LANGUAGE_URL
                ),
                "",
            )
            recipient = (content.get("recipient") or [{}])[0].get("reference", "")
            found.append(PendingTranslation(resource.key, language, recipient, content.get("sent")))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return sorted(found, key=lambda p: (p.sent or "", p.communication))
