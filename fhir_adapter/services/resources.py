"""The FHIR REST interactions on the resource store: create, read, update, history, search."""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_adapter.access.compartment import compartment_patients
from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.access.owners import with_owner, without_headers
from fhir_adapter.access.scopes import Interaction, Reach
from fhir_adapter.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PreconditionFailedError,
    UnknownResourceTypeError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import ID_PATTERN, contained_ids, iter_references, parse_reference
from fhir_adapter.fhir.resources import SERVED_TYPES, is_known_type
from fhir_adapter.fhir.search import Filter, ReferenceCriterion, SearchQuery, parse_search
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.ports.hooks import WriteHooks, WriteResult
from fhir_adapter.ports.store import ResourceStore, SearchPage, StoredResource, StoreTransaction
from fhir_adapter.workflow.ownership import APPEND_ONLY, plan_owned_part
from fhir_adapter.workflow.provenance import change_provenance
from fhir_adapter.workflow.subscriptions import view

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, in UTC, at the millisecond precision meta.lastUpdated carries."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class NoHooks:
    """Plain FHIR: no conditions, checks or follow-up work."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        return None


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
        hooks: WriteHooks | None = None,
    ) -> None:
        self.store = store
        self.hooks: WriteHooks = hooks or NoHooks()
        self.base_url = base_url
        self.limits = limits or SearchLimits()
        self.clock = clock
        self.new_id = new_id

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

        `lock` serializes writers racing to create the same resource; lookups made under a lock
        the caller already holds can skip it. For a patient-scoped caller only the patient's own
        resources can match: otherwise whether a match was found (or several) would tell them
        about other members' data (`identifier=...`, `family=...&birthdate=...`). `new_keys` are
        `Type/id` keys of resources the caller's transaction is creating: criteria that require a
        reference to one of them match nothing stored, so no search is needed.
        """
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        query = self.parse_query(resource_type, params, strict=True)
        if not query.filters:
            raise InvalidRequestError(f"Conditional create criteria '{criteria}' select nothing")
        if new_keys and any(_requires_one_of(f, new_keys) for f in query.filters):
            return None
        if lock:
            await tx.resources.lock(f"{resource_type}?{sorted(query.applied)}")
        page = await tx.resources.search(
            guard.restrict(
                SearchQuery(resource_type, query.filters, 2, None, (), False, query.applied, False),
                "c",
            )
        )
        if len(page.matches) > 1:
            raise PreconditionFailedError(
                f"Conditional create: several {resource_type} resources match '{criteria}'"
            )
        return page.matches[0] if page.matches else None

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
        if (current is None and _compartment_only(guard, resource_type)) or (
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

    async def check_references(
        self,
        tx: StoreTransaction,
        body: dict[str, Any],
        *,
        path: str,
        pending: frozenset[str],
        guard: Guard = UNRESTRICTED,
    ) -> None:
        """Every reference must point somewhere: a stored resource, one being written, or a
        contained resource. References to other servers (absolute URLs) are taken as given."""
        issues: list[Issue] = []
        anchors = contained_ids(body)
        local_refs = []
        for where, ref_object in iter_references(body, path):
            raw = ref_object["reference"]
            expression = f"{where}.reference"
            ref = parse_reference(raw, base_url=self.base_url)
            if ref.kind == "contained":
                if raw != "#" and raw not in anchors:
                    issues.append(
                        Issue(
                            "invalid",
                            f"{expression} '{raw}' names no contained resource",
                            expression,
                        )
                    )
            elif ref.kind == "urn":
                issues.append(
                    Issue(
                        "invalid",
                        f"{expression} '{raw}' matches no fullUrl in the Bundle",
                        expression,
                    )
                )
            elif ref.kind == "local" and ref.local_key:
                if ref.local_key in pending:
                    continue
                if ref.resource_type not in SERVED_TYPES:
                    kind = (
                        "is not stored on this server"
                        if is_known_type(ref.resource_type or "")
                        else "is not a FHIR resource type"
                    )
                    issues.append(
                        Issue(
                            "not-found",
                            f"{expression} '{raw}': {ref.resource_type} {kind}; use an absolute reference",
                            expression,
                        )
                    )
                else:
                    local_refs.append((expression, raw, (ref.resource_type, ref.id or "")))
            elif ref.kind in ("conditional", "other"):
                issues.append(
                    Issue(
                        "invalid", f"{expression} '{raw}' is not a resolvable reference", expression
                    )
                )
        found = await tx.resources.existing(key for _, _, key in local_refs)
        if found and guard.patient_bound:
            # A member's own writes must not tell them which of other members' ids exist.
            stored = await tx.resources.read_many(found)
            visible = {key for key, resource in stored.items() if guard.visible(resource.content)}
            found = {k for k in found if f"{k[0]}/{k[1]}" in visible}
        for expression, raw, key in local_refs:
            if key not in found:
                issues.append(
                    Issue(
                        "not-found",
                        f"{expression} '{raw}' points to a resource that does not exist",
                        expression,
                    )
                )
        if not issues:
            return
        if any(i.code == "invalid" for i in issues):
            raise InvalidRequestError(issues=issues)
        raise UnprocessableEntityError(issues=issues)


async def search_guarded(tx: StoreTransaction, query: SearchQuery, guard: Guard) -> SearchPage:
    """A search as the caller may see it: 403 without a search scope, only their compartment for
    patient scopes, and `_include`d resources they may not read left out."""
    guard.require(query.resource_type, "s")
    page = await tx.resources.search(guard.restrict(query))
    matches = [shown(guard, r) for r in page.matches]
    if not page.included:
        return SearchPage(matches, page.included, page.total, page.next_cursor)
    return SearchPage(matches, guard.filter_included(page.included), page.total, page.next_cursor)


async def check_member_identifiers(tx: StoreTransaction, body: dict[str, Any], path: str) -> None:
    """Issue #16: a member's token may not file requests under an identifier system that
    organizations submit requests in (so it cannot take an identifier an EHR will use)."""
    for index, identifier in enumerate(body.get("identifier") or []):
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if not isinstance(system, str) or not system or "|" in system:
            continue
        query = parse_search(
            "ServiceRequest",
            [("identifier", f"{system}|")],
            base_url=None,
            default_count=50,
            max_count=50,
        )
        page = await tx.resources.search(dataclasses.replace(query, with_total=False))
        for found in page.matches:
            requester = str((found.content.get("requester") or {}).get("reference") or "")
            if requester and not requester.startswith(("Patient/", "RelatedPerson/")):
                where = f"{path}.identifier[{index}].system"
                raise ForbiddenError(
                    f"{where}: '{system}' is an identifier system organizations submit "
                    "requests in; a member's token cannot use it",
                    expression=where,
                )


def _compartment_only(guard: Guard, resource_type: str) -> bool:
    """Whether the caller updates `resource_type` under patient scopes alone."""
    access = guard.access
    return (
        guard.patient_bound
        and access is not None
        and access.reach(resource_type, "u") is Reach.COMPARTMENT
    )


def shown(guard: Guard, stored: StoredResource) -> StoredResource:
    """A stored resource as a client sees it: a Subscription's `channel.header` is write-only."""
    if guard.access is None or stored.resource_type != "Subscription":
        return stored
    return dataclasses.replace(stored, content=without_headers(stored.content))


def shown_result(guard: Guard, result: WriteResult) -> WriteResult:
    return dataclasses.replace(result, resource=shown(guard, result.resource))


def as_subscriber_wrote(
    guard: Guard, current: dict[str, Any] | None, body: dict[str, Any], path: str
) -> dict[str, Any]:
    """Issue #16: a Subscription belongs to the client that writes it, and tells it only what it
    may read. Headers left out of an update are kept (clients never see them to send back)."""
    if body.get("resourceType") != "Subscription" or guard.access is None:
        return body
    if view(body).content != "empty":
        guard.require(
            "ClaimResponse",
            "r",
            expression=f"{path}.channel.payload",
        )
    channel = body.get("channel")
    kept = ((current or {}).get("channel") or {}).get("header")
    if isinstance(channel, dict) and "header" not in channel and kept:
        body = {**body, "channel": {**channel, "header": kept}}
    return with_owner(body, guard.access)


def check_match_visible(guard: Guard, existing: StoredResource) -> None:
    """A conditional create that matches a resource the caller may not see must not return it."""
    if not guard.visible(existing.content):
        raise ForbiddenError(
            f"The conditional create matches a {existing.resource_type} this access token may not see"
        )


def check_plan_owned(
    guard: Guard,
    current: dict[str, Any] | None,
    body: dict[str, Any],
    interaction: Interaction,
    path: str,
) -> bool:
    """Issue #16: what the plan owns changes through the workflow or by plan staff, and the
    record of what happened (Provenance) is never rewritten."""
    resource_type = str(body.get("resourceType"))
    if current is not None and resource_type in APPEND_ONLY:
        raise ForbiddenError(
            f"{resource_type} is append-only: a recorded version is never replaced",
            expression=path,
        )
    part = plan_owned_part(resource_type, current, body)
    if part is not None and not guard.plan_staff(resource_type, interaction):
        raise ForbiddenError(
            f"{part}: it changes only through the workflow operations ($submit, $decide, "
            "consultation reports) or by plan staff (a scope naming the resource type)",
            expression=path,
        )
    # Plan staff over REST (the workflow records its own Provenance).
    return part is not None and guard.access is not None and resource_type != "Provenance"


SERVER_WRITTEN = frozenset({"AuditEvent"})


def require_client_writable(resource_type: str) -> None:
    """The audit trail is written by the server alone; no client may add to it or change it."""
    if resource_type in SERVER_WRITTEN:
        raise MethodNotAllowedError(
            f"{resource_type} is written by the server only; it is read-only", allow="GET"
        )


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


def require_served(resource_type: str) -> None:
    if resource_type not in SERVED_TYPES:
        raise UnknownResourceTypeError(
            f"Resource type '{resource_type}' is not served here"
            if is_known_type(resource_type)
            else f"'{resource_type}' is not a FHIR resource type"
        )


def check_id(id: str) -> None:
    if not ID_PATTERN.match(id):
        raise InvalidRequestError(
            f"'{id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
        )


def check_body_type(body: Any, resource_type: str) -> None:
    """The body must be a resource of the URL's type."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object holding a FHIR resource")
    found = body.get("resourceType")
    if found != resource_type:
        raise InvalidRequestError(
            f"resourceType '{found}' does not match the URL, which names {resource_type}",
            expression="resourceType",
        )


_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: str) -> int:
    match = _IF_MATCH.match(value)
    if not match:
        raise InvalidRequestError(f"If-Match '{value[:40]}' is not a version ETag such as W/\"3\"")
    return int(match.group(1))


def with_meta(body: dict[str, Any], id: str, version: int, now: datetime) -> dict[str, Any]:
    """The resource as stored: server-assigned id, versionId and lastUpdated, the client's other meta kept."""
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(now)
    content = {"resourceType": body["resourceType"], "id": id, "meta": meta}
    content.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta"))
    return content
