"""OperationOutcome building: the one shape every error and informational answer takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what is wrong (`code`, `diagnostics`) and where (`expression`)."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: Severity = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def make_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource (as FHIR JSON) carrying `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(text: str) -> dict[str, Any]:
    """An all-is-well OperationOutcome, for `Prefer: return=OperationOutcome`."""
    return make_outcome([Issue(code="informational", diagnostics=text, severity="information")])
