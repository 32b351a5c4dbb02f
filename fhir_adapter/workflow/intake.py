"""What a second-opinion request must carry (contract §3), checked before it is accepted (pure).

Each check returns Issues naming the element at fault; the service answers 422 with all of them
and stores nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_adapter.codes import (
    INITIAL_PROVIDER_EXTENSION,
    MEMBER_ID_TYPE,
    NUCC,
    REASON_SYSTEM,
    SECOND_OPINION_SYSTEM,
    TASK_CODE_SYSTEM,
    Reason,
)
from fhir_adapter.fhir.elements import codes_in, reference_of, reference_type
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import rewrite_references

_PROFESSIONAL_TYPES = ("Practitioner", "PractitionerRole")


def is_second_opinion_request(resource: Mapping[str, Any]) -> bool:
    """A ServiceRequest whose category says second-opinion."""
    return resource.get("resourceType") == "ServiceRequest" and any(
        coding.get("system") == SECOND_OPINION_SYSTEM and coding.get("code") == "second-opinion"
        for concept in resource.get("category") or []
        for coding in concept.get("coding") or []
    )


def check_unmarked_request(request: Mapping[str, Any], path: str) -> list[Issue]:
    """A ServiceRequest carrying a second opinion's reason codes or initial-opinion provider, but
    not its category, would be stored as an ordinary order and never decided, its deadline never
    kept: 422, so that the EHR adds the category (contract §3)."""
    if request.get("resourceType") != "ServiceRequest" or is_second_opinion_request(request):
        return []
    if not (listed_reasons(request) or initial_provider_reference(request)):
        return []
    where = f"{path}.category"
    return [
        Issue(
            "required",
            f"{where}: a second-opinion request (it names second-opinion reasons or the "
            f"initial-opinion provider) must include {SECOND_OPINION_SYSTEM}#second-opinion",
            where,
        )
    ]


def check_member(patient: Mapping[str, Any], where: str, label: str) -> list[Issue]:
    """Contract §3: the member carries the plan member id (type MB) and names the PCP, whom the
    policy checks the requester against and routes PCP care by."""
    issues: list[Issue] = []
    member_ids = [
        identifier
        for identifier in patient.get("identifier") or []
        if identifier.get("value")
        and any(
            (coding.get("system"), coding.get("code")) == MEMBER_ID_TYPE
            for coding in (identifier.get("type") or {}).get("coding") or []
        )
    ]
    if not member_ids:
        issues.append(
            Issue(
                "required",
                f"{label}.identifier: the member needs the plan member id "
                f"(type {MEMBER_ID_TYPE[0]}#{MEMBER_ID_TYPE[1]})",
                f"{where}.identifier",
            )
        )
    if not any(reference_of(gp) for gp in patient.get("generalPractitioner") or []):
        issues.append(
            Issue(
                "required",
                f"{label}.generalPractitioner: the member's PCP (PractitionerRole or "
                "Practitioner) is needed",
                f"{where}.generalPractitioner",
            )
        )
    return issues


def check_coverage(coverage: Mapping[str, Any], where: str, label: str) -> list[Issue]:
    """Contract §3: the Coverage's period, which says whether it is active on the request's date
    (R4 itself already requires its status, beneficiary and payor)."""
    period = coverage.get("period") or {}
    if period.get("start") or period.get("end"):
        return []
    return [
        Issue(
            "required",
            f"{label}.period: the coverage period is needed to know it is active",
            f"{where}.period",
        )
    ]


def is_fulfillment_task(resource: Mapping[str, Any]) -> bool:
    return resource.get("resourceType") == "Task" and any(
        coding.get("system") == TASK_CODE_SYSTEM and coding.get("code") == "fulfill"
        for coding in (resource.get("code") or {}).get("coding") or []
    )


def initial_provider_reference(request: Mapping[str, Any]) -> str | None:
    for extension in request.get("extension") or []:
        if extension.get("url") == INITIAL_PROVIDER_EXTENSION:
            return reference_of(extension.get("valueReference"))
    return None


def listed_reasons(request: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(codes_in(request.get("reasonCode"), REASON_SYSTEM))


def check_request(request: Mapping[str, Any], path: str) -> list[Issue]:
    """The second-opinion ServiceRequest of contract §3."""
    issues: list[Issue] = []

    def need(ok: bool, element: str, text: str, code: str = "required") -> None:
        if not ok:
            issues.append(Issue(code, f"{path}.{element}: {text}", f"{path}.{element}"))

    need(request.get("status") == "active", "status", "must be 'active' for a new request", "value")
    need(request.get("intent") == "order", "intent", "must be 'order'", "value")
    need(
        reference_type(reference_of(request.get("subject"))) == "Patient",
        "subject",
        "must reference the member (Patient)",
    )
    need(bool(request.get("insurance")), "insurance", "must reference the member's Coverage")
    for index, insurance in enumerate(request.get("insurance") or []):
        need(
            reference_type(reference_of(insurance)) == "Coverage",
            f"insurance[{index}]",
            "must reference a Coverage",
            "value",
        )
    need(bool(request.get("authoredOn")), "authoredOn", "is required")
    reasons = request.get("reasonCode") or []
    need(
        bool(reasons),
        "reasonCode",
        "at least one reason is required (second-opinion-reason codes A-E)",
    )
    issues.extend(_reason_code_issues(reasons, path))
    issues.extend(_requester_issues(request, path))
    issues.extend(_provider_issues(request, path))
    return issues


def _reason_code_issues(reasons: list[Any], path: str) -> list[Issue]:
    """Codes of the second-opinion-reason system that are not among its codes (A-E)."""
    issues: list[Issue] = []
    known = {r.value for r in Reason}
    for i, concept in enumerate(reasons):
        for j, coding in enumerate(concept.get("coding") or []):
            if coding.get("system") == REASON_SYSTEM and coding.get("code") not in known:
                element = f"reasonCode[{i}].coding[{j}].code"
                issues.append(
                    Issue(
                        "code-invalid",
                        f"{path}.{element}: '{coding.get('code')}' is not a second-opinion-reason "
                        f"code ({', '.join(sorted(known))})",
                        f"{path}.{element}",
                    )
                )
    return issues


def _requester_issues(request: Mapping[str, Any], path: str) -> list[Issue]:
    """Who may ask (HSC 1383.15): the member, their representative or a treating professional."""
    issues: list[Issue] = []
    requester_type = reference_type(reference_of(request.get("requester")))
    if requester_type is None:
        issues.append(
            Issue(
                "required",
                f"{path}.requester: is required: the member, the member's representative or the "
                "treating professional",
                f"{path}.requester",
            )
        )
    if requester_type is not None and requester_type not in (
        "Patient",
        "RelatedPerson",  # HSC 1383.15: an authorized representative acting for the member
        *_PROFESSIONAL_TYPES,
    ):
        issues.append(
            Issue(
                "business-rule",
                f"{path}.requester: a {requester_type} cannot request a second opinion; only the "
                "member (Patient), the member's representative (RelatedPerson) or a professional "
                "(Practitioner, PractitionerRole) can",
                f"{path}.requester",
            )
        )
    elif requester_type == "Patient" and reference_of(request.get("requester")) != reference_of(
        request.get("subject")
    ):
        issues.append(
            Issue(
                "business-rule",
                f"{path}.requester: a Patient requester must be the member the request is about",
                f"{path}.requester",
            )
        )
    return issues


def _provider_issues(request: Mapping[str, Any], path: str) -> list[Issue]:
    """The initial opinion's provider (required), the specialty asked for and the providers
    chosen: PractitionerRoles and NUCC codes."""
    issues: list[Issue] = []
    initial = initial_provider_reference(request)
    extension_path = f"{path}.extension('{INITIAL_PROVIDER_EXTENSION}')"
    if initial is None:
        issues.append(
            Issue(
                "required",
                f"{extension_path}: the initial-opinion-provider extension (valueReference -> PractitionerRole) is required",
                extension_path,
            )
        )
    elif reference_type(initial) != "PractitionerRole":
        issues.append(
            Issue("value", f"{extension_path}: must reference a PractitionerRole", extension_path)
        )
    for coding in (request.get("performerType") or {}).get("coding") or []:
        if coding.get("system") not in (None, NUCC):
            issues.append(
                Issue(
                    "code-invalid",
                    f"{path}.performerType: use NUCC provider taxonomy ({NUCC})",
                    f"{path}.performerType",
                )
            )
    for index, performer in enumerate(request.get("performer") or []):
        if reference_type(reference_of(performer)) != "PractitionerRole":
            issues.append(
                Issue(
                    "value",
                    f"{path}.performer[{index}]: the selected provider must be a PractitionerRole",
                    f"{path}.performer[{index}]",
                )
            )
    return issues


def check_task(
    task: Mapping[str, Any], request: Mapping[str, Any] | None, path: str
) -> list[Issue]:
    """The workflow Task of contract §3: it must focus the second-opinion request."""
    issues: list[Issue] = []

    def need(ok: bool, element: str, text: str, code: str = "required") -> None:
        if not ok:
            issues.append(Issue(code, f"{path}.{element}: {text}", f"{path}.{element}"))

    need(
        task.get("status") == "requested",
        "status",
        "a new request's Task must be 'requested'",
        "value",
    )
    need(is_fulfillment_task(task), "code", f"must be {TASK_CODE_SYSTEM}#fulfill", "value")
    need(task.get("intent") == "order", "intent", "must be 'order'", "value")
    focus = reference_of(task.get("focus"))
    need(
        focus is not None and request is not None and is_second_opinion_request(request),
        "focus",
        "must reference the second-opinion ServiceRequest",
        "value",
    )
    if request is not None:
        need(
            reference_of(task.get("for")) == reference_of(request.get("subject")),
            "for",
            "must reference the same Patient as the ServiceRequest's subject",
            "value",
        )
    need(task.get("requester") is not None, "requester", "is required")
    need(bool(task.get("authoredOn")), "authoredOn", "is required")
    return issues


def check_document(data: Any) -> list[Issue]:
    """Every check a submission gets that needs no database: FHIR structure, then the
    second-opinion rules for each request and Task in it (`fhir-adapter validate`)."""
    from fhir_adapter.errors import AdapterError
    from fhir_adapter.fhir.validation import validate_resource

    try:
        validate_resource(data)
    except AdapterError as exc:
        return list(exc.issues)
    if data["resourceType"] == "ServiceRequest" and is_second_opinion_request(data):
        return check_request(data, "ServiceRequest")
    if data["resourceType"] != "Bundle":
        return check_unmarked_request(data, data["resourceType"])
    # Stand-in ids for the Bundle's own fullUrls, as the server's urn:uuid rewriting would give.
    mapping = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/entry-{i}"
        for i, e in enumerate(data.get("entry") or [])
        if e.get("fullUrl") and isinstance(e.get("resource"), dict)
    }
    entries = rewrite_references(data.get("entry") or [], mapping)
    by_url = {e.get("fullUrl"): e.get("resource") for e in entries if e.get("fullUrl")}
    path_of = {e.get("fullUrl"): f"Bundle.entry[{i}].resource" for i, e in enumerate(entries)}
    issues: list[Issue] = []
    for index, entry in enumerate(entries):
        resource, path = entry.get("resource") or {}, f"Bundle.entry[{index}].resource"
        issues += check_unmarked_request(resource, path)
        if is_second_opinion_request(resource):
            issues += check_request(resource, path)
            # the member and the coverage, when they travel in the Bundle (else the server checks)
            subject = reference_of(resource.get("subject"))
            insurance = reference_of((resource.get("insurance") or [{}])[0])
            for reference, check in ((subject, check_member), (insurance, check_coverage)):
                named = by_url.get(reference)
                if isinstance(named, dict) and reference in path_of:
                    issues += check(named, path_of[reference], path_of[reference])
        elif resource.get("resourceType") == "Task":
            request = by_url.get(reference_of(resource.get("focus")))
            if request is not None or is_fulfillment_task(resource):
                issues += check_task(resource, request, path)
    return issues
