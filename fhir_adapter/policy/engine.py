"""Run the rules in order; the first that decides wins, and every rule run is on the trail."""

from __future__ import annotations

from collections.abc import Iterable

from fhir_adapter.policy.decision import Decision, RuleStep
from fhir_adapter.policy.facts import RequestFacts
from fhir_adapter.policy.rules import POLICY_RULES, RULE_BASIS, Rule


def evaluate(facts: RequestFacts, rules: Iterable[Rule] = POLICY_RULES) -> Decision:
    decision = first_decision(facts, rules)
    if decision is None:
        raise RuntimeError("the rule list must end with a rule that always decides")
    return decision


def first_decision(facts: RequestFacts, rules: Iterable[Rule]) -> Decision | None:
    """The first rule's decision, with the trail of every rule run; None when all pass."""
    trail: list[RuleStep] = []
    for rule in rules:
        basis = RULE_BASIS.get(rule.__name__, "")
        decision = rule(facts)
        if decision is None:
            trail.append(RuleStep(rule.__name__, basis, "passed"))
            continue
        trail.append(RuleStep(rule.__name__, basis, decision.outcome.value))
        return decision.with_trail(tuple(trail))
    return None
