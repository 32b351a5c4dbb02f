"""A PAS request that is not a second-opinion request is still answered when an administrative fact
settles it (pure): coverage that is not active, or not with this plan, is a denial whatever was
asked for (42 CFR 438.210(b)(3) leaves those to a machine). Anything else is not ours to decide."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_adapter.fhir.dates import period_range
from fhir_adapter.policy.decision import Decision
from fhir_adapter.policy.engine import first_decision
from fhir_adapter.policy.facts import RequestFacts
from fhir_adapter.policy.rules import coverage_is_active, coverage_is_with_the_plan


def administrative_decision(
    *,
    now: datetime,
    coverage: Mapping[str, Any],
    plan_reference: str,
    payor_is_plan: bool,
    payor_unsettled: bool = False,
) -> Decision | None:
    """The decision the coverage rules make on their own (with their trail), or None when the
    coverage is active and the plan's."""
    period = coverage.get("period")
    span = period_range(period) if isinstance(period, dict) else None
    facts = RequestFacts(
        now=now,
        plan_reference=plan_reference,
        coverage_status=coverage.get("status"),
        coverage_start=span[0] if span else None,
        coverage_end=span[1] if span else None,
        coverage_payors=(plan_reference,) if payor_is_plan else (),
        requester_kind="other",
        requester_is_the_member=False,
        requester_is_pcp=False,
        requester_is_initial_provider=False,
        reasons=frozenset(),
        care=None,
        needed_specialty=None,
        primary_care_taxonomy=frozenset(),
        payor_unsettled=payor_unsettled,
    )
    return first_decision(facts, (coverage_is_active, coverage_is_with_the_plan))
