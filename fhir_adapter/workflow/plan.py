"""Is this Coverage.payor the plan? (pure) EHRs name the plan as they know it: by our reference, by
the provider directory's reference, logically by identifier, or by a copy of the Organization."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

Identifier = tuple[str | None, str]
PayorVerdict = Literal["plan", "other", "ask-directory"]


def identifiers_of(resource: Mapping[str, Any] | None) -> frozenset[Identifier]:
    """The `(system, value)` pairs of a resource's identifiers (or of one Identifier)."""
    raw = (resource or {}).get("identifier")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    return frozenset(
        (i.get("system"), str(i["value"])) for i in items if isinstance(i, dict) and i.get("value")
    )


def plan_references(
    plan_organization: str, *, base_url: str, directory_url: str | None
) -> set[str]:
    """The reference strings that name the plan without a look-up: ours (relative and absolute)
    and the configured directory's (`{directory}/Organization/{id}`)."""
    names = {plan_organization}
    if "://" not in plan_organization:
        names.add(f"{base_url.rstrip('/')}/{plan_organization}")
        if directory_url:
            names.add(f"{directory_url.rstrip('/')}/{plan_organization}")
    return names


def payor_verdict(
    payor: Mapping[str, Any],
    *,
    plan_names: Iterable[str],
    plan_identifiers: frozenset[Identifier],
    resolve: Callable[[str], Mapping[str, Any] | None],
    directory_url: str | None,
) -> PayorVerdict:
    """`plan` when the payor names the plan in one of the four forms; `ask-directory` when it is
    another of the directory's Organizations, whose identifiers only the directory knows; else
    `other`. `resolve` gives the local or contained resource a reference names, if any."""
    if _same_identifier(identifiers_of(payor), plan_identifiers):  # logical reference
        return "plan"
    reference = payor.get("reference")
    if not isinstance(reference, str) or not reference:
        return "other"
    if reference in set(plan_names):
        return "plan"
    copy = resolve(reference)
    if copy is not None:  # a copy of the plan's Organization (PAS submitters send their own)
        return "plan" if _same_identifier(identifiers_of(copy), plan_identifiers) else "other"
    if directory_url and reference.startswith(directory_url.rstrip("/") + "/Organization/"):
        return "ask-directory"
    return "other"


def _same_identifier(given: frozenset[Identifier], plan: frozenset[Identifier]) -> bool:
    """System and value both agree (a bare value could be anybody's member number)."""
    return bool({i for i in given if i[0]} & plan)
