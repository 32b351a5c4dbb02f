"""Canonical URLs and codes of the second-opinion workflow (contract §3-§4, fhir.md §1-§3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

CANONICAL = "https://fhir-adapter.org/fhir"
SECOND_OPINION_SYSTEM = f"{CANONICAL}/CodeSystem/second-opinion"
REASON_SYSTEM = f"{CANONICAL}/CodeSystem/second-opinion-reason"
STATUS_SYSTEM = f"{CANONICAL}/CodeSystem/second-opinion-status"
DENIAL_REASON_SYSTEM = f"{CANONICAL}/CodeSystem/second-opinion-denial-reason"
REVIEW_REASON_SYSTEM = f"{CANONICAL}/CodeSystem/second-opinion-review-reason"
INITIAL_PROVIDER_EXTENSION = f"{CANONICAL}/StructureDefinition/initial-opinion-provider"
RULE_TRAIL_EXTENSION = f"{CANONICAL}/StructureDefinition/decision-rule"

NUCC = "http://nucc.org/provider-taxonomy"
NPI = "http://hl7.org/fhir/sid/us-npi"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
MEMBER_ID_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MB")

PLAN_NET = "http://hl7.org/fhir/us/davinci-pdex-plan-net"
NETWORK_REFERENCE_EXTENSION = f"{PLAN_NET}/StructureDefinition/network-reference"
NEW_PATIENTS_EXTENSION = f"{PLAN_NET}/StructureDefinition/newpatients"
ENDPOINT_CONNECTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"

PAS = "http://hl7.org/fhir/us/davinci-pas"
PAS_REVIEW_ACTION = f"{PAS}/StructureDefinition/extension-reviewAction"
PAS_REVIEW_ACTION_CODE = f"{PAS}/StructureDefinition/extension-reviewActionCode"
PAS_REQUESTED_SERVICE = f"{PAS}/StructureDefinition/extension-requestedService"
PAS_AUTHORIZED_PROVIDER = f"{PAS}/StructureDefinition/extension-authorizedProvider"
PAS_ADMIN_REFERENCE = f"{PAS}/StructureDefinition/extension-administrationReferenceNumber"
PAS_REVIEWER = f"{PAS}/StructureDefinition/extension-claimResponseReviewer"
X12_REVIEW_ACTION_SYSTEM = "https://codesystem.x12.org/005010/306"
X12_SERVICE_TYPE_SYSTEM = "https://codesystem.x12.org/005010/1365"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/claim-type"
CLIENT_ID_SYSTEM = f"{CANONICAL}/sid/client-id"  # a registered client (system) as an Identifier


class Reason(StrEnum):
    """Policy section II, A-E: why a member may ask for a second opinion."""

    QUESTIONED_SURGERY = "questioned-surgery"  # II.A
    SERIOUS_CONDITION = "serious-condition"  # II.B
    UNCLEAR_DIAGNOSIS = "unclear-diagnosis"  # II.C
    NOT_IMPROVING = "not-improving"  # II.D
    CARE_CONCERNS = "care-concerns"  # II.E


class BusinessStatus(StrEnum):
    """Task.businessStatus codes (contract §4 table)."""

    RECEIVED = "received"
    APPROVED_IN_NETWORK = "approved-in-network"
    APPROVED_OUT_OF_NETWORK = "approved-out-of-network"
    DENIED = "denied"
    PENDING_REVIEW = "pending-review"
    PENDING_DIRECTORY = "pending-directory"
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # withdrawn by its submitter (PAS certificationType 3)


class ReviewAction(StrEnum):
    """X12 306 (HCR01) codes carried in the PAS reviewAction extension."""

    NO_ACTION_REQUIRED = "NA"
    CERTIFIED = "A1"
    NOT_CERTIFIED = "A3"
    PENDED = "A4"


class DenialReason(StrEnum):
    """Specific denial reasons (CMS-0057-F asks for a specific reason on every denial)."""

    COVERAGE_INACTIVE = "coverage-inactive"
    NOT_PLAN_MEMBER = "not-plan-member"
    REQUESTER_NOT_ELIGIBLE = "requester-not-eligible"
    REQUESTER_NOT_PARTICIPATING = "requester-not-participating"
    DEADLINE_EXPIRED = "deadline-expired"
    REVIEWER_DENIED = "reviewer-denied"


class ReviewReason(StrEnum):
    """Why a request waits for a human reviewer instead of being decided by rule."""

    NO_LISTED_REASON = "no-listed-reason"
    NO_QUALIFIED_PROVIDER = "no-qualified-provider"
    SPECIALTY_UNKNOWN = "specialty-unknown"
    REQUESTER_UNSETTLED = "requester-unsettled"
    REQUESTER_NOT_PARTICIPATING = "requester-not-participating"


DENIAL_TEXT: dict[DenialReason, str] = {
    DenialReason.COVERAGE_INACTIVE: "The member's coverage was not active on the date of the request.",
    DenialReason.NOT_PLAN_MEMBER: "The coverage submitted is not coverage with this plan.",
    DenialReason.REQUESTER_NOT_ELIGIBLE: (
        "A second opinion may be requested by the member or by a participating professional "
        "treating the member (the member's PCP or the provider whose opinion is questioned); "
        "the requester is neither."
    ),
    DenialReason.REQUESTER_NOT_PARTICIPATING: (
        "The professional who made the request is not a participating (in-network) provider of the plan."
    ),
    DenialReason.DEADLINE_EXPIRED: (
        "No decision was made within the time allowed; the law treats this as a denial."
    ),
    DenialReason.REVIEWER_DENIED: "A clinical reviewer denied the request.",
}

REVIEW_TEXT: dict[ReviewReason, str] = {
    ReviewReason.NO_LISTED_REASON: "The request names none of the five listed reasons; a reviewer decides.",
    ReviewReason.NO_QUALIFIED_PROVIDER: "No qualified provider was found in or out of network.",
    ReviewReason.SPECIALTY_UNKNOWN: "The specialty needed could not be determined from the request.",
    ReviewReason.REQUESTER_UNSETTLED: (
        "The request does not show that the requester is the member, the member's authorized "
        "representative or a professional treating the member; a reviewer checks."
    ),
    ReviewReason.REQUESTER_NOT_PARTICIPATING: (
        "The directory does not list the requesting professional as participating; a reviewer checks."
    ),
}

# NUCC taxonomy codes treated as primary care (contract §3: configurable).
DEFAULT_PRIMARY_CARE_TAXONOMY: frozenset[str] = frozenset(
    {
        "207Q00000X",  # Family Medicine
        "207QA0505X",  # Family Medicine, Adult Medicine
        "207R00000X",  # Internal Medicine
        "208000000X",  # Pediatrics
        "208D00000X",  # General Practice
        "363LF0000X",  # Nurse Practitioner, Family
        "363LP2300X",  # Nurse Practitioner, Primary Care
        "363AM0700X",  # Physician Assistant, Medical
        "261QP2300X",  # Clinic/Center, Primary Care
    }
)

EXPEDITED_PRIORITIES = frozenset({"urgent", "asap", "stat"})


def review_action_codes(claim_response: dict[str, Any]) -> list[dict[str, Any]]:
    """The PAS reviewAction `code` parts of a ClaimResponse, item by item (first item first)."""
    return [
        part
        for item in claim_response.get("item") or []
        for adjudication in item.get("adjudication") or []
        for extension in adjudication.get("extension") or []
        if extension.get("url") == PAS_REVIEW_ACTION
        for part in extension.get("extension") or []
        if part.get("url") == PAS_REVIEW_ACTION_CODE
    ]
