"""What the review pages show, read from the store: the queue of pended requests and one request
with everything a reviewer needs. Minimum necessary: the member's name and member id, never the
birth date, address or contact details."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_adapter.bootstrap import Container
from fhir_adapter.codes import (
    MEMBER_ID_TYPE,
    REASON_SYSTEM,
    REVIEW_REASON_SYSTEM,
    REVIEW_TEXT,
    RULE_TRAIL_EXTENSION,
    STATUS_SYSTEM,
    TASK_CODE_SYSTEM,
    BusinessStatus,
    ReviewReason,
)
from fhir_adapter.fhir.elements import (
    ResourceKey,
    display_name,
    local_key,
    reference_of,
    reference_type,
)
from fhir_adapter.policy.facts import Provider
from fhir_adapter.ports.directory import DirectoryReader
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.workflow.deadlines import is_expedited, is_flagged, past_warning_share
from fhir_adapter.workflow.intake import is_fulfillment_task, listed_reasons

DEFAULT_WARNING_SHARE = 0.75  # of the time allowed; FHIR_ADAPTER_DEADLINE_WARNING_SHARE
DIRECTORY_DOWN = "directory-unavailable"
WHY_TEXT = {
    **{reason.value: text for reason, text in REVIEW_TEXT.items()},
    DIRECTORY_DOWN: "The provider directory could not be reached.",
}
# A reviewer's denial: a coded reason (carried with the reviewer's words in the ClaimResponse's
# processNote and in the member's notice) on top of the workflow's `reviewer-denied`.
DENIAL_CODES = {
    "not-medically-necessary": "A second opinion is not medically necessary for this condition",
    "opinion-already-given": "A second opinion on this question was already given",
    "not-a-covered-service": "The service asked about is not a covered benefit",
    "insufficient-information": "The information sent does not allow a decision",
    "other": "Another reason (explain below)",
}
WHY_SHORT = {
    ReviewReason.NO_LISTED_REASON.value: "no listed reason",
    ReviewReason.NO_QUALIFIED_PROVIDER.value: "no qualified provider",
    ReviewReason.SPECIALTY_UNKNOWN.value: "specialty unknown",
    ReviewReason.REQUESTER_UNSETTLED.value: "requester to check",
    ReviewReason.REQUESTER_NOT_PARTICIPATING.value: "requester not participating",
    DIRECTORY_DOWN: "directory unreachable",
}
PENDED = (BusinessStatus.PENDING_REVIEW.value, BusinessStatus.PENDING_DIRECTORY.value)


@dataclass(frozen=True, slots=True)
class QueueItem:
    task_id: str
    member: str
    expedited: bool
    reasons: tuple[str, ...]  # the listed reasons (policy II.A-E) the request names
    why: str  # a ReviewReason code or DIRECTORY_DOWN
    received: datetime | None
    due: datetime | None
    share_elapsed: float | None  # of the time allowed, at `now`
    warned: bool  # past the early-warning share
    seconds_left: float | None

    @property
    def time_left(self) -> str:
        return format_left(self.seconds_left)


def format_left(seconds: float | None) -> str:
    if seconds is None:
        return "no deadline recorded"
    if seconds <= 0:
        return "overdue"
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min"


def deadline_share(
    received: datetime | None, due: datetime | None, now: datetime
) -> tuple[float | None, float | None]:
    """(share of the allowed time used, seconds left) from Task.restriction.period."""
    if received is None or due is None:
        return None, None
    allowed = (due - received).total_seconds()
    used = (now - received).total_seconds()
    share = used / allowed if allowed > 0 else 1.0
    return share, (due - now).total_seconds()


@dataclass
class Queue:
    items: list[QueueItem]
    total: int
    expedited: int
    warned: int
    by_why: dict[str, int] = field(default_factory=dict)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else None
    except ValueError:
        return None


def business_status(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == STATUS_SYSTEM:
            return str(coding.get("code"))
    return None


def _codes(node: Any, system: str) -> list[str]:
    """Every code of `system` anywhere in `node` (a ClaimResponse names its review reason once)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("system") == system and isinstance(node.get("code"), str):
            found.append(node["code"])
        for value in node.values():
            found += _codes(value, system)
    elif isinstance(node, list):
        for item in node:
            found += _codes(item, system)
    return found


def person_name(resource: dict[str, Any] | None) -> str:
    """A person's name as recorded (an Organization's `name` is a string)."""
    name = (resource or {}).get("name")
    if isinstance(name, str):
        return name
    return display_name(resource) or "(no name recorded)"


def member_id(patient: dict[str, Any] | None) -> str | None:
    for identifier in (patient or {}).get("identifier") or []:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) == MEMBER_ID_TYPE:
                return str(identifier.get("value"))
    return None


