"""The FHIR REST interactions on the resource store: create, read, update, history, search."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_adapter.access.compartment import compartment_patients
from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PreconditionFailedError,
)
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.search import Filter, ReferenceCriterion, SearchQuery, parse_search
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.ports.hooks import WriteHooks, WriteResult
from fhir_adapter.ports.store import ResourceStore, SearchPage, StoredResource, StoreTransaction
from fhir_adapter.services.access_rules import (
    as_subscriber_wrote,
    check_match_visible,
    check_member_identifiers,
    check_plan_owned,
    compartment_only,
    require_client_writable,
    search_guarded,
    shown,
    shown_result,
)
from fhir_adapter.services.hooks import HookChain
from fhir_adapter.services.reference_check import check_references
from fhir_adapter.services.request_checks import (
    check_body_type,
    check_id,
    parse_if_match,
    require_served,
)
from fhir_adapter.workflow.provenance import change_provenance

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, in UTC, at the millisecond precision meta.lastUpdated carries."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class SearchLimits:
    default_count: int = 50
    max_count: int = 500


class ResourceService:
    """FHIR interactions with the version, reference and conditional-create rules of R4 REST."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        base_url: str,
        limits: SearchLimits | None = None,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        hooks: Sequence[WriteHooks] = (),
    ) -> None:
        self.store = store
        self.hooks = HookChain(hooks)
        self.base_url = base_url
        self.limits = limits or SearchLimits()
        self.clock = clock
        self.new_id = new_id

    def set_hooks(self, hooks: Sequence[WriteHooks]) -> None:
        """The write hooks, one concern each, in the order they run (the composition root sets
        them once the workflow, which itself writes through this service, is built)."""
        self.hooks = HookChain(hooks)

    # -- single-resource interactions ---------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        body: Any,
        *,
        if_none_exist: str | None = None,
        guard: Guard = UNRESTRICTED,
    ) -> WriteResult:
        require_served(resource_type)
        require_client_writable(resource_type)
        guard.require(resource_type, "c")
        check_body_type(body, resource_type)
        validate_resource(body)
        criteria = if_none_exist or self.hooks.implicit_condition(body)
        async with self.store.transaction() as tx:
            if criteria:
                existing = await self.find_conditional(tx, resource_type, criteria, guard=guard)
                if existing is not None:
                    check_match_visible(guard, existing)
                    self.check_same_patient(existing, body, resource_type)
                    return WriteResult(existing, created=False, path=resource_type)
            result = await self.create_in(
                tx, body, path=resource_type, pending=frozenset(), guard=guard
            )
            [result] = await self.hooks.after_writes(tx, [result])
        await self.hooks.after_commit([result])
        return shown_result(guard, result)

    async def update(
        self,
        resource_type: str,
        id: str,
        body: Any,
        *,
        if_match: str | None = None,
        guard: Guard = UNRESTRICTED,
    ) -> WriteResult:
        require_served(resource_type)
        require_client_writable(resource_type)
        guard.require(resource_type, "u")
        check_id(id)
        check_body_type(body, resource_type)
        if body.get("id") != id:
            raise InvalidRequestError(
                f"{resource_type}.id must be present and equal the id in the URL ('{id}')",
                expression=f"{resource_type}.id",
            )
        validate_resource(body)
        async with self.store.transaction() as tx:
            result = await self.update_in(
                tx, body, if_match=if_match, path=resource_type, pending=frozenset(), guard=guard
            )
            [result] = await self.hooks.after_writes(tx, [result])
        await self.hooks.after_commit([result])
        return shown_result(guard, result)

    async def read(
        self, resource_type: str, id: str, *, guard: Guard = UNRESTRICTED
    ) -> StoredResource:
        require_served(resource_type)
        guard.require(resource_type, "r")
        check_id(id)
        async with self.store.transaction(write=False) as tx:
            found = await tx.resources.read(resource_type, id)
        if found is None or not guard.visible(found.content):
            raise NotFoundError(f"{resource_type}/{id} is not known")
        return shown(guard, found)

    async def vread(
        self, resource_type: str, id: str, version: str, *, guard: Guard = UNRESTRICTED
    ) -> StoredResource:
        require_served(resource_type)
        guard.require(resource_type, "r")
        check_id(id)
        if not version.isdigit():
            raise NotFoundError(f"{resource_type}/{id} has no version '{version}'")
        async with self.store.transaction(write=False) as tx:
            current = await tx.resources.read(resource_type, id)
            if current is None or not guard.visible(current.content):
                raise NotFoundError(f"{resource_type}/{id} is not known")
            found = await tx.resources.vread(resource_type, id, int(version))
        if found is None or not guard.visible(found.content):
            raise NotFoundError(f"{resource_type}/{id} has no version {version}")
        return shown(guard, found)

    async def history(
        self, resource_type: str, id: str, *, guard: Guard = UNRESTRICTED
    ) -> list[StoredResource]:
        require_served(resource_type)
        guard.require(resource_type, "r")
        check_id(id)
        async with self.store.transaction(write=False) as tx:
            versions = await tx.resources.history(resource_type, id)
        if not versions or not guard.visible(versions[0].content):
            raise NotFoundError(f"{resource_type}/{id} is not known")
        return [shown(guard, v) for v in versions if guard.visible(v.content)]

    def parse_query(
        self, resource_type: str, params: Iterable[tuple[str, str]], *, strict: bool = False
    ) -> SearchQuery:
        require_served(resource_type)
        return parse_search(
            resource_type,
            params,
            base_url=self.base_url,
            default_count=self.limits.default_count,
            max_count=self.limits.max_count,
            strict=strict,
        )

    async def search(self, query: SearchQuery, *, guard: Guard = UNRESTRICTED) -> SearchPage:
        async with self.store.transaction(write=False) as tx:
            return await search_guarded(tx, query, guard)

    async def search_all(
        self, tx: StoreTransaction, resource_type: str, params: Iterable[tuple[str, str]]
    ) -> list[StoredResource]:
        """Every match of an internal search, page after page (metrics, the review workspace)."""
        query = self.parse_query(resource_type, [*params, ("_count", str(self.limits.max_count))])
        query = replace(query, with_total=False)
        found: list[StoredResource] = []
        while True:
            page = await tx.resources.search(query)
            found += page.matches
            if page.next_cursor is None:
                return found
            query = replace(query, cursor=page.next_cursor)

    # -- building blocks shared with Bundle processing ----------------------------------------

    async def find_conditional(
        self,
        tx: StoreTransaction,
        resource_type: str,
        criteria: str,
        *,
        lock: bool = True,
        guard: Guard = UNRESTRICTED,
        new_keys: Collection[str] = (),
    ) -> StoredResource | None:
        """The one resource matching `If-None-Exist` criteria, None for no match; 412 for several.

        `lock` serializes writers racing to create the same resource (`matches_locked`: only
        when nothing matched); lookups made under a lock the caller already holds can skip it. For a patient-scoped caller only the patient's own
        resources can match: otherwise whether a match was found (or several) would tell them
        about other members' data (`identifier=...`, `family=...&birthdate=...`). `new_keys` are
        `Type/id` keys of resources the caller's transaction is creating: criteria that require a
        reference to one of them match nothing stored, so no search is needed.
        """
        query = self.conditional_query(resource_type, criteria, guard)
        if new_keys and any(_requires_one_of(f, new_keys) for f in query.filters):
            return None
        found = await tx.resources.matches([query])
        if lock:
            found = await matches_locked(tx, [query], found)
        return only_match(query, criteria, found[0])

    def conditional_query(self, resource_type: str, criteria: str, guard: Guard) -> SearchQuery:
        """The search of `If-None-Exist` criteria: two matches at most, within the caller's reach."""
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        query = self.parse_query(resource_type, params, strict=True)
        if not query.filters:
            raise InvalidRequestError(f"Conditional create criteria '{criteria}' select nothing")
        return guard.restrict(
            SearchQuery(resource_type, query.filters, 2, None, (), False, query.applied, False),
            "c",
        )

    def check_same_patient(self, existing: StoredResource, body: dict[str, Any], path: str) -> None:
        """Issue #16 (identifier squatting): a conditional match or a resubmission that lands on
        another patient's resource is a conflict, never a link across patients. A Patient matched by
        its identifiers is that patient: the id a Bundle gave its copy (`fullUrl` `.../Patient/X`)
        names no stored patient, so it is no evidence of another one."""
        if existing.resource_type == "Patient":
            return
        base = self.base_url
        sent = compartment_patients(body, base_url=base)
        stored = compartment_patients(existing.content, base_url=base)
        if sent and stored and sent != stored:
            raise ConflictError(
                f"{path}: the {existing.resource_type} these identifiers or criteria match "
                "belongs to another patient; use identifiers of this patient's own request",
                expression=path,
            )

    async def create_in(
        self,
        tx: StoreTransaction,
        body: dict[str, Any],
        *,
        path: str,
        pending: frozenset[str],
        id: str | None = None,
        guard: Guard = UNRESTRICTED,
    ) -> WriteResult:
        """Create inside `tx`; `pending` lists `Type/id` keys the same transaction is writing."""
        guard.check_write(body, "c", expression=path)
        staff = check_plan_owned(guard, None, body, "c", path)
        if guard.patient_bound and body.get("resourceType") == "ServiceRequest":
            await check_member_identifiers(tx, body, path)
        body = as_subscriber_wrote(guard, None, body, path)
        await self.check_references(tx, body, path=path, pending=pending, guard=guard)
        now = self.clock()
        content = with_meta(body, id or self.new_id(), 1, now)
        stored = await tx.resources.insert(content, now=now)
        log.info("created %s version 1", stored.key)
        if staff:
            await self._staff_provenance(tx, stored, guard, now)
        return WriteResult(stored, created=True, path=path)

    async def update_in(
        self,
        tx: StoreTransaction,
        body: dict[str, Any],
        *,
        if_match: str | None,
        path: str,
        pending: frozenset[str],
        guard: Guard = UNRESTRICTED,
    ) -> WriteResult:
        resource_type, id = body["resourceType"], body["id"]
        current = await tx.resources.read_for_update(resource_type, id)
        # Issue #16 (existence oracle): for a member's token, another member's id and an id
        # nobody has get the same answer; members create with POST, the server picks the id.
        if (current is None and compartment_only(guard, resource_type)) or (
            current is not None and not guard.may_change(current.content, "u")
        ):
            raise NotFoundError(f"{resource_type}/{id} is not known", expression=f"{path}.id")
        guard.check_write(body, "u", expression=path)
        staff = False
        if current is not None:
            staff = check_plan_owned(guard, current.content, body, "u", path)
            body = as_subscriber_wrote(guard, current.content, body, path)
        expected = parse_if_match(if_match) if if_match else None
        if expected is not None and (current is None or current.version_id != expected):
            have = f"version {current.version_id}" if current else "no version"
            raise PreconditionFailedError(
                f"If-Match asked for version {expected} of {resource_type}/{id}, the server has {have}"
            )
        await self.check_references(tx, body, path=path, pending=pending, guard=guard)
        if current is None:  # update-as-create with the client's id
            return await self.create_in(tx, body, path=path, pending=pending, id=id, guard=guard)
        now = self.clock()
        content = with_meta(body, id, current.version_id + 1, now)
        stored = await tx.resources.replace(current, content, now=now)
        log.info("updated %s to version %d", stored.key, stored.version_id)
        if staff:
            await self._staff_provenance(tx, stored, guard, now)
        return WriteResult(stored, created=False, path=path)

    async def check_references(
        self,
        tx: StoreTransaction,
        body: dict[str, Any],
        *,
        path: str,
        pending: frozenset[str],
        guard: Guard = UNRESTRICTED,
    ) -> None:
        """Every reference must point somewhere (reference_check.check_references)."""
        await check_references(
            tx, body, base_url=self.base_url, path=path, pending=pending, guard=guard
        )

    async def _staff_provenance(
        self, tx: StoreTransaction, stored: StoredResource, guard: Guard, now: datetime
    ) -> None:
        """Plan staff changed what the plan owns over REST: that leaves a Provenance too."""
        assert guard.access is not None
        provenance = change_provenance(
            target=f"{stored.key}/_history/{stored.version_id}",
            recorded=now,
            activity="changed by plan staff",
            client_id=guard.access.client_id,
        )
        await tx.resources.insert(with_meta(provenance, self.new_id(), 1, now), now=now)


