"""Consultation reports (policy VI; contract §4.6): what an acceptable report is, the
Communications that carry it to the PCP and the member, and the Bundle delivered to the PCP (pure)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fhir_adapter.codes import CANONICAL
from fhir_adapter.fhir.outcome import Issue

LOINC = "http://loinc.org"
CONSULT_NOTE = "11488-4"
COMMUNICATION_ID_SYSTEM = f"{CANONICAL}/sid/communication"
REPORT_ID_SYSTEM = f"{CANONICAL}/sid/consultation-report"
_FINAL = {"final", "amended", "corrected", "appended"}
_NOTIFICATION = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "notification",
        }
    ]
}


def is_consultation_report(resource: Mapping[str, Any]) -> bool:
    return resource.get("resourceType") == "DiagnosticReport" and bool(resource.get("basedOn"))


def check_report(report: Mapping[str, Any], path: str) -> list[Issue]:
    """A Consultation Report: LOINC 11488-4, final, with its conclusion or the document itself."""
    issues: list[Issue] = []
    codes = {
        (c.get("system"), c.get("code")) for c in (report.get("code") or {}).get("coding") or []
    }
    if (LOINC, CONSULT_NOTE) not in codes:
        issues.append(
            Issue(
                "value",
                f"{path}.code: a Consultation Report is LOINC {CONSULT_NOTE} (Consult note)",
                f"{path}.code",
            )
        )
    if report.get("status") not in _FINAL:
        issues.append(
            Issue(
                "value",
                f"{path}.status: the report must be final (final, amended, corrected or appended)",
                f"{path}.status",
            )
        )
    if not report.get("conclusion") and not report.get("presentedForm"):
        issues.append(
            Issue(
                "required",
                f"{path}: the report needs its conclusion or presentedForm",
                f"{path}.conclusion",
            )
        )
    return issues


def check_report_subject(subject: str | None, member: str | None, path: str) -> list[Issue]:
    """Policy VI sends the report to the member of the request and their PCP: a report naming
    another patient (or none) would put one member's findings in another member's record."""
    where = f"{path}.subject"
    if subject is None:
        return [Issue("required", f"{where}: the report must name the member it is about", where)]
    if subject != member:
        return [
            Issue(
                "business-rule",
                f"{where}: the report is about another patient than the request it is based on",
                where,
            )
        ]
    return []


def report_communication(
    *,
    communication_id: str,
    report_key: str,
    request_key: str,
    patient_key: str,
    recipient: str,
    sender: str | None,
    proposals: Sequence[str],
    drafted: bool,
) -> dict[str, Any]:
    """The Communication carrying the report (and its recommended procedures and tests) to one
    recipient: `in-progress` until delivered, or, `drafted`, in `preparation` until the worker
    renders its letter (the member's copy; `with_rendered_letter` keeps this payload)."""
    payload: list[dict[str, Any]] = [
        {"contentString": "Consultation Report of the second medical opinion you asked for."},
        {"contentReference": {"reference": report_key}},
    ]
    payload += [{"contentReference": {"reference": key}} for key in proposals]
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": COMMUNICATION_ID_SYSTEM, "value": communication_id}],
        "basedOn": [{"reference": request_key}],
        "status": "preparation" if drafted else "in-progress",
        "category": [_NOTIFICATION],
        "subject": {"reference": patient_key},
        "about": [{"reference": report_key}],
        "recipient": [{"reference": recipient}],
        "payload": payload,
    }
    if sender:
        communication["sender"] = {"reference": sender}
    return communication


