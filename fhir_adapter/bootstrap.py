"""The composition root: the only place that picks concrete adapters and wires them together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_adapter.config import Settings
from fhir_adapter.ports import ResourceStore
from fhir_adapter.services.bundles import BundleService
from fhir_adapter.services.resources import Clock, ResourceService, SearchLimits, utc_now
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore, create_engine


@dataclass(slots=True)
class Container:
    """Everything a request handler or CLI command needs, built once per process."""

    settings: Settings
    store: ResourceStore
    resources: ResourceService
    bundles: BundleService
    started: datetime

    async def aclose(self) -> None:
        await self.store.close()


async def build_container(
    settings: Settings,
    *,
    store: ResourceStore | None = None,
    clock: Clock = utc_now,
    migrate: bool = True,
) -> Container:
    """Build the adapters the settings ask for; pass `store` to use another one (tests)."""
    if store is None:
        engine = create_engine(settings.database_url)
        if migrate:
            await upgrade_database(engine)
        store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
    resources = ResourceService(
        store,
        base_url=settings.fhir_base_url,
        limits=SearchLimits(settings.default_page_size, settings.max_page_size),
        clock=clock,
    )
    return Container(
        settings=settings,
        store=store,
        resources=resources,
        bundles=BundleService(resources, max_entries=settings.max_bundle_entries),
        started=datetime.now(UTC),
    )
