"""What the second-opinion workflow asks of the provider directory (DirectoryClient implements it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from fhir_adapter.policy.facts import Provider


class Directory(Protocol):
    """The provider directory as the workflow sees it."""

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