def delivery_bundle(
    communication: Mapping[str, Any],
    report: Mapping[str, Any],
    patient: Mapping[str, Any],
    proposals: Sequence[Mapping[str, Any]],
    *,
    report_id: str,
) -> dict[str, Any]:
    """A transaction Bundle for the recipient's FHIR server: every entry a conditional create on an
    identifier, so a repeated delivery is stored once. References to our other resources become
    displays, since the recipient cannot resolve them."""
    patient_url, report_url = "urn:uuid:patient", "urn:uuid:report"
    member_id = next(
        (i for i in patient.get("identifier") or [] if i.get("system") and i.get("value")), None
    )
    patient_copy = _local_copy(patient)
    patient_copy.pop("generalPractitioner", None)
    report_copy = _local_copy(report)
    report_copy["subject"] = {"reference": patient_url}
    report_copy["identifier"] = [
        *report_copy.get("identifier", []),
        {"system": REPORT_ID_SYSTEM, "value": report_id},
    ]
    communication_copy = _local_copy(communication)
    communication_copy["subject"] = {"reference": patient_url}
    communication_copy["status"] = "completed"
    proposal_entries = _proposal_entries(proposals, report_id, patient_url)
    payload = [
        {"contentString": communication["payload"][0]["contentString"]},
        {"contentReference": {"reference": report_url}},
    ]
    payload += [{"contentReference": {"reference": url}} for url, _, _ in proposal_entries]
    # The member's copy carries its letter (HTML and PDF) for the mailing service.
    payload += [p for p in communication["payload"] if "contentAttachment" in p]
    communication_copy["payload"] = payload
    identifier = communication["identifier"][0]
    entries = [
        _post(
            patient_url,
            patient_copy,
            f"identifier={member_id['system']}|{member_id['value']}" if member_id else None,
        ),
        _post(report_url, report_copy, f"identifier={REPORT_ID_SYSTEM}|{report_id}"),
        *(_post(url, resource, condition) for url, resource, condition in proposal_entries),
        _post(
            "urn:uuid:communication",
            communication_copy,
            f"identifier={identifier['system']}|{identifier['value']}",
        ),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# Elements that reference our other resources: the recipient could not resolve them.
_NOT_FOR_RECIPIENT = (
    "id",
    "meta",
    "basedOn",
    "performer",
    "resultsInterpreter",
    "encounter",
    "result",
    "sender",
    "recipient",
    "about",
    "requester",
    "insurance",
    "reasonReference",
)


def _local_copy(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `resource` for the recipient's server, without our ids and references."""
    copied = copy.deepcopy(dict(resource))
    for key in _NOT_FOR_RECIPIENT:
        copied.pop(key, None)
    return copied


def _proposal_entries(
    proposals: Sequence[Mapping[str, Any]], report_id: str, patient_url: str
) -> list[tuple[str, dict[str, Any], str]]:
    """(fullUrl, copy, condition) of each proposed ServiceRequest, identified by the report's id."""
    entries = []
    for index, proposal in enumerate(proposals):
        url = f"urn:uuid:proposal-{index}"
        copied = _local_copy(proposal)
        copied["subject"] = {"reference": patient_url}
        copied["identifier"] = [
            *copied.get("identifier", []),
            {"system": REPORT_ID_SYSTEM, "value": f"{report_id}-{index}"},
        ]
        entries.append((url, copied, f"identifier={REPORT_ID_SYSTEM}|{report_id}-{index}"))
    return entries


def _post(full_url: str, resource: dict[str, Any], condition: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if condition:
        request["ifNoneExist"] = condition
    return {"fullUrl": full_url, "resource": resource, "request": request}


def notice_bundle(communication: Mapping[str, Any], patient: Mapping[str, Any]) -> dict[str, Any]:
    """A written notice for a portal or print-and-mail vendor: the member and the Communication
    (which carries the letter as HTML and PDF), each a conditional create on its identifier."""
    patient_url = "urn:uuid:patient"
    patient_copy = copy.deepcopy(dict(patient))
    for key in ("id", "meta", "generalPractitioner", "managingOrganization"):
        patient_copy.pop(key, None)
    notice = copy.deepcopy(dict(communication))
    for key in ("id", "meta", "basedOn", "about", "sender"):
        notice.pop(key, None)
    notice["subject"] = {"reference": patient_url}
    notice["recipient"] = [{"reference": patient_url}]
    notice["status"] = "completed"
    member_id = next(
        (i for i in patient.get("identifier") or [] if i.get("system") and i.get("value")), None
    )
    identifier = communication["identifier"][0]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _post(
                patient_url,
                patient_copy,
                f"identifier={member_id['system']}|{member_id['value']}" if member_id else None,
            ),
            _post(
                "urn:uuid:notice",
                notice,
                f"identifier={identifier['system']}|{identifier['value']}",
            ),
        ],
    }