class Workspace:
    """Reads for the review pages (the writes go through ReviewerDecisions.decide_by_reviewer)."""

    def __init__(self, container: Container, *, warning_share: float = DEFAULT_WARNING_SHARE):
        self.container = container
        self.warning_share = warning_share

    def _warned(self, task: dict[str, Any], now: datetime) -> bool:
        """Past the early-warning share of its window, or flagged by the deadline sweep."""
        return past_warning_share(task, self.warning_share, now) or is_flagged(task)

    def _key(self, reference: str | None) -> ResourceKey | None:
        return local_key(reference, self.container.resources.base_url)

    async def _search(
        self, tx: StoreTransaction, resource_type: str, params: list[tuple[str, str]]
    ) -> list[StoredResource]:
        return await self.container.resources.search_all(tx, resource_type, params)

    async def _read(self, tx: StoreTransaction, reference: str | None) -> dict[str, Any] | None:
        key = self._key(reference)
        if key is None:
            return None
        found = await tx.resources.read(*key)
        return found.content if found else None

    async def queue(
        self,
        now: datetime,
        *,
        expedited: bool | None = None,
        reason: str | None = None,
        why: str | None = None,
    ) -> Queue:
        """Pended requests, the least time left first; counts are of the whole queue."""
        items: list[QueueItem] = []
        async with self.container.store.transaction(write=False) as tx:
            tasks = await self._search(
                tx, "Task", [("code", f"{TASK_CODE_SYSTEM}|fulfill"), ("status", "on-hold")]
            )
            for task in tasks:
                status = business_status(task.content)
                if status not in PENDED:
                    continue
                request = await self._read(tx, reference_of(task.content.get("focus"))) or {}
                patient = await self._read(tx, reference_of(request.get("subject")))
                decision = await self._read(tx, _decision_reference(task.content))
                reasons = tuple(sorted(listed_reasons(request)))
                whys = _codes(decision, REVIEW_REASON_SYSTEM)
                period = (task.content.get("restriction") or {}).get("period") or {}
                received, due = _instant(period.get("start")), _instant(period.get("end"))
                share, left = deadline_share(received, due, now)
                items.append(
                    QueueItem(
                        task_id=task.id,
                        member=person_name(patient),
                        expedited=is_expedited(request),
                        reasons=reasons,
                        why=DIRECTORY_DOWN
                        if status == BusinessStatus.PENDING_DIRECTORY.value
                        else (whys[0] if whys else ReviewReason.NO_LISTED_REASON.value),
                        received=received,
                        due=due,
                        share_elapsed=share,
                        warned=self._warned(task.content, now),
                        seconds_left=left,
                    )
                )
        items.sort(key=lambda i: (i.seconds_left is None, i.seconds_left or 0.0, i.task_id))
        counts: dict[str, int] = {}
        for item in items:
            counts[item.why] = counts.get(item.why, 0) + 1
        shown = [
            i
            for i in items
            if (expedited is None or i.expedited == expedited)
            and (not reason or reason in i.reasons or (reason == "none" and not i.reasons))
            and (not why or i.why == why)
        ]
        return Queue(
            items=shown,
            total=len(items),
            expedited=sum(i.expedited for i in items),
            warned=sum(i.warned for i in items),
            by_why=counts,
        )

    async def request(self, task_id: str, now: datetime) -> dict[str, Any] | None:
        """Everything the request page shows, or None when there is no such request."""
        async with self.container.store.transaction(write=False) as tx:
            task = await tx.resources.read("Task", task_id)
            if task is None or not is_fulfillment_task(task.content):
                return None
            history = await tx.resources.history("Task", task_id)
            request = await self._read(tx, reference_of(task.content.get("focus"))) or {}
            patient = await self._read(tx, reference_of(request.get("subject")))
            requester = await self._read(tx, reference_of(request.get("requester")))
            conditions = [
                c
                for r in request.get("reasonReference") or []
                if (c := await self._read(tx, reference_of(r)))
            ]
            decision = await self._read(tx, _decision_reference(task.content))
            request_key = self._key(reference_of(task.content.get("focus")))
            notices = (
                await self._search(tx, "Communication", [("based-on", str(request_key))])
                if request_key
                else []
            )
        period = (task.content.get("restriction") or {}).get("period") or {}
        received, due = _instant(period.get("start")), _instant(period.get("end"))
        _, left = deadline_share(received, due, now)
        return {
            "task": task.content,
            "task_id": task_id,
            "status": task.content.get("status"),
            "business_status": business_status(task.content),
            "undecided": task.content.get("status") in ("requested", "received", "on-hold"),
            "member": person_name(patient),
            "member_id": member_id(patient) or "(not recorded)",
            "requester": person_name(requester) if requester else "(not recorded)",
            "requester_type": reference_type(reference_of(request.get("requester"))) or ""
            if requester is None
            else requester.get("resourceType"),
            "expedited": is_expedited(request),
            "reason_codes": [
                c.get("code")
                for rc in request.get("reasonCode") or []
                for c in rc.get("coding") or []
                if c.get("system") == REASON_SYSTEM
            ],
            "reason_texts": [
                rc.get("text") for rc in request.get("reasonCode") or [] if rc.get("text")
            ],
            "notes": [n.get("text") for n in request.get("note") or [] if n.get("text")],
            "conditions": [_condition_text(c) for c in conditions],
            "why": [WHY_TEXT.get(w, w) for w in _codes(decision, REVIEW_REASON_SYSTEM)],
            "trail": _trail(decision),
            "disposition": (decision or {}).get("disposition"),
            "received": received,
            "due": due,
            "time_left": format_left(left),
            "warned": self._warned(task.content, now),
            "history": [_history_row(v) for v in history],
            "notices": [_notice_row(n) for n in notices],
            "notices_preparing": any(n.content.get("status") == "preparation" for n in notices),
        }

    async def timeliness(self, now: datetime) -> Timeliness:
        return await _timeliness(self, now)

    async def candidates(self, task_id: str) -> list[dict[str, Any]]:
        """The directory's qualified providers, in network first, with their contact details."""
        try:
            in_network, out_of_network = await self.container.workflow.candidates(task_id)
        except Exception:  # the directory is down: the page says so, the reviewer may retry
            return []
        reader = self.container.workflow.directory
        found: list[dict[str, Any]] = []
        for provider in [*in_network, *out_of_network]:
            role = (
                await reader.read(provider.role_reference)
                if isinstance(reader, DirectoryReader)
                else None
            )
            found.append(_candidate(provider, role))
        return found


