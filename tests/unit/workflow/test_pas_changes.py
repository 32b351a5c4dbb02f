"""What a PAS Claim Update asks for, and the ClaimResponse of a cancelled request (issue #12)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from fhir_adapter.codes import review_action_codes
from fhir_adapter.policy.decision import Decision, Outcome, RuleStep
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.pas_changes import (
    CERTIFICATION_TYPE,
    INFO_CANCELLED,
    X12_CERTIFICATION_TYPE_SYSTEM,
    cancelled_claim_response,
    change_of,
    related_claim_reference,
    submitter_extension,
    submitter_of,
)
from tests.factories import EXAMPLES

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
IG = EXAMPLES / "pas" / "ig"


def certification(code: str) -> dict[str, Any]:
    return {
        "url": CERTIFICATION_TYPE,
        "valueCodeableConcept": {
            "coding": [{"system": X12_CERTIFICATION_TYPE_SYSTEM, "code": code}]
        },
    }


def ig_claim(name: str) -> dict[str, Any]:
    claim: dict[str, Any] = json.loads((IG / f"Bundle-{name}.json").read_text())["entry"][0][
        "resource"
    ]
    return claim


def test_the_ig_homecare_update_is_an_update_of_the_claim_it_names() -> None:
    claim = ig_claim("HomecareAuthorizationUpdateBundleExample")
    assert related_claim_reference(claim) == "Claim/HomecareAuthorizationExample"
    assert change_of(claim) == "update"  # one item of three cancelled: not the whole request
    assert related_claim_reference(ig_claim("HomecareAuthorizationBundleExample")) is None


def test_cancel_on_the_claim_or_on_every_item_cancels_the_request() -> None:
    claim = ig_claim("HomecareAuthorizationUpdateBundleExample")
    whole = {**copy.deepcopy(claim), "extension": [certification("3")]}
    assert change_of(whole) == "cancel"
    every_item = copy.deepcopy(claim)
    for item in every_item["item"]:
        item["modifierExtension"] = [{"url": INFO_CANCELLED, "valueBoolean": True}]
    assert change_of(every_item) == "cancel"
    initial = {**copy.deepcopy(claim), "extension": [certification("I")]}
    assert change_of(initial) == "update"


def test_a_cancelled_claim_response_keeps_its_identifiers_and_says_why() -> None:
    decision = Decision(
        Outcome.APPROVED_OUT_OF_NETWORK, trail=(RuleStep("r", "basis", "approved"),)
    )
    response = pas.build_claim_response(
        decision,
        task_id="task-1",
        claim_key="Claim/c",
        patient="Patient/p",
        insurer="Organization/plan",
        requestor=None,
        now=NOW,
    )
    cancelled = cancelled_claim_response(response, now=NOW, reason="PAS Claim X")
    assert cancelled["identifier"] == response["identifier"]
    assert cancelled["preAuthRef"] == response["preAuthRef"]
    assert "preAuthPeriod" not in cancelled  # nothing is authorized any more
    [code] = review_action_codes(cancelled)
    assert code["valueCodeableConcept"]["coding"][0]["code"] == "C"
    assert cancelled["disposition"] == "Cancelled: PAS Claim X"
    assert cancelled["processNote"][-1]["text"] == "Cancelled: PAS Claim X"
    [original] = review_action_codes(response)  # the decision itself is left as it was
    assert original["valueCodeableConcept"]["coding"][0]["code"] == "A1"


def test_the_submitter_is_read_back_from_its_extension() -> None:
    task = {"resourceType": "Task", "extension": [submitter_extension("client-7")]}
    assert submitter_of(task) == "client-7"
    assert submitter_of({"resourceType": "Task"}) is None
