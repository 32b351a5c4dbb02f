"""OperationOutcome building: the one shape every error and informational answer takes.

`Issue` and `make_outcome` live with the error tree (fhir_adapter/errors.py, a leaf every layer
may import), so that errors render themselves without importing upward into this package.
"""

from __future__ import annotations

from typing import Any

from fhir_adapter.errors import Issue, Severity, make_outcome

__all__ = ["Issue", "Severity", "information", "make_outcome"]


def information(text: str) -> dict[str, Any]:
    """An all-is-well OperationOutcome, for `Prefer: return=OperationOutcome`."""
    return make_outcome([Issue(code="informational", diagnostics=text, severity="information")])
