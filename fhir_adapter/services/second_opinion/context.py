"""What every second-opinion use case shares: its settings, the store, the resource service,
the directory, the clock, and the few ways it reads and writes resources."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from fhir_adapter.access.guard import UNRESTRICTED
from fhir_adapter.codes import DEFAULT_PRIMARY_CARE_TAXONOMY
from fhir_adapter.fhir.elements import ResourceKey, local_key
from fhir_adapter.notices import (
    DEFAULT_RIGHTS_CONTACTS,
    NoticeContext,
    PlanContact,
    RightsContacts,
)
from fhir_adapter.notices.stored import context_to_json
from fhir_adapter.ports.directory import Directory
from fhir_adapter.ports.store import (
    RENDER,
    OutboxItem,
    ResourceStore,
    StoredResource,
    StoreTransaction,
)
from fhir_adapter.services.hooks import NoHooks
from fhir_adapter.services.resources import Clock, ResourceService, only_match, with_meta
from fhir_adapter.services.subscriptions import SubscriptionService
from fhir_adapter.workflow import pas


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    plan_organization: str
    primary_care_taxonomy: frozenset[str] = DEFAULT_PRIMARY_CARE_TAXONOMY
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 900.0
    lease_seconds: float = 120.0
    member_notice_url: str | None = None
    answer_within_seconds: float = 10.0
    subscription_allowed_hosts: frozenset[str] = frozenset()  # issue #16: http and private hosts
    plan_contact: PlanContact = field(
        default_factory=lambda: PlanContact("Health plan", "-", "711", (), "-", "-")
    )
    directory_url: str | None = None  # the plan is also named by its reference there
    candidates_offered: int = 5  # providers a decision offers the member, best-ranked first
    warn_at_share: float = 0.75  # a pended request past this share of its window is flagged
    rights_contacts: RightsContacts = DEFAULT_RIGHTS_CONTACTS
    taglines: Mapping[str, str] | None = None  # None: the built-in catalog


@dataclass(slots=True)
class WorkflowContext:
    """Shared by the use cases; `config` may be replaced (tests shorten the answer time)."""

    store: ResourceStore
    resources: ResourceService
    directory: Directory
    config: WorkflowConfig
    closed_days: Callable[[], set[date]]
    clock: Clock
    subscriptions: SubscriptionService | None = None

    def key(self, reference: str | None) -> str | None:
        """`Type/id` of a reference to this server, else None."""
        key = local_key(reference, self.resources.base_url)
        return str(key) if key else None

    async def read_key(self, tx: StoreTransaction, key: str | None) -> StoredResource | None:
        """The stored resource a `Type/id` key names (None for no key)."""
        return await tx.resources.read(*ResourceKey.parse(key)) if key else None

    async def replace(
        self, tx: StoreTransaction, current: StoredResource, content: dict[str, Any], now: datetime
    ) -> StoredResource:
        """The next version of `current` (the content's own meta dropped)."""
        content = {k: v for k, v in content.items() if k != "meta"}
        return await tx.resources.replace(current, next_version(content, current, now), now=now)

    async def write(
        self, tx: StoreTransaction, body: dict[str, Any], existing: StoredResource | None
    ) -> StoredResource:
        """Create `body`, or replace `existing` with it. What the workflow emits is valid by
        construction (its references name resources stored and checked before);
        tests/e2e/test_emitted_resources.py validates all of it, instead of each request."""
        now = self.clock()
        if existing is None:  # its references come from resources stored and checked before
            content = with_meta(body, self.resources.new_id(), 1, now)
            return await tx.resources.insert(content, now=now)
        return await tx.resources.replace(existing, next_version(body, existing, now), now=now)

    async def record_provenance(
        self, tx: StoreTransaction, provenance: dict[str, Any], now: datetime
    ) -> None:
        """Provenance names versions, some of them written in this transaction: stored as is."""
        await tx.resources.insert(with_meta(provenance, self.resources.new_id(), 1, now), now=now)

    async def send(
        self,
        tx: StoreTransaction,
        communication: dict[str, Any],
        destination: str | None,
        now: datetime,
    ) -> None:
        """Store a Communication and, when it must travel, owe its delivery in the same transaction."""
        stored = await self.write(tx, communication, None)
        if destination is not None:
            await tx.outbox.add(OutboxItem.owed(stored.id, destination, now))

    async def draft_notice(
        self,
        tx: StoreTransaction,
        draft: dict[str, Any],
        letter: NoticeContext,
        destination: str | None,
        now: datetime,
    ) -> None:
        """Store a notice in `preparation` and owe its rendering in the same transaction: the
        worker renders `letter` (as decided now) and then owes its delivery to `destination`."""
        stored = await self.write(tx, draft, None)
        job = {"letter": context_to_json(letter), "deliver_to": destination}
        await tx.outbox.add(OutboxItem.owed(stored.id, RENDER, now, payload=job))

    def member_destination(self) -> str | None:
        """Where the member's copy goes; None: it is read through the API."""
        return "member-notice-url" if self.config.member_notice_url else None

    async def decision_of(self, tx: StoreTransaction, task_id: str) -> StoredResource | None:
        """The ClaimResponse of a request's Task (found by its trace number)."""
        return await self.resources.find_conditional(  # under the Task row lock
            tx, "ClaimResponse", _decision_criteria(task_id), lock=False
        )

    async def decision_and_claim(
        self, tx: StoreTransaction, task_id: str, request_key: str
    ) -> tuple[StoredResource | None, StoredResource | None]:
        """The ClaimResponse of a request's Task and the request's Claim, in one search (both
        under the Task row lock: no advisory lock needed)."""
        wanted = [
            ("ClaimResponse", _decision_criteria(task_id)),
            ("Claim", f"requested-service={request_key}"),
        ]
        queries = [self.resources.conditional_query(t, c, UNRESTRICTED) for t, c in wanted]
        found = await tx.resources.matches(queries)
        decision, claim = (
            only_match(q, c, f) for q, (_, c), f in zip(queries, wanted, found, strict=True)
        )
        return decision, claim


class WorkflowHook(NoHooks):
    """A write hook of the workflow: one concern, with the workflow's shared context."""

    def __init__(self, context: WorkflowContext) -> None:
        self.context = context


def _decision_criteria(task_id: str) -> str:
    return f"identifier={pas.TRACE_SYSTEM}|{task_id}"


def next_version(content: dict[str, Any], current: StoredResource, now: datetime) -> dict[str, Any]:
    return with_meta(content, current.id, current.version_id + 1, now)
