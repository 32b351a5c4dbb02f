"""The composition root: the only place that picks concrete adapters and wires them together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from fhir_adapter.audit_writer import AuditWriterProcess
from fhir_adapter.codes import DEFAULT_PRIMARY_CARE_TAXONOMY
from fhir_adapter.config import Settings
from fhir_adapter.delivery.guarded import public_only_client
from fhir_adapter.delivery.http import HttpDeliverer
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.notices import PlanContact, RightsContacts
from fhir_adapter.notices.catalog import load_taglines
from fhir_adapter.ports.directory import Directory, DirectoryReader
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.security.issuer import (
    FIRST_START_LOCK,
    BuiltInIssuer,
    IssuerUrls,
    RegisteredClients,
)
from fhir_adapter.security.ratelimit import RateLimiter
from fhir_adapter.security.tokens import KeySource, RemoteKeys, StaticKeys, TokenVerifier
from fhir_adapter.services.audit import AuditTrail, default_spool_dir
from fhir_adapter.services.bundles import BundleService
from fhir_adapter.services.delivery import DeliveryConfig, DeliveryService
from fhir_adapter.services.metrics import MetricsService
from fhir_adapter.services.pas_lifecycle import PasChanges, PasInquiry, PasLookup
from fhir_adapter.services.prior_auth import PriorAuthService
from fhir_adapter.services.referenced import ReferencedResources
from fhir_adapter.services.resources import Clock, ResourceService, SearchLimits, utc_now
from fhir_adapter.services.second_opinion.context import WorkflowConfig
from fhir_adapter.services.second_opinion.service import SecondOpinionWorkflow
from fhir_adapter.services.subscriptions import SubscriptionService
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.workflow.deadlines import california_holidays


def examples_dir() -> Path:
    """examples/ from the installed package, or from the source tree in an editable install."""
    packaged = Path(__file__).parent / "_data" / "examples"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "examples"


def demo_directory_file() -> Path:
    return examples_dir() / "directory" / "plan-net-directory.json"


@dataclass(slots=True)
class Container:
    """Everything a request handler or CLI command needs, built once per process."""

    settings: Settings
    store: ResourceStore
    resources: ResourceService
    bundles: BundleService
    workflow: SecondOpinionWorkflow
    prior_auth: PriorAuthService
    delivery: DeliveryService
    subscriptions: SubscriptionService
    tokens: TokenVerifier
    issuer: BuiltInIssuer | None
    rate_limiter: RateLimiter
    audit: AuditTrail
    started: datetime
    metrics: MetricsService
    http: list[httpx.AsyncClient] = field(default_factory=list)

    async def aclose(self) -> None:
        await self.audit.close()
        await self.rate_limiter.aclose()
        for client in self.http:
            await client.aclose()
        await self.store.close()


# long-function: the composition root; it only builds each adapter and service in dependency order, and read top to bottom it is the map of what depends on what (the settings mappings are helpers below)
async def build_container(
    settings: Settings,
    *,
    store: ResourceStore | None = None,
    directory: Directory | None = None,
    deliverer: HttpDeliverer | None = None,
    clock: Clock = utc_now,
    migrate: bool = True,
) -> Container:
    """Build the adapters the settings ask for; pass `store` or `directory` to use others (tests)."""
    writer = None
    if store is None:
        writer = _audit_writer(settings)
        engine = create_engine(settings.database_url)
        if migrate:
            await upgrade_database(engine)
        store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
    http: list[httpx.AsyncClient] = []
    if directory is None:
        directory = _directory_client(settings, http)
    resources = ResourceService(
        store,
        base_url=settings.fhir_base_url,
        limits=SearchLimits(settings.default_page_size, settings.max_page_size),
        clock=clock,
    )
    if deliverer is None:
        deliverer = _http_deliverer(settings, http)
    # What a PAS ClaimResponse references, for $submit answers and PAS notifications alike.
    referenced = ReferencedResources(
        resources, directory if isinstance(directory, DirectoryReader) else None
    )
    subscriptions = SubscriptionService(
        store, resources, deliverer, clock=clock, referenced=referenced
    )
    workflow = SecondOpinionWorkflow(
        store,
        resources,
        directory,
        config=workflow_config(settings),
        closed_days=lambda: _closed_days(settings.holiday_ignore),
        clock=clock,
        subscriptions=subscriptions,
    )
    resources.set_hooks(workflow.write_hooks())
    bundles = BundleService(resources, max_entries=settings.max_bundle_entries)
    delivery = DeliveryService(
        store,
        resources,
        directory,
        deliverer,
        config=DeliveryConfig(
            max_attempts=settings.delivery_max_attempts,
            backoff_base_seconds=settings.delivery_backoff_base_seconds,
            backoff_max_seconds=settings.delivery_backoff_max_seconds,
            member_notice_url=settings.member_notice_url,
            lease_seconds=settings.worker_lease_seconds,
            plan_organization=settings.plan_organization,
        ),
        clock=clock,
        subscriptions=subscriptions,
    )
    issuer, tokens = await build_authentication(settings, store, http)
    subscriptions.client_registered = tokens.registered
    container = Container(
        settings=settings,
        store=store,
        resources=resources,
        bundles=bundles,
        workflow=workflow,
        prior_auth=PriorAuthService(
            resources,
            bundles,
            referenced,
            plan_organization=settings.plan_organization,
            directory_url=settings.effective_directory_url,
        ),
        delivery=delivery,
        subscriptions=subscriptions,
        tokens=tokens,
        issuer=issuer,
        rate_limiter=RateLimiter(settings.rate_limit, redis_url=settings.redis_url),
        audit=AuditTrail(
            store,
            writer=writer,
            spool_dir=settings.audit_spool_dir or default_spool_dir(settings.database_url),
            flush_seconds=settings.audit_flush_seconds,
            clock=clock,
        ),
        started=datetime.now(UTC),
        metrics=MetricsService(store, resources, plan=settings.plan_organization, clock=clock),
        http=http,
    )
    lookup = PasLookup(resources)  # issue #12: the PAS request after $submit
    container.prior_auth.changes = PasChanges(resources, workflow, lookup)
    container.prior_auth.inquiry = PasInquiry(resources, referenced, lookup)
    await ensure_plan_organization(container)
    return container


def workflow_config(settings: Settings) -> WorkflowConfig:
    """The second-opinion workflow's settings, from the service's."""
    return WorkflowConfig(
        plan_organization=settings.plan_organization,
        primary_care_taxonomy=settings.primary_care_taxonomy or DEFAULT_PRIMARY_CARE_TAXONOMY,
        retry_base_seconds=settings.retry_base_seconds,
        member_notice_url=settings.member_notice_url,
        lease_seconds=settings.worker_lease_seconds,
        answer_within_seconds=settings.answer_within_seconds,
        directory_url=settings.effective_directory_url,
        candidates_offered=settings.candidates_offered,
        warn_at_share=settings.deadline_warning_share,
        subscription_allowed_hosts=settings.subscription_allowed_hosts,
        plan_contact=PlanContact(
            name=settings.plan_name,
            phone=settings.plan_phone,
            tty=settings.plan_tty,
            address_lines=settings.plan_address,
            website=settings.plan_website,
            hours=settings.plan_hours,
            hours_es=settings.plan_hours_es,
        ),
        rights_contacts=rights_contacts(settings),
        taglines=load_taglines(
            settings.notice_taglines_file.read_text(encoding="utf-8")
            if settings.notice_taglines_file
            else None
        ),
    )


def _audit_writer(settings: Settings) -> AuditWriterProcess | None:
    """On PostgreSQL the AuditEvents are stored from a process of their own (audit_writer.py);
    SQLite keeps them in this process, its one writer."""
    if settings.audit_writer_process and settings.database_url.startswith("postgresql"):
        return AuditWriterProcess(settings.database_url)
    return None


def _directory_client(settings: Settings, http: list[httpx.AsyncClient]) -> DirectoryClient:
    """The provider directory over HTTP; its client joins `http` (closed with the container)."""
    http.append(httpx.AsyncClient(timeout=settings.directory_timeout_seconds))
    return DirectoryClient(
        http[-1],
        settings.effective_directory_url,
        network=settings.network,
        attempts=settings.directory_attempts,
        cache_seconds=settings.directory_cache_seconds,
    )


def _http_deliverer(settings: Settings, http: list[httpx.AsyncClient]) -> HttpDeliverer:
    """Letters to EHRs, and notifications to subscribers' public endpoints only."""
    http.append(httpx.AsyncClient(timeout=settings.delivery_timeout_seconds))
    http.append(
        public_only_client(
            settings.subscription_allowed_hosts, timeout=settings.delivery_timeout_seconds
        )
    )
    return HttpDeliverer(http[-2], notify_http=http[-1])


