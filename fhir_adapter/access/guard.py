"""The guard the services consult at each read, search and write: one per request.

`Unrestricted` is the adapter's own access (workers, hooks, CLI). `AccessGuard` enforces a
caller's SMART grants: 403 for an interaction no scope allows, and for patient scopes the patient
compartment, where another patient's resources are answered as unknown (404) and never listed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from fhir_adapter.access.compartment import (
    PATIENT_COMPARTMENT,
    SHARED,
    has_compartment,
    in_compartment,
    other_patients,
)
from fhir_adapter.access.owners import OWNER_SYSTEM, owned_by
from fhir_adapter.access.scopes import Access, Interaction, Reach
from fhir_adapter.errors import ForbiddenError
from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.ports.store import StoredResource

_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class Guard(Protocol):
    patient_bound: bool  # acting for one patient: what it may see is narrower than what exists

    @property
    def access(self) -> Access | None:
        """The caller's grants; None for the adapter itself."""
        ...

    def require(
        self, resource_type: str, interaction: Interaction, *, expression: str | None = None
    ) -> None:
        """Raise 403 unless the caller may perform `interaction` on `resource_type` at all."""
        ...

    def visible(self, content: dict[str, Any]) -> bool:
        """Whether the caller may see this stored resource (checked after `require`)."""
        ...

    def check_write(
        self, content: dict[str, Any], interaction: Interaction, *, expression: str | None = None
    ) -> None:
        """Raise 403 if the caller may not write this content (checked after `require`)."""
        ...

    def may_change(self, content: dict[str, Any], interaction: Interaction) -> bool:
        """Whether the caller may change this stored resource (checked after `require`). Unlike
        `visible` it needs no read scope: `system/Patient.u` updates Patients it cannot read."""
        ...

    def restrict(self, query: SearchQuery, interaction: Interaction = "s") -> SearchQuery:
        """The query narrowed to what the caller may see (`s`), or, for the lookup of a
        conditional create (`c`), to the resources the caller's create reaches."""
        ...

    def filter_included(self, resources: list[StoredResource]) -> list[StoredResource]: ...

    def require_system(self, resource_type: str, interaction: Interaction, what: str) -> None:
        """Raise 403 for callers acting for one patient: `what` is a plan or provider action."""
        ...

    def plan_staff(self, resource_type: str, interaction: Interaction) -> bool:
        """Whether the caller acts for the plan on `resource_type`: may write what the plan owns
        (decisions, the record of them) outside the workflow operations."""
        ...


class Unrestricted:
    """The adapter itself."""

    patient_bound = False
    access: Access | None = None

    def require(
        self, resource_type: str, interaction: Interaction, *, expression: str | None = None
    ) -> None:
        return None

    def visible(self, content: dict[str, Any]) -> bool:
        return True

    def check_write(
        self, content: dict[str, Any], interaction: Interaction, *, expression: str | None = None
    ) -> None:
        return None

    def may_change(self, content: dict[str, Any], interaction: Interaction) -> bool:
        return True

    def restrict(self, query: SearchQuery, interaction: Interaction = "s") -> SearchQuery:
        return query

    def filter_included(self, resources: list[StoredResource]) -> list[StoredResource]:
        return resources

    def require_system(self, resource_type: str, interaction: Interaction, what: str) -> None:
        return None

    def plan_staff(self, resource_type: str, interaction: Interaction) -> bool:
        return True


UNRESTRICTED = Unrestricted()


class AccessGuard:
    """A caller's SMART grants, applied."""

    access: Access

    def __init__(self, access: Access, *, base_url: str | None) -> None:
        self.access = access
        self.base_url = base_url
        self.patient_bound = access.patient is not None and any(
            g.level == "patient" for g in access.grants
        )

    def _reach(self, resource_type: str, interaction: Interaction) -> Reach:
        reach = self.access.reach(resource_type, interaction)
        if reach is Reach.COMPARTMENT and not has_compartment(resource_type):
            # Directory-like data is readable for a member; nothing else outside the compartment.
            readable = resource_type in SHARED and interaction in ("r", "s")
            return Reach.ALL if readable else Reach.NONE
        return reach

    def require(
        self, resource_type: str, interaction: Interaction, *, expression: str | None = None
    ) -> None:
        if self._reach(resource_type, interaction) is Reach.NONE:
            raise ForbiddenError(
                f"The access token's scopes do not allow {_NAMES[interaction]} on {resource_type}",
                expression=expression,
            )

    def _compartment_only(self, resource_type: str, interaction: Interaction) -> bool:
        return self._reach(resource_type, interaction) is Reach.COMPARTMENT

    def visible(self, content: dict[str, Any]) -> bool:
        resource_type = str(content.get("resourceType"))
        reach = self._reach(resource_type, "r")
        if reach is Reach.NONE:
            reach = self._reach(resource_type, "s")
        if reach is Reach.NONE:
            return False
        if resource_type == "Subscription":  # issue #16: owners see their own alone
            return owned_by(content, self.access.client_id)
        if reach is Reach.ALL:
            return True
        assert self.access.patient is not None
        return in_compartment(content, self.access.patient, base_url=self.base_url)

    def check_write(
        self, content: dict[str, Any], interaction: Interaction, *, expression: str | None = None
    ) -> None:
        resource_type = str(content.get("resourceType"))
        if not self._compartment_only(resource_type, interaction):
            return
        assert self.access.patient is not None
        patient = self.access.patient
        if not in_compartment(content, patient, base_url=self.base_url) or other_patients(
            content, patient, base_url=self.base_url
        ):
            raise ForbiddenError(
                f"{resource_type} must belong to Patient/{patient}, the patient this access "
                "token is for, and to no other patient",
                expression=expression,
            )

    def may_change(self, content: dict[str, Any], interaction: Interaction) -> bool:
        reach = self._reach(str(content.get("resourceType")), interaction)
        if content.get("resourceType") == "Subscription" and reach is not Reach.NONE:
            return owned_by(content, self.access.client_id)
        if reach is not Reach.COMPARTMENT:
            return reach is Reach.ALL
        assert self.access.patient is not None
        return in_compartment(content, self.access.patient, base_url=self.base_url)

    def restrict(self, query: SearchQuery, interaction: Interaction = "s") -> SearchQuery:
        if query.resource_type == "Subscription":
            mine = parse_search(
                "Subscription",
                [("_tag", f"{OWNER_SYSTEM}|{self.access.client_id}")],
                base_url=self.base_url,
                default_count=query.count,
                max_count=max(query.count, 1),
            )
            return dataclasses.replace(query, filters=(*query.filters, *mine.filters))
        if not self._compartment_only(query.resource_type, interaction):
            return query
        assert self.access.patient is not None
        params = PATIENT_COMPARTMENT.get(query.resource_type, ())
        return dataclasses.replace(query, compartment=(params, self.access.patient))

    def filter_included(self, resources: list[StoredResource]) -> list[StoredResource]:
        return [r for r in resources if self.visible(r.content)]

    def require_system(self, resource_type: str, interaction: Interaction, what: str) -> None:
        if self._reach(resource_type, interaction) is not Reach.ALL:
            raise ForbiddenError(
                f"{what} needs a system or user scope allowing {_NAMES[interaction]} on "
                f"{resource_type}; patient scopes do not"
            )

    def plan_staff(self, resource_type: str, interaction: Interaction) -> bool:
        """Plan staff hold a system or user scope that names the type itself (`system/*.cruds`,
        an EHR's usual grant, does not make it the plan)."""
        return any(
            g.level != "patient"
            and g.resource_type == resource_type
            and interaction in g.interactions
            for g in self.access.grants
        )
