"""Write hooks: what a workflow adds to plain FHIR writes, one concern each (resubmission
conditions, the second-opinion intake, consultation reports, Subscription checks), composed in
the order the composition root lists them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.ports import StoredResource, StoreTransaction


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a create or update did: the stored version and whether it is new (201) or not (200).

    `path` is where the resource sat in the request (`Task`, `Bundle.entry[3].resource`), so that
    later checks can name the element at fault.
    """

    resource: StoredResource
    created: bool
    path: str = ""


class WriteHooks(Protocol):
    """One concern a workflow adds to plain FHIR writes."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        """Search criteria that make a create conditional although the client did not ask."""
        ...

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        """Runs inside the write's transaction; raising rejects the whole write."""
        ...

    async def after_commit(self, results: list[WriteResult]) -> None:
        """Runs once the write is committed; must not raise for the client's sake."""
        ...


class NoHooks:
    """Plain FHIR: no conditions, checks or follow-up work (a hook overrides what it adds)."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        return None


class HookChain:
    """Several hooks as one: the first implicit condition any of them gives; every hook's checks
    run, and their issues are answered together (one 422 with every issue)."""

    def __init__(self, hooks: Sequence[WriteHooks] = ()) -> None:
        self.hooks = list(hooks)

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        for hook in self.hooks:
            condition = hook.implicit_condition(content)
            if condition:
                return condition
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        issues: list[Issue] = []
        for hook in self.hooks:
            try:
                results = await hook.after_writes(tx, results)
            except UnprocessableEntityError as error:
                issues += error.issues
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        for hook in self.hooks:
            await hook.after_commit(results)
