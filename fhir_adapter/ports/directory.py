"""The provider directory port: what the services ask of it (implemented by DirectoryClient and
the demo directory)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from fhir_adapter.policy.facts import Provider


class Directory(Protocol):
    """What the workflow asks of the provider directory (implemented by DirectoryClient)."""

    async def in_network_providers(
        self,
        specialties: Iterable[str],
        *,
        today: datetime,
        organization: str | None = None,
        enough: int | None = None,
    ) -> list[Provider]: ...

    async def providers_with_specialty(
        self,
        specialties: Iterable[str],
        *,
        today: datetime,
        enough: int | None = None,
        out_of_network: bool = False,
    ) -> list[Provider]: ...

    async def provider(self, reference: str, *, today: datetime) -> Provider | None: ...

    async def roles_by_npi(self, npi: str, *, today: datetime) -> list[Provider]: ...

    async def read(self, reference: str) -> dict[str, Any] | None: ...


@runtime_checkable
class DirectoryReader(Protocol):
    """Reads one directory resource by reference (implemented by DirectoryClient)."""

    async def read(self, reference: str) -> dict[str, Any] | None: ...
