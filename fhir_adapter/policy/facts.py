"""What the rules decide on: facts gathered from the request Bundle and the provider directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal


@dataclass(frozen=True, slots=True)
class Provider:
    """A professional as the directory lists them: one PractitionerRole."""

    role_reference: str
    specialties: frozenset[str] = frozenset()
    practitioner_reference: str | None = None
    npi: str | None = None
    display: str | None = None
    organization_reference: str | None = None
    in_network: bool = False
    fhir_endpoint: str | None = None
    specialty_names: tuple[str, ...] = ()  # the directory's displays, for letters
    organization_name: str | None = None
    address: tuple[str, ...] = ()  # printable address lines
    phone: str | None = None
    # What ranking looks at, where the directory says (None / empty: it does not say).
    accepting_new_patients: bool | None = None
    languages: frozenset[str] = frozenset()  # BCP-47 primary tags, lower case ("es")
    position: tuple[float, float] | None = None  # (latitude, longitude) of its location

    def is_same_professional(self, other: Provider | None) -> bool:
        if other is None:
            return False
        if self.role_reference == other.role_reference:
            return True
        if self.npi and self.npi == other.npi:
            return True
        return bool(
            self.practitioner_reference
            and self.practitioner_reference == other.practitioner_reference
        )


class Care(StrEnum):
    """Policy III: whose care the second opinion is about."""

    PRIMARY = "primary-care"
    SPECIALIST = "specialist-care"


RequesterKind = Literal["member", "professional", "representative", "other"]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the policy rules look at; built by the workflow service, never by the rules."""

    now: datetime
    plan_reference: str
    coverage_status: str | None
    coverage_start: datetime | None
    coverage_end: datetime | None
    coverage_payors: tuple[str, ...]
    requester_kind: RequesterKind
    requester_is_the_member: bool
    requester_is_pcp: bool
    requester_is_initial_provider: bool
    reasons: frozenset[str]
    care: Care | None
    needed_specialty: str | None
    primary_care_taxonomy: frozenset[str]
    directory_available: bool = True
    requester: Provider | None = None
    initial_provider: Provider | None = None
    selected_provider: Provider | None = None
    pcp_organization: str | None = None
    in_network: tuple[Provider, ...] = field(default_factory=tuple)
    out_of_network: tuple[Provider, ...] = field(default_factory=tuple)
    payor_unsettled: bool = False  # a payor only the (unreachable) directory could identify
    requester_is_treating: bool = False  # care team or the request's own references say so
    requester_represents_member: bool = False  # a RelatedPerson for this member
    candidates_offered: int = 5
    member_language: str | None = None
    member_position: tuple[float, float] | None = None
