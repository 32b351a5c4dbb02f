"""Gathering the facts of a request (contract §4.2): what it names, read from the store in a few
batched reads, and what only the provider directory knows, asked outside any transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_adapter.errors import DirectoryUnavailableError
from fhir_adapter.fhir.elements import (
    ResourceKey,
    npi_of,
    reference_of,
    specialties as specialties_of,
)
from fhir_adapter.policy.facts import Care, Provider, RequestFacts
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.workflow.intake import initial_provider_reference
from fhir_adapter.workflow.plan import Identifier, identifiers_of
from fhir_adapter.workflow.request_facts import (
    DirectoryView,
    LocalRecords,
    Payors,
    base_facts,
    care_of,
    choose_role,
    facts_from,
    payor_verdicts,
    payors_as_named,
    relations,
)
from fhir_adapter.workflow.requester import requester_kind, treating_references
from fhir_adapter.workflow.states import UNDECIDED


@dataclass(frozen=True, slots=True)
class LoadedRequest:
    """A stored request and the resources it references, read in one transaction."""

    task: StoredResource
    request: StoredResource
    records: LocalRecords
    payors: Payors
    plan_identifiers: frozenset[Identifier]


async def _read_keys(
    tx: StoreTransaction,
    context: WorkflowContext,
    references: Iterable[str | None],
    known: Mapping[str, StoredResource],
) -> dict[str, dict[str, Any]]:
    keys = [k for k in (context.key(r) for r in references) if k]
    held = {k: known[k].content for k in keys if k in known}
    wanted = [ResourceKey.parse(k) for k in keys if k not in held]
    found = await tx.resources.read_many(wanted) if wanted else {}
    return held | {key: stored.content for key, stored in found.items()}


class FactGathering:
    """Reads a request and asks the directory about it."""

    def __init__(self, context: WorkflowContext) -> None:
        self.context = context

    async def load(self, task_id: str) -> LoadedRequest | None:
        """The Task, its request and everything the request names; None if decided meanwhile."""
        context = self.context
        async with context.store.transaction(write=False) as tx:
            task = await tx.resources.read("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return None
            request = await context.read_key(
                tx, context.key(reference_of(task.content.get("focus")))
            )
            if request is None:
                return None
            return await self.load_in(tx, task, request, {})

    async def load_in(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        request: StoredResource,
        known: Mapping[str, StoredResource],
    ) -> LoadedRequest:
        """What `load` reads, inside the caller's transaction: the submission that receives the
        Task gathers it from what it writes (`known`, by `Type/id`) and what it read already.
        The decision re-reads the Task under its row lock, so a change made since is seen."""
        records = await self._records(tx, request.content, known)
        config = self.context.config
        plan_identifiers = identifiers_of(records.local.get(config.plan_organization))
        payors = payor_verdicts(
            records,
            plan_organization=config.plan_organization,
            plan_identifiers=plan_identifiers,
            directory_url=config.directory_url,
        )
        return LoadedRequest(task, request, records, payors, plan_identifiers)

    async def _records(
        self, tx: StoreTransaction, content: dict[str, Any], known: Mapping[str, StoredResource]
    ) -> LocalRecords:
        """What the request names, then what those name (PCPs, payors, treating providers),
        then the Practitioners of the PractitionerRoles among them."""
        context = self.context
        first = [
            reference_of(content.get("subject")),
            reference_of((content.get("insurance") or [{}])[0]),
            reference_of(content.get("requester")),
            initial_provider_reference(content),
            *(reference_of(p) for p in content.get("performer") or []),
            *(reference_of(r) for r in content.get("reasonReference") or []),
            context.config.plan_organization,
        ]
        found = await _read_keys(tx, context, first, known)
        patient = found.get(context.key(first[0]) or "")
        coverage = found.get(context.key(first[1]) or "")
        pcp_refs = [reference_of(p) for p in (patient or {}).get("generalPractitioner") or []]
        settled = first[2] in (first[3], *pcp_refs) or requester_kind(first[2]) != "professional"
        care_teams = [] if settled else await self._care_teams(tx, context.key(first[0]))
        conditions = [
            found[key]
            for key in (context.key(reference_of(r)) for r in content.get("reasonReference") or [])
            if key in found and found[key].get("resourceType") == "Condition"
        ]
        treating = treating_references(care_teams, conditions)
        second = [*pcp_refs, *(reference_of(p) for p in (coverage or {}).get("payor") or [])]
        second += treating
        found |= await _read_keys(
            tx, context, [r for r in second if context.key(r) not in found], known
        )
        practitioners = [
            reference_of(r.get("practitioner"))
            for r in found.values()
            if r.get("resourceType") == "PractitionerRole"
        ]
        found |= await _read_keys(
            tx, context, [r for r in practitioners if context.key(r) not in found], known
        )
        return LocalRecords(
            content, patient, coverage, found, context.resources.base_url, tuple(treating)
        )

    async def _care_teams(
        self, tx: StoreTransaction, patient_key: str | None
    ) -> list[dict[str, Any]]:
        """The member's care teams, as stored (evidence of who treats the member)."""
        if not patient_key:
            return []
        query = self.context.resources.parse_query(
            "CareTeam", [("subject", patient_key), ("_count", "50")]
        )
        page = await tx.resources.search(query)
        return [m.content for m in page.matches]

    async def facts(self, loaded: LoadedRequest) -> RequestFacts:
        """The facts the rules decide on; a directory outage leaves them marked unavailable."""
        config = self.context.config
        records = loaded.records
        relation = relations(records)
        base = base_facts(
            records,
            relation,
            now=self.context.clock(),
            plan_organization=config.plan_organization,
            primary_care=config.primary_care_taxonomy,
            candidates_offered=config.candidates_offered,
        )
        try:  # only a payor named by another of the directory's Organizations needs it
            base["coverage_payors"] = await self._payors_asked(loaded)
        except DirectoryUnavailableError:
            base["coverage_payors"] = payors_as_named(loaded.payors, config.plan_organization)
            base["payor_unsettled"] = any(v == "ask-directory" for _, v in loaded.payors)
        try:
            seen = await self._directory_view(records, professional=relation.kind == "professional")
        except DirectoryUnavailableError:
            seen = None
        return facts_from(base, relation, seen)

    async def _payors_asked(self, loaded: LoadedRequest) -> tuple[str, ...]:
        """Coverage.payor as the rules see them; the directory settles the ones only it knows
        (raises DirectoryUnavailableError)."""
        settled = []
        for reference, verdict in loaded.payors:
            if verdict == "ask-directory":
                listed = await self.context.directory.read(reference)
                verdict = "plan" if identifiers_of(listed) & loaded.plan_identifiers else "other"
            settled.append((reference, verdict))
        return payors_as_named(settled, self.context.config.plan_organization)

    async def _directory_view(self, records: LocalRecords, *, professional: bool) -> DirectoryView:
        """The providers the request names, as the directory knows them, and the candidates."""
        pcps, selected = records.pcps, records.selected
        requester = await self.provider(records.requester, records) if professional else None
        initial = await self.provider(records.initial, records)
        pcp = await self.provider(pcps[0] if pcps else None, records)
        chosen = await self.provider(selected[0] if selected else None, records)
        primary = self.context.config.primary_care_taxonomy
        care, needed = care_of(records.request, initial, primary)
        codes = {needed} if needed else set(primary)
        in_network: list[Provider] = []
        out_of_network: list[Provider] = []
        if care is not None and (needed or care is Care.PRIMARY):
            in_network, out_of_network = await self._candidates(
                codes, group=pcp.organization_reference if pcp else None, initial=initial
            )
        return DirectoryView(
            requester, initial, pcp, chosen, care, needed, in_network, out_of_network
        )

    async def _candidates(
        self, codes: set[str], *, group: str | None, initial: Provider | None
    ) -> tuple[list[Provider], list[Provider]]:
        """Narrow directory searches that stop once there are enough to rank (issue #10): the
        PCP's medical group first, then the whole network; out of network only if nobody in it
        can give the opinion (policy IV)."""
        now = self.context.clock()
        directory = self.context.directory
        enough = 4 * max(self.context.config.candidates_offered, 1) + 1  # +1: the initial provider
        found: list[Provider] = []
        if group:
            found = await directory.in_network_providers(
                codes, today=now, organization=group, enough=enough
            )
        seen = {p.role_reference for p in found}
        found += [
            p
            for p in await directory.in_network_providers(codes, today=now, enough=enough)
            if p.role_reference not in seen
        ]
        if any(p.in_network and not p.is_same_professional(initial) for p in found):
            return found, []
        everyone = await directory.providers_with_specialty(
            codes, today=now, enough=enough, out_of_network=True
        )
        return found, [p for p in everyone if not p.in_network]

    async def provider(self, reference: str | None, records: LocalRecords) -> Provider | None:
        """The directory's view of a provider the request names (local copy or directory URL)."""
        if not reference:
            return None
        now = self.context.clock()
        key = records.key(reference)
        if key is None:  # an absolute reference: ask the directory for it
            return await self.context.directory.provider(reference, today=now)
        local = records.local.get(key)
        if local is None:
            return None
        specialties = specialties_of(local)
        npi = npi_of(records.practitioner(local))
        if npi:
            roles = await self.context.directory.roles_by_npi(npi, today=now)
            chosen = choose_role(roles, specialties)
            if chosen is not None:
                return chosen
        # Not in the directory: known only by what the request says; never in network.
        return Provider(role_reference=key, specialties=specialties, npi=npi, in_network=False)