async def build_authentication(
    settings: Settings, store: ResourceStore, http: list[httpx.AsyncClient]
) -> tuple[BuiltInIssuer | None, TokenVerifier]:
    """An external issuer when one is configured, else the built-in one (SMART Backend Services)."""
    audience = settings.token_audience
    if settings.auth_issuer:
        keys: KeySource
        if settings.auth_jwks_file is not None:
            keys = StaticKeys(json.loads(settings.auth_jwks_file.read_text()))
        elif settings.auth_jwks_url:
            http.append(httpx.AsyncClient(timeout=settings.directory_timeout_seconds))
            keys = RemoteKeys(
                http[-1], settings.auth_jwks_url, refresh_seconds=settings.auth_jwks_refresh_seconds
            )
        else:
            raise ValueError(
                "FHIR_ADAPTER_AUTH_ISSUER needs FHIR_ADAPTER_AUTH_JWKS_URL or FHIR_ADAPTER_AUTH_JWKS_FILE"
            )
        verifier = TokenVerifier(
            keys,
            issuer=settings.auth_issuer,
            audience=audience,
            leeway_seconds=settings.auth_leeway_seconds,
        )
        return None, verifier
    origin = settings.public_origin
    issuer = await BuiltInIssuer.load(
        store,
        IssuerUrls(
            issuer=f"{origin}/auth",
            token_endpoint=f"{origin}/auth/token",
            jwks_uri=f"{origin}/auth/jwks",
            audience=audience,
        ),
        lifetime_seconds=settings.auth_token_lifetime_seconds,
        leeway_seconds=settings.auth_leeway_seconds,
    )
    verifier = TokenVerifier(
        issuer.key_source(),
        issuer=issuer.urls.issuer,
        audience=audience,
        leeway_seconds=settings.auth_leeway_seconds,
        registered=RegisteredClients(store, cache_seconds=settings.auth_client_check_seconds),
    )
    return issuer, verifier