def _candidate(provider: Provider, role: dict[str, Any] | None) -> dict[str, Any]:
    telecom = [
        f"{t.get('system', 'contact')}: {t.get('value')}"
        for t in (role or {}).get("telecom") or []
        if t.get("value")
    ]
    if provider.phone and not any(provider.phone in t for t in telecom):
        telecom.append(f"phone: {provider.phone}")
    if provider.address:
        telecom.append(", ".join(provider.address))
    if provider.organization_name:
        telecom.insert(0, provider.organization_name)
    return {
        "reference": provider.role_reference,
        "name": provider.display or provider.role_reference,
        "in_network": provider.in_network,
        "specialties": ", ".join(provider.specialty_names or tuple(sorted(provider.specialties))),
        "npi": provider.npi,
        "contact": telecom,
        "endpoint": provider.fhir_endpoint,
    }


def _decision_reference(task: dict[str, Any]) -> str | None:
    for output in task.get("output") or []:
        reference = reference_of(output.get("valueReference"))
        if reference and "ClaimResponse/" in reference:
            return reference
    return None


def _trail(decision: dict[str, Any] | None) -> list[dict[str, str]]:
    steps = []
    for extension in (decision or {}).get("extension") or []:
        if extension.get("url") == RULE_TRAIL_EXTENSION:
            parts = {
                p.get("url"): p.get("valueString") or p.get("valueCode")
                for p in extension.get("extension") or []
            }
            steps.append(
                {
                    "rule": parts.get("rule") or "",
                    "basis": parts.get("basis") or "",
                    "result": parts.get("result") or "",
                }
            )
    return steps


def notice_pdf(communication: dict[str, Any]) -> bytes | None:
    for payload in communication.get("payload") or []:
        attachment = payload.get("contentAttachment") or {}
        if attachment.get("contentType") == "application/pdf" and attachment.get("data"):
            return base64.b64decode(attachment["data"])
    return None


@dataclass(frozen=True, slots=True)
class Timeliness:
    """Today's timeliness: decided today within the deadline or late, undecided and overdue,
    and what is pended, by why."""

    decided_today: int
    decided_today_in_time: int
    overdue: int
    pended_by_why: dict[str, int]


async def _timeliness(workspace: Workspace, now: datetime) -> Timeliness:
    decided = in_time = overdue = 0
    async with workspace.container.store.transaction(write=False) as tx:
        tasks = await workspace._search(tx, "Task", [("code", f"{TASK_CODE_SYSTEM}|fulfill")])
    for task in tasks:
        content = task.content
        period = (content.get("restriction") or {}).get("period") or {}
        due = _instant(period.get("end"))
        status = content.get("status")
        if status in ("requested", "received", "on-hold"):
            overdue += due is not None and due < now
            continue
        moment = _instant(content.get("lastModified"))
        if status in ("accepted", "rejected") and moment and moment.date() == now.date():
            decided += 1
            in_time += due is None or moment <= due
    pended = await workspace.queue(now)
    return Timeliness(decided, in_time, overdue, pended.by_why)


def _condition_text(condition: dict[str, Any]) -> str:
    """A Condition as the request page names it: its text, else its codings' displays."""
    code = condition.get("code") or {}
    return (
        code.get("text")
        or ", ".join(x.get("display") or x.get("code") for x in code.get("coding") or [])
        or "(no text)"
    )


def _history_row(version: StoredResource) -> dict[str, Any]:
    """One version of the Task, for the request page's history."""
    return {
        "version": version.version_id,
        "updated": version.content.get("meta", {}).get("lastUpdated"),
        "status": version.content.get("status"),
        "business_status": business_status(version.content),
    }


def _notice_row(notice: StoredResource) -> dict[str, Any]:
    """One notice (Communication) about the request, for the request page."""
    content = notice.content
    return {
        "id": notice.id,
        "title": next(
            (p["contentString"] for p in content.get("payload") or [] if "contentString" in p),
            "Notice",
        ),
        "recipient": reference_of((content.get("recipient") or [{}])[0]),
        "status": content.get("status"),
        "has_pdf": notice_pdf(content) is not None,
    }