async def matches_locked(
    tx: StoreTransaction, queries: Sequence[SearchQuery], found: Sequence[list[StoredResource]]
) -> list[list[StoredResource]]:
    """Optimistic conditional creates: `found` was searched without a lock, and a match is used
    as it is. Only criteria that matched nothing are locked (one statement, in sorted order),
    then searched again: the search after the lock sees what its previous holder committed, so
    two writers racing to create the same resource store it once. Resources shared by every
    submission (the EHR's practitioners and organizations) then take no lock, and submissions
    of several processes do not queue behind one another (issue #13)."""
    found = list(found)
    missing = [i for i, matches in enumerate(found) if not matches]
    keys = [condition_lock(queries[i]) for i in missing]
    if missing and await tx.resources.lock(*keys):
        again = await tx.resources.matches([queries[i] for i in missing])
        for i, matches in zip(missing, again, strict=True):
            found[i] = matches
    return found


def condition_lock(query: SearchQuery) -> str:
    """The advisory lock of conditional creates with the same criteria."""
    return f"{query.resource_type}?{sorted(query.applied)}"


def only_match(
    query: SearchQuery, criteria: str, found: list[StoredResource]
) -> StoredResource | None:
    """The one match of conditional criteria, None for none; 412 for several."""
    if len(found) > 1:
        raise PreconditionFailedError(
            f"Conditional create: several {query.resource_type} resources match '{criteria}'"
        )
    return found[0] if found else None


def _requires_one_of(flt: Filter, keys: Collection[str]) -> bool:
    """Whether a filter only matches resources that reference one of `keys` (filters are ANDed)."""
    return (
        flt.param.type == "reference"
        and not flt.negate
        and all(
            isinstance(c, ReferenceCriterion)
            and c.url is None
            and c.resource_type is not None
            and f"{c.resource_type}/{c.id}" in keys
            for c in flt.criteria
        )
    )


def with_meta(body: dict[str, Any], id: str, version: int, now: datetime) -> dict[str, Any]:
    """The resource as stored: server-assigned id, versionId and lastUpdated, the client's other meta kept."""
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(now)
    content = {"resourceType": body["resourceType"], "id": id, "meta": meta}
    content.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta"))
    return content
