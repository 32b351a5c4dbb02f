"""The facts a second-opinion request carries itself (pure): who asked and how they relate to the
member, NPIs and specialties of the providers it names, the kind of care, the plan's payors.

The evaluation reads the request and what it names from the store (`LocalRecords`), asks the
directory for what only the directory knows, and builds `RequestFacts` from both with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_adapter.codes import NUCC
from fhir_adapter.fhir.dates import period_range
from fhir_adapter.fhir.elements import codes_in, local_key as resource_key, npi_of, reference_of
from fhir_adapter.policy.facts import Care, Provider, RequesterKind, RequestFacts
from fhir_adapter.workflow.intake import initial_provider_reference, listed_reasons
from fhir_adapter.workflow.plan import Identifier, PayorVerdict, payor_verdict, plan_references
from fhir_adapter.workflow.requester import (
    address_position,
    preferred_language,
    related_person_patient,
    requester_kind,
)

Payors = list[tuple[str, PayorVerdict]]  # each Coverage.payor as named, and whether it is the plan


def local_key(reference: str | None, base_url: str) -> str | None:
    """`Type/id` of a reference to this server (relative, or absolute under `base_url`)."""
    key = resource_key(reference, base_url)
    return str(key) if key else None


def normalize(reference: str | None, base_url: str) -> str | None:
    """A reference to this server as `Type/id`; any other reference as it is."""
    return local_key(reference, base_url) or reference


def same_reference(a: str | None, b: str | None) -> bool:
    return bool(a and b and a == b)


def choose_role(roles: Sequence[Provider], specialties: frozenset[str]) -> Provider | None:
    """The directory role that stands for a locally named provider: one with a specialty the
    local copy lists (any, when it lists none), in network first."""
    matching = [r for r in roles if not specialties or r.specialties & specialties]
    return next((r for r in matching if r.in_network), None) or (matching[0] if matching else None)


def care_of(
    request: Mapping[str, Any], initial: Provider | None, primary_care: frozenset[str]
) -> tuple[Care | None, str | None]:
    """Policy III: PCP care or specialist care, and the specialty the second opinion needs."""
    wanted = codes_in(request.get("performerType"), NUCC, unsystemed=True)
    specialties = initial.specialties if initial else frozenset()
    if specialties & primary_care:
        return Care.PRIMARY, wanted[0] if wanted else None
    if specialties:
        return Care.SPECIALIST, wanted[0] if wanted else sorted(specialties)[0]
    if wanted:
        return (Care.PRIMARY if wanted[0] in primary_care else Care.SPECIALIST), wanted[0]
    return None, None


@dataclass(frozen=True, slots=True)
class LocalRecords:
    """A request and the resources it names as this server stores them (contents by `Type/id`)."""

    request: Mapping[str, Any]
    patient: Mapping[str, Any] | None
    coverage: Mapping[str, Any] | None
    local: Mapping[str, Mapping[str, Any]]
    base_url: str
    treating: Sequence[str | None] = field(default_factory=tuple)  # who the records say treats

    def key(self, reference: str | None) -> str | None:
        return local_key(reference, self.base_url)

    def named(self, reference: str | None) -> Mapping[str, Any] | None:
        """The stored resource a reference names, if it is here."""
        return self.local.get(self.key(reference) or "")

    @property
    def requester(self) -> str | None:
        return reference_of(self.request.get("requester"))

    @property
    def pcps(self) -> list[str | None]:
        return [reference_of(p) for p in (self.patient or {}).get("generalPractitioner") or []]

    @property
    def initial(self) -> str | None:
        return initial_provider_reference(self.request)

    @property
    def selected(self) -> list[str | None]:
        return [reference_of(p) for p in self.request.get("performer") or []]

    def practitioner(self, resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """A Practitioner itself; for anything else the Practitioner it names, if stored."""
        if resource.get("resourceType") == "Practitioner":
            return resource
        return self.named(reference_of(resource.get("practitioner")))

    def npi(self, reference: str | None) -> str | None:
        """The NPI of a locally stored Practitioner or PractitionerRole's practitioner."""
        resource = self.named(reference)
        if resource is None:
            return None
        if resource.get("resourceType") == "PractitionerRole":
            resource = self.named(reference_of(resource.get("practitioner"))) or {}
        return npi_of(resource)

    def represents_member(self, reference: str | None) -> bool:
        """An authorized representative: an active RelatedPerson (in the request, contained, or
        stored) whose `patient` is the member the request is for."""
        if reference and reference.startswith("#"):
            contained = self.request.get("contained") or []
            related = next((c for c in contained if f"#{c.get('id')}" == reference), None)
        else:
            related = self.named(reference)
        patient = related_person_patient(related)
        subject = reference_of(self.request.get("subject"))
        return bool(
            patient and normalize(patient, self.base_url) == normalize(subject, self.base_url)
        )