@cache
def _closed_days(ignore: frozenset[str]) -> set[date]:
    return california_holidays(ignore=ignore)


async def ensure_plan_organization(container: Container) -> None:
    """ClaimResponse.insurer must resolve: store the plan's Organization if it is not there yet,
    from the demo directory when it lists it, else as a minimal payer Organization."""
    reference = container.settings.plan_organization
    if "://" in reference or reference.count("/") != 1:
        return
    resource_type, id = ResourceKey.parse(reference)
    async with container.store.transaction() as tx:
        await tx.resources.lock(FIRST_START_LOCK)  # instances starting together make one
        if await tx.resources.exists(resource_type, id):
            return
        body: dict[str, Any] = {"resourceType": resource_type, "id": id, "name": "Health plan"}
        seed = demo_directory_file()
        if seed.exists():
            for entry in json.loads(seed.read_text()).get("entry", []):
                resource = entry.get("resource", {})
                if resource.get("resourceType") == resource_type and resource.get("id") == id:
                    body = resource
        await container.resources.create_in(
            tx, body, path=resource_type, pending=frozenset(), id=id
        )


def rights_contacts(settings: Settings) -> RightsContacts:
    """The State Hearing, DMHC, Ombudsman and legal-help contacts from FHIR_ADAPTER_NOTICE_*."""
    return RightsContacts(
        hearing_phone=settings.notice_hearing_phone,
        hearing_tdd=settings.notice_hearing_tdd,
        hearing_address=settings.notice_hearing_address,
        hearing_online=settings.notice_hearing_online,
        hearing_fax=settings.notice_hearing_fax,
        legal_help_phone=settings.notice_legal_help_phone,
        legal_help_tdd=settings.notice_legal_help_tdd,
        dmhc_phone=settings.notice_dmhc_phone,
        dmhc_tdd=settings.notice_dmhc_tdd,
        dmhc_website=settings.notice_dmhc_website,
        ombudsman_phone=settings.notice_ombudsman_phone,
        dhcs_civil_rights_phone=settings.notice_dhcs_civil_rights_phone,
        hhs_civil_rights_phone=settings.notice_hhs_civil_rights_phone,
        hhs_civil_rights_tdd=settings.notice_hhs_civil_rights_tdd,
    )
