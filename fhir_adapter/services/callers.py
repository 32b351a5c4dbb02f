"""Who is calling, as far as PAS ownership needs it: the OAuth client that submits a request
owns it (issue #12); a member's token reaches only that member's own requests."""

from __future__ import annotations

from fhir_adapter.access.guard import AccessGuard, Guard


def caller_client(guard: Guard) -> str | None:
    """The caller's client id; None for the adapter itself (workers, CLI)."""
    return guard.access.client_id if isinstance(guard, AccessGuard) else None


def caller_patient(guard: Guard) -> str | None:
    """The Patient id a member's (patient-scoped) token acts for; None otherwise."""
    if isinstance(guard, AccessGuard) and guard.patient_bound:
        return guard.access.patient
    return None


def may_see_request(guard: Guard, *, submitter: str | None, patient_reference: str | None) -> bool:
    """PAS inquiries and changes: the submitting client, or the member the request is for.
    Anything else is answered exactly as if it did not exist."""
    if not isinstance(guard, AccessGuard):
        return True
    patient = caller_patient(guard)
    if patient is not None:
        return patient_reference == f"Patient/{patient}"
    return submitter is not None and submitter == guard.access.client_id
