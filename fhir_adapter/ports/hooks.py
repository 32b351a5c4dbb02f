"""The write-hook port: what a workflow adds to plain FHIR writes (the second-opinion intake
implements it; services.resources.ResourceService calls it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fhir_adapter.ports.store import StoredResource, StoreTransaction


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a create or update did: the stored version and whether it is new (201) or not (200).

    `path` is where the resource sat in the request (`Task`, `Bundle.entry[3].resource`), so that
    later checks can name the element at fault.
    """

    resource: StoredResource
    created: bool
    path: str = ""


class WriteHooks(Protocol):
    """What a workflow adds to plain FHIR writes (the second-opinion intake implements it)."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        """Search criteria that make a create conditional although the client did not ask."""
        ...

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        """Runs inside the write's transaction; raising rejects the whole write."""
        ...

    async def after_commit(self, results: list[WriteResult]) -> None:
        """Runs once the write is committed; must not raise for the client's sake."""
        ...
