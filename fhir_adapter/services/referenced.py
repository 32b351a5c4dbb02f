"""The resources a PAS response's ClaimResponse references, gathered so that every reference
resolves inside the Bundle that carries it (PAS spec-30, spec-60): for `$submit` answers and for
PAS Subscription notifications alike."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.errors import DirectoryUnavailableError, ForbiddenError, NotFoundError
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.fhir.references import iter_references, parse_reference
from fhir_adapter.ports.directory import DirectoryReader
from fhir_adapter.services.resources import ResourceService

log = logging.getLogger(__name__)


class ReferencedResources:
    def __init__(self, resources: ResourceService, directory: DirectoryReader | None) -> None:
        self.resources = resources
        self.directory = directory

    async def collect(
        self,
        resource: Mapping[str, Any],
        own_url: str,
        *,
        sent: Mapping[str, dict[str, Any]] | None = None,
        guard: Guard = UNRESTRICTED,
    ) -> list[dict[str, Any]]:
        """Bundle entries for what `resource` references, under the fullUrl each reference
        resolves to: a request's own entries as sent (`sent`, by fullUrl; PAS spec-33), our
        stored resources, and the directory's providers under their absolute URLs."""
        sent = sent or {}
        found: dict[str, dict[str, Any]] = {}
        kind = str(resource.get("resourceType"))
        for _, ref in sorted(iter_references(dict(resource), kind), key=lambda r: r[0]):
            raw = str(ref["reference"])
            parsed = parse_reference(raw, base_url=self.resources.base_url)
            key = parsed.local_key
            full_url = raw if key is None else f"{self.resources.base_url}/{key}"
            if full_url in found or full_url == own_url:
                continue
            content: dict[str, Any] | None = None
            if raw in sent:
                content = sent[raw]
            elif key is not None:
                try:
                    content = (
                        await self.resources.read(*ResourceKey.parse(key), guard=guard)
                    ).content
                except (NotFoundError, ForbiddenError):
                    content = None
            elif parsed.kind == "absolute" and self.directory is not None:
                try:
                    content = await self.directory.read(raw)
                except DirectoryUnavailableError as exc:
                    # The decision stands without it; the receiver can still follow the reference.
                    log.warning("PAS response: %s not included (%s)", raw, exc)
            if content is not None:
                found[full_url] = content
        return [{"fullUrl": url, "resource": content} for url, content in found.items()]
