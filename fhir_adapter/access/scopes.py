"""SMART on FHIR scopes, v1 (`system/*.read`) and v2 (`system/Task.cru`), as grants we can check.

SMART App Launch 2.x, scopes-and-launch-context: `context/Type.permissions`, where v2 permissions
are an ordered subset of `cruds` and v1 used `read`, `write` and `*`. A scope with a query
(`patient/Observation.rs?category=...`) narrows access in ways we do not evaluate, so it grants
nothing here: refusing is the safe reading of a scope we cannot honour exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

Interaction = Literal["c", "r", "u", "d", "s"]
Level = Literal["system", "user", "patient"]

_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_V2 = re.compile(r"^c?r?u?d?s?$")

# Resources that only an explicitly named scope reaches: `system/*.rs` does not read the audit log.
ADMIN_ONLY = frozenset({"AuditEvent"})


class Reach(Enum):
    """How far a grant reaches for one resource type and interaction."""

    NONE = "none"
    COMPARTMENT = "compartment"  # only the token's patient's resources
    ALL = "all"


@dataclass(frozen=True, slots=True)
class ScopeGrant:
    level: Level
    resource_type: str  # a type, or "*"
    interactions: frozenset[str]

    def covers(self, resource_type: str, interaction: Interaction) -> bool:
        if interaction not in self.interactions:
            return False
        if self.resource_type == resource_type:
            return True
        return self.resource_type == "*" and resource_type not in ADMIN_ONLY


def parse_scope(scope: str) -> ScopeGrant | None:
    """One scope string as a grant; None for scopes that grant no resource access here
    (`openid`, `launch/patient`, query-restricted or malformed scopes)."""
    match = _SCOPE.match(scope)
    if not match:
        return None
    level, resource_type, permissions = match.groups()
    letters = _V1.get(permissions)
    if letters is None:
        if not _V2.match(permissions) or not permissions:
            return None
        letters = permissions
    return ScopeGrant(level, resource_type, frozenset(letters))  # type: ignore[arg-type]


def parse_scopes(scope: str) -> tuple[ScopeGrant, ...]:
    """The grants of a space-separated `scope` claim or parameter."""
    grants = (parse_scope(s) for s in scope.split())
    return tuple(g for g in grants if g is not None)


@dataclass(frozen=True, slots=True)
class Access:
    """What one caller may do: its client, its grants and, for patient scopes, its patient."""

    client_id: str
    grants: tuple[ScopeGrant, ...]
    patient: str | None = None  # the `patient` claim: a Patient id
    registered: bool = False  # issued by the built-in token endpoint to a registered client

    def reach(self, resource_type: str, interaction: Interaction) -> Reach:
        """System and user scopes reach every resource; patient scopes only the patient's own,
        and only when the token names a patient."""
        best = Reach.NONE
        for grant in self.grants:
            if not grant.covers(resource_type, interaction):
                continue
            if grant.level != "patient":
                return Reach.ALL
            if self.patient is not None:
                best = Reach.COMPARTMENT
        return best

    @property
    def scope(self) -> str:
        return " ".join(
            f"{g.level}/{g.resource_type}.{''.join(c for c in 'cruds' if c in g.interactions)}"
            for g in self.grants
        )


def grantable(requested: str, allowed: str) -> str:
    """The scopes of `requested` that the client's registered `allowed` scopes cover, in the
    order asked; a token never carries more than its client was registered for."""
    allowed_grants = parse_scopes(allowed)
    kept = []
    for scope in requested.split():
        grant = parse_scope(scope)
        if grant is None:
            continue
        if any(
            a.level == grant.level
            and a.resource_type in ("*", grant.resource_type)
            and (a.resource_type != "*" or grant.resource_type not in ADMIN_ONLY)
            and grant.interactions <= a.interactions
            for a in allowed_grants
        ):
            kept.append(scope)
    return " ".join(dict.fromkeys(kept))
