"""Every reason a request can be pended for has its words in the queue (long and short)."""

from __future__ import annotations

from fhir_adapter.codes import ReviewReason
from fhir_adapter.review.workspace import DIRECTORY_DOWN, WHY_SHORT, WHY_TEXT


def test_every_review_reason_has_a_sentence_and_a_short_label() -> None:
    codes = {reason.value for reason in ReviewReason} | {DIRECTORY_DOWN}
    assert set(WHY_TEXT) == codes
    assert set(WHY_SHORT) == codes
