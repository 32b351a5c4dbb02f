"""The search parameters (pure): which elements of each resource type are indexed and searchable.

This table drives three things: the index rows the store writes for every version
(fhir/search_index.py), the query the store runs (fhir/search.py reads the URL), and the
searchParam list of the CapabilityStatement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ParamType = Literal["token", "reference", "date", "string", "id", "last-updated"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter: its FHIR type and the element paths (relative to the resource) it reads."""

    name: str
    type: ParamType
    paths: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()  # reference params: the only target types indexed (empty: any)
    documentation: str = ""


def _tok(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "token", paths or (name,), documentation=doc)


def _ref(name: str, *paths: str, targets: tuple[str, ...] = (), doc: str = "") -> SearchParam:
    return SearchParam(name, "reference", paths or (name,), targets, doc)


def _date(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "date", paths or (name,), documentation=doc)


def _str(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "string", paths or (name,), documentation=doc)


_PATIENT = ("Patient",)
ID_PARAM = SearchParam("_id", "id", documentation="Logical id of the resource")
LAST_UPDATED_PARAM = SearchParam(
    "_lastUpdated",
    "last-updated",
    # issue #13: the one sort key served, so the CapabilityStatement says it here
    documentation=(
        "When the current version was stored; also the sort key: _sort=_lastUpdated (oldest "
        "first) or _sort=-_lastUpdated (newest first), ties in id order"
    ),
)

SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _tok("identifier"),
        _str("name", "name"),
        _str("family", "name.family"),
        _str("given", "name.given"),
        _date("birthdate", "birthDate"),
        _tok("gender"),
        _ref("general-practitioner", "generalPractitioner"),
        _ref("organization", "managingOrganization"),
    ),
    "Practitioner": (_tok("identifier"), _str("name", "name"), _str("family", "name.family")),
    "PractitionerRole": (
        _tok("identifier"),
        _ref("practitioner"),
        _ref("organization"),
        _tok("specialty"),
        _tok("role", "code"),
        _ref("endpoint"),
        _tok("active"),
    ),
    "Organization": (
        _tok("identifier"),
        _str("name", "name", "alias"),
        _tok("type"),
        _ref("partof", "partOf"),
        _ref("endpoint"),
    ),
    "Coverage": (
        _tok("identifier"),
        _ref("patient", "beneficiary", targets=_PATIENT),
        _ref("beneficiary"),
        _ref("payor"),
        _ref("subscriber"),
        _tok("status"),
    ),
    "Condition": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("code"),
        _tok("clinical-status", "clinicalStatus"),
        _tok("category"),
    ),
    "RelatedPerson": (
        _tok("identifier"),
        _ref("patient", targets=_PATIENT),
        _tok("relationship"),
        _tok("active"),
    ),
    "CareTeam": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("participant", "participant.member"),
        _tok("status"),
    ),
    "ServiceRequest": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("status"),
        _tok("intent"),
        _tok("priority"),
        _tok("category"),
        _tok("code"),
        _ref("requester"),
        _ref("performer"),
        _ref("based-on", "basedOn"),
        _date("authored", "authoredOn"),
    ),
    "Task": (
        _tok("identifier"),
        _tok("status"),
        _tok("business-status", "businessStatus"),
        _tok("intent"),
        _tok("priority"),
        _tok("code"),
        _ref("patient", "for", targets=_PATIENT),
        _ref("subject", "for"),
        _ref("focus"),
        _ref("owner"),
        _ref("requester"),
        _ref("based-on", "basedOn"),
        _date("authored-on", "authoredOn"),
        _date("modified", "lastModified"),
        _date("period", "executionPeriod"),
    ),
    "Claim": (
        _tok("identifier"),
        _ref(
            "requested-service",
            "item.extension.valueReference",
            targets=("ServiceRequest",),
            doc="The ServiceRequest a PAS Claim item asks for (extension requestedService)",
        ),
        _ref("patient", targets=_PATIENT),
        _tok("use"),
        _tok("status"),
        _date("created"),
        _ref("insurer"),
        _ref("provider"),
    ),
    "ClaimResponse": (
        _tok("identifier"),
        _ref("patient", targets=_PATIENT),
        _ref("request"),
        _ref("insurer"),
        _ref("requestor"),
        _tok("outcome"),
        _tok("status"),
        _tok("use"),
        _date("created"),
    ),
    "DiagnosticReport": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("based-on", "basedOn"),
        _ref("performer"),
        _tok("code"),
        _tok("status"),
        _tok("category"),
        _date("date", "effectiveDateTime", "effectivePeriod"),
        _date("issued"),
    ),
    "DocumentReference": (
        _tok("identifier", "identifier", "masterIdentifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("status"),
        _tok("type"),
        _tok("category"),
        _date("date"),
    ),
    "Communication": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("recipient"),
        _ref("sender"),
        _ref("based-on", "basedOn"),
        _tok("status"),
        _tok("category"),
        _date("sent"),
        _date("received"),
    ),
    "Subscription": (
        _tok("status"),
        _str("criteria"),
        _str("url", "channel.endpoint"),
        _tok("type", "channel.type"),
        _tok("_tag", "meta.tag", doc="Tags; the owner's client id is one (issue #16)"),
    ),
    "AuditEvent": (
        _date("date", "recorded"),
        _tok("type"),
        _tok("subtype"),
        _tok("action"),
        _tok("outcome"),
        _ref("agent", "agent.who"),
        _tok("altid", "agent.altId", doc="The client id of the system that made the request"),
        _ref("entity", "entity.what"),
        _ref("patient", "entity.what", targets=_PATIENT),
    ),
    "Provenance": (
        _ref("target"),
        _ref("patient", "target", targets=_PATIENT),
        _ref("agent", "agent.who"),
        _ref("entity", "entity.what"),
        _date("recorded"),
    ),
}


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """Every parameter `resource_type` can be searched by, including `_id` and `_lastUpdated`."""
    params = {p.name: p for p in SEARCH_PARAMS.get(resource_type, ())}
    params["_id"] = ID_PARAM
    params["_lastUpdated"] = LAST_UPDATED_PARAM
    return params