@dataclass(frozen=True, slots=True)
class Relations:
    """How the requester relates to the member's care, settled from the request and local
    records alone (references, NPIs), so that a directory outage never changes eligibility."""

    kind: RequesterKind
    is_pcp: bool
    is_initial: bool
    is_treating: bool


def relations(records: LocalRecords) -> Relations:
    requester = records.requester
    kind = requester_kind(requester)
    professional = kind == "professional"
    npi = records.npi(requester)
    pcp_npis = {records.npi(r) for r in records.pcps} - {None}
    initial = records.initial
    is_pcp = any(same_reference(requester, r) for r in records.pcps) or (
        npi is not None and npi in pcp_npis
    )
    is_initial = same_reference(requester, initial) or (
        npi is not None and npi == records.npi(initial)
    )
    base = records.base_url
    is_treating = any(
        same_reference(normalize(requester, base), normalize(r, base))
        or (npi is not None and npi == records.npi(r))
        for r in records.treating
    )
    return Relations(
        kind, professional and is_pcp, professional and is_initial, is_treating and professional
    )


def base_facts(
    records: LocalRecords,
    relation: Relations,
    *,
    now: datetime,
    plan_organization: str,
    primary_care: frozenset[str],
    candidates_offered: int,
) -> dict[str, Any]:
    """The `RequestFacts` fields that need no directory (payors apart)."""
    coverage = records.coverage or {}
    span = period_range(coverage.get("period") or {}) if coverage.get("period") else None
    requester = records.requester
    return {
        "now": now,
        "plan_reference": plan_organization,
        "coverage_status": coverage.get("status"),
        "coverage_start": span[0] if span else None,
        "coverage_end": span[1] if span else None,
        "requester_kind": relation.kind,
        "requester_is_the_member": relation.kind == "member"
        and requester == reference_of(records.request.get("subject")),
        "requester_represents_member": relation.kind == "representative"
        and records.represents_member(requester),
        "reasons": listed_reasons(records.request),
        "primary_care_taxonomy": primary_care,
        "candidates_offered": candidates_offered,
        "member_language": preferred_language(records.patient),
        "member_position": address_position(records.patient),
        "requester_is_treating": relation.is_treating,
    }


@dataclass(frozen=True, slots=True)
class DirectoryView:
    """What the directory said about the providers a request names, and the candidates."""

    requester: Provider | None
    initial: Provider | None
    pcp: Provider | None
    selected: Provider | None
    care: Care | None
    needed: str | None
    in_network: Sequence[Provider] = ()
    out_of_network: Sequence[Provider] = ()


def facts_from(
    base: Mapping[str, Any], relation: Relations, seen: DirectoryView | None
) -> RequestFacts:
    """The facts the rules decide on; `seen` None: the directory could not be asked."""
    if seen is None:
        return RequestFacts(
            **base,
            requester_is_pcp=relation.is_pcp,
            requester_is_initial_provider=relation.is_initial,
            care=None,
            needed_specialty=None,
            directory_available=False,
        )
    requester = seen.requester
    return RequestFacts(
        **base,
        requester_is_pcp=relation.is_pcp
        or (requester is not None and requester.is_same_professional(seen.pcp)),
        requester_is_initial_provider=relation.is_initial
        or (requester is not None and requester.is_same_professional(seen.initial)),
        care=seen.care,
        needed_specialty=seen.needed,
        requester=requester,
        initial_provider=seen.initial,
        selected_provider=seen.selected,
        pcp_organization=seen.pcp.organization_reference if seen.pcp else None,
        in_network=tuple(seen.in_network),
        out_of_network=tuple(seen.out_of_network),
    )


def payor_verdicts(
    records: LocalRecords,
    *,
    plan_organization: str,
    plan_identifiers: frozenset[Identifier],
    directory_url: str | None,
) -> Payors:
    """Each Coverage.payor and whether it names the plan, in any of the four forms, with no
    directory call (contract §4.2; issue #10)."""
    coverage = records.coverage or {}
    anchors = {f"#{c.get('id')}": c for c in coverage.get("contained") or [] if c.get("id")}
    names = plan_references(
        plan_organization, base_url=records.base_url, directory_url=directory_url
    )
    payors: Payors = []
    for payor in coverage.get("payor") or []:
        verdict = payor_verdict(
            payor,
            plan_names=names,
            plan_identifiers=plan_identifiers,
            resolve=lambda ref: anchors.get(ref) or records.named(ref),
            directory_url=directory_url,
        )
        named = normalize(reference_of(payor), records.base_url) or "Coverage.payor.identifier"
        payors.append((named, verdict))
    return payors


def payors_as_named(payors: Iterable[tuple[str, PayorVerdict]], plan: str) -> tuple[str, ...]:
    """Coverage.payor as the rules see them: the plan's reference for each one naming the plan
    (one only the directory could settle counts as another payor)."""
    return tuple(plan if verdict == "plan" else reference for reference, verdict in payors)
