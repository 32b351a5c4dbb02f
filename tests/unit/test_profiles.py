"""The conformance resources in profiles/ stay true to the code and to the examples.

Each JSON file must parse with the R4B model of its type and carry our canonical URL and version; the
CodeSystems must hold exactly the codes of the enums in fhir_adapter.codes; the extension URLs
must be the constants the code uses. Then the profiles are applied (with a small differential checker:
cardinality, fixed and pattern values, slices, reference targets, bindings to our ValueSets) to the
example request Bundles and to the Claim, ClaimResponse and Task the adapter builds, so a profile that
drifts from the code fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter import __version__
from fhir_adapter.codes import (
    CANONICAL,
    DENIAL_REASON_SYSTEM,
    DENIAL_TEXT,
    INITIAL_PROVIDER_EXTENSION,
    REASON_SYSTEM,
    REVIEW_REASON_SYSTEM,
    REVIEW_TEXT,
    RULE_TRAIL_EXTENSION,
    SECOND_OPINION_SYSTEM,
    STATUS_SYSTEM,
    X12_REVIEW_ACTION_SYSTEM,
    BusinessStatus,
    DenialReason,
    Reason,
    ReviewAction,
    ReviewReason,
)
from fhir_adapter.fhir.resources import FHIR_VERSION, model_class
from fhir_adapter.metrics.core import Metric
from fhir_adapter.metrics.measure import MEASURE_URL, METRIC_CODES, METRIC_SYSTEM, STRATIFIERS
from fhir_adapter.metrics.records import (
    EVENT_CODES,
    EVENT_SYSTEM,
    TIMEFRAME_EXTENSION,
    ExtensionReason,
    extend_timeframe,
)
from fhir_adapter.policy.decision import Decision, Outcome, RuleStep
from fhir_adapter.policy.facts import Provider
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.deadlines import Track
from fhir_adapter.workflow.pas_changes import (
    CLIENT_ID_SYSTEM,
    SUBMITTER_EXTENSION,
    submitter_extension,
)
from fhir_adapter.workflow.states import TaskStatus, transition

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"
EXAMPLES = sorted((ROOT / "examples" / "requests").glob("*.json"))
PAS_EXAMPLES = sorted((ROOT / "examples" / "pas").glob("*.json"))
OUR_HOST = "https://fhir-adapter.org"
CORE = "http://hl7.org/fhir/StructureDefinition/"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)

RESOURCES: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted(PROFILES.glob("*.json"))
}
BY_URL: dict[str, dict[str, Any]] = {r["url"]: r for r in RESOURCES.values()}
STRUCTURES = sorted(n for n, r in RESOURCES.items() if r["resourceType"] == "StructureDefinition")


def sd(artifact_id: str) -> dict[str, Any]:
    return BY_URL[f"{CANONICAL}/StructureDefinition/{artifact_id}"]


# -- every file ---------------------------------------------------------------------------------


def test_the_documented_artifacts_are_all_there() -> None:
    expected = {
        "StructureDefinition": {
            "second-opinion-servicerequest",
            "second-opinion-task",
            "second-opinion-claim",
            "second-opinion-claimresponse",
            "initial-opinion-provider",
            "decision-rule",
            "decision-timeframe-extension",
            "submitting-client",
        },
        "CodeSystem": {
            "second-opinion",
            "second-opinion-reason",
            "second-opinion-status",
            "second-opinion-denial-reason",
            "second-opinion-review-reason",
            "pa-metric",
            "pa-event",
        },
        "ValueSet": {
            "second-opinion",
            "second-opinion-reason",
            "second-opinion-status",
            "second-opinion-denial-reason",
            "second-opinion-review-reason",
            "pa-metric",
            "pa-event",
        },
        "Measure": {"pa-metrics"},
        "OperationDefinition": {
            "Task-decide",
            "MeasureReport-pa-metrics",
            "Task-record-appeal",
            "Claim-submit",
            "Claim-inquire",
        },
    }
    for resource_type, ids in expected.items():
        present = {r["id"] for r in RESOURCES.values() if r["resourceType"] == resource_type}
        assert ids <= present, f"missing {resource_type}: {sorted(ids - present)}"


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_parses_with_the_r4b_model(name: str) -> None:
    resource = RESOURCES[name]
    model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_canonical_url_name_and_version(name: str) -> None:
    resource = RESOURCES[name]
    resource_type, artifact_id = resource["resourceType"], resource["id"]
    assert name == f"{resource_type}-{artifact_id}.json"
    assert resource["url"] == f"{CANONICAL}/{resource_type}/{artifact_id}"
    assert resource["url"].startswith(f"{OUR_HOST}/fhir/")
    assert resource["version"] == __version__
    assert resource["status"] == "active"
    assert resource["publisher"] == "fhir-adapter"
    assert resource["name"][0].isupper() and resource["name"].isalnum()
    assert resource.get("description")
    if resource_type == "StructureDefinition":
        assert resource["fhirVersion"] == FHIR_VERSION
    else:
        assert "fhirVersion" not in resource
    assert (PROFILES / name).read_text(encoding="utf-8") == json.dumps(
        resource, indent=2, ensure_ascii=False
    ) + "\n", "pretty-printed with indent 2"


def test_the_readme_lists_every_artifact() -> None:
    readme = (PROFILES / "README.md").read_text(encoding="utf-8")
    for name in RESOURCES:
        assert name in readme, f"{name} is not described in profiles/README.md"


# -- terminology --------------------------------------------------------------------------------

CODE_SYSTEMS: dict[str, set[str]] = {
    SECOND_OPINION_SYSTEM: {"second-opinion"},
    REASON_SYSTEM: {r.value for r in Reason},
    STATUS_SYSTEM: {s.value for s in BusinessStatus} | {"decision"},
    DENIAL_REASON_SYSTEM: {d.value for d in DenialReason},
    REVIEW_REASON_SYSTEM: {r.value for r in ReviewReason},
    METRIC_SYSTEM: set(METRIC_CODES),
    EVENT_SYSTEM: set(EVENT_CODES),
}


def concepts(url: str) -> dict[str, dict[str, Any]]:
    code_system = BY_URL[url]
    assert code_system["resourceType"] == "CodeSystem"
    return {c["code"]: c for c in code_system["concept"]}


@pytest.mark.parametrize("url", sorted(CODE_SYSTEMS))
def test_code_system_codes_are_exactly_the_enum(url: str) -> None:
    code_system = BY_URL[url]
    assert set(concepts(url)) == CODE_SYSTEMS[url]
    assert len(code_system["concept"]) == len(CODE_SYSTEMS[url]) == code_system["count"]


@pytest.mark.parametrize(
    "name", sorted(n for n, r in RESOURCES.items() if r["resourceType"] == "CodeSystem")
)
def test_code_systems_are_complete_case_sensitive_and_defined(name: str) -> None:
    code_system = RESOURCES[name]
    assert code_system["content"] == "complete"
    assert code_system["caseSensitive"] is True
    for concept in code_system["concept"]:
        assert concept.get("display") and concept.get("definition"), concept["code"]


def test_denial_and_review_definitions_are_the_texts_the_adapter_sends() -> None:
    denial = concepts(DENIAL_REASON_SYSTEM)
    for reason, text in DENIAL_TEXT.items():
        assert denial[reason.value]["definition"] == text
    review = concepts(REVIEW_REASON_SYSTEM)
    for review_reason, text in REVIEW_TEXT.items():
        assert review[review_reason.value]["definition"] == text


def test_reason_definitions_quote_policy_section_ii_a_to_e() -> None:
    reasons = concepts(REASON_SYSTEM)
    for letter, reason in zip("ABCDE", Reason, strict=True):
        assert reasons[reason.value]["definition"].startswith(f"Policy section II.{letter}: ")


def value_set_codes(value_set: dict[str, Any]) -> set[tuple[str, str]]:
    """The (system, code) pairs a ValueSet holds: whole systems from profiles/, or listed codes."""

    def pairs(part: dict[str, Any]) -> set[tuple[str, str]]:
        system = part["system"]
        if "concept" in part:
            return {(system, c["code"]) for c in part["concept"]}
        return {(system, code) for code in concepts(system)}

    compose = value_set["compose"]
    included = set().union(*(pairs(p) for p in compose["include"]))
    excluded = set().union(set(), *(pairs(p) for p in compose.get("exclude", [])))
    return included - excluded


@pytest.mark.parametrize("url", sorted(CODE_SYSTEMS))
def test_each_value_set_includes_its_code_system(url: str) -> None:
    code_system = BY_URL[url]
    value_set = BY_URL[code_system["valueSet"]]
    assert value_set["resourceType"] == "ValueSet"
    assert value_set["id"] == code_system["id"]
    include = value_set["compose"]["include"]
    assert include == [{"system": url}], "the whole CodeSystem, no filter, no version"


@pytest.mark.parametrize(
    "name", sorted(n for n, r in RESOURCES.items() if r["resourceType"] == "ValueSet")
)
def test_value_sets_draw_only_on_code_systems_that_exist(name: str) -> None:
    for system, _code in value_set_codes(RESOURCES[name]):
        if system.startswith(OUR_HOST):
            assert system in CODE_SYSTEMS or system in BY_URL


def test_status_value_set_is_the_business_statuses() -> None:
    value_set = BY_URL[f"{CANONICAL}/ValueSet/second-opinion-status"]
    assert value_set_codes(value_set) == {(STATUS_SYSTEM, s.value) for s in BusinessStatus}


def test_review_action_value_set_is_the_review_actions() -> None:
    value_set = BY_URL[f"{CANONICAL}/ValueSet/second-opinion-review-action"]
    assert value_set_codes(value_set) == {(X12_REVIEW_ACTION_SYSTEM, a.value) for a in ReviewAction}


# -- extensions ---------------------------------------------------------------------------------


def test_the_submitting_client_extension_is_defined_for_task_and_claim_response() -> None:
    extension = sd("submitting-client")
    assert extension["url"] == SUBMITTER_EXTENSION
    assert extension["context"] == [
        {"type": "element", "expression": "Task"},
        {"type": "element", "expression": "ClaimResponse"},
    ]
    assert element(extension, "Extension.value[x]")["type"] == [{"code": "Identifier"}]
    assert submitter_extension("c-1")["valueIdentifier"]["system"] == CLIENT_ID_SYSTEM


@pytest.mark.parametrize(
    ("artifact_id", "url", "context"),
    [
        ("initial-opinion-provider", INITIAL_PROVIDER_EXTENSION, "ServiceRequest"),
        ("decision-rule", RULE_TRAIL_EXTENSION, "ClaimResponse"),
        ("decision-timeframe-extension", TIMEFRAME_EXTENSION, "Task"),
    ],
)
def test_extension_definitions(artifact_id: str, url: str, context: str) -> None:
    extension = sd(artifact_id)
    assert extension["url"] == url
    assert extension["kind"] == "complex-type"
    assert extension["type"] == "Extension"
    assert extension["abstract"] is False
    assert extension["derivation"] == "constraint"
    assert extension["baseDefinition"] == CORE + "Extension"
    assert extension["context"] == [{"type": "element", "expression": context}]
    assert element(extension, "Extension.url")["fixedUri"] == url


def test_initial_opinion_provider_references_a_practitioner_role() -> None:
    value = element(sd("initial-opinion-provider"), "Extension.value[x]")
    assert value["type"] == [{"code": "Reference", "targetProfile": [CORE + "PractitionerRole"]}]


def test_decision_rule_has_the_sub_extensions_the_adapter_writes() -> None:
    decision = Decision(Outcome.PENDING_DIRECTORY, trail=(RuleStep("r", "b", "pending-directory"),))
    response = build_response(decision)
    (trail,) = response["extension"]
    written = {e["url"]: next(k for k in e if k.startswith("value")) for e in trail["extension"]}
    definition = sd("decision-rule")
    declared = {
        el["id"].split(":")[1].split(".")[0]: "value"
        + el["type"][0]["code"][0].upper()
        + el["type"][0]["code"][1:]
        for el in definition["differential"]["element"]
        if el["id"].startswith("Extension.extension:") and el["id"].endswith(".value[x]")
    }
    assert (
        written
        == declared
        == {"rule": "valueString", "basis": "valueString", "result": "valueCode"}
    )


# -- profiles -----------------------------------------------------------------------------------

PROFILE_TYPES = {
    "second-opinion-servicerequest": "ServiceRequest",
    "second-opinion-task": "Task",
    "second-opinion-claim": "Claim",
    "second-opinion-claimresponse": "ClaimResponse",
}


def element(structure: dict[str, Any], element_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        e for e in structure["differential"]["element"] if e["id"] == element_id
    ]
    assert len(found) == 1, f"{structure['id']}: {element_id}"
    return found[0]


@pytest.mark.parametrize(("artifact_id", "resource_type"), sorted(PROFILE_TYPES.items()))
def test_resource_profiles_are_constraints_on_core(artifact_id: str, resource_type: str) -> None:
    profile = sd(artifact_id)
    assert profile["kind"] == "resource"
    assert profile["abstract"] is False
    assert profile["type"] == resource_type
    assert profile["derivation"] == "constraint"
    assert profile["baseDefinition"] == CORE + resource_type
    assert "snapshot" not in profile
    assert profile["differential"]["element"][0]["id"] == resource_type


@pytest.mark.parametrize("name", STRUCTURES)
def test_differential_ids_paths_and_slices(name: str) -> None:
    structure = RESOURCES[name]
    root = structure["type"]
    seen: set[str] = set()
    for el in structure["differential"]["element"]:
        element_id, path = el["id"], el["path"]
        assert element_id == root or element_id.startswith(root + "."), element_id
        assert ".".join(s.split(":")[0] for s in element_id.split(".")) == path, element_id
        last = element_id.split(".")[-1]
        assert el.get("sliceName") == (last.split(":")[1] if ":" in last else None), element_id
        assert element_id not in seen, f"{element_id} twice: paths must be unique per slice"
        seen.add(element_id)
        if el.get("sliceName"):
            parent = element_id.rsplit(":", 1)[0]
            is_extension = path.endswith(".extension")
            assert is_extension or parent in seen, f"{element_id}: slicing not declared on {parent}"


@pytest.mark.parametrize("name", STRUCTURES)
def test_our_canonicals_referenced_from_profiles_exist(name: str) -> None:
    for el in RESOURCES[name]["differential"]["element"]:
        canonicals = [el.get("binding", {}).get("valueSet")]
        for type_ in el.get("type", []):
            canonicals += type_.get("profile", []) + type_.get("targetProfile", [])
        for url in canonicals:
            if url and url.startswith(OUR_HOST):
                assert url in BY_URL, f"{el['id']}: {url} is not in profiles/"


# -- the profiles applied to what the adapter accepts and builds -----------------------------


def children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        values = [v for k, v in node.items() if k.startswith(stem) and k[len(stem) :][:1].isupper()]
    else:
        values = [node[name]] if name in node else []
    return [item for v in values for item in (v if isinstance(v, list) else [v])]


def choice_key(node: dict[str, Any], name: str) -> str | None:
    stem = name[:-3]
    return next((k for k in node if k.startswith(stem) and k[len(stem) :][:1].isupper()), None)


def matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every element of the pattern is in the value (lists: some item matches)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def fixed_or_pattern(el: dict[str, Any]) -> tuple[str, Any] | None:
    """('fixed', value) for fixed[x], ('pattern', value) for pattern[x], None without either."""
    for key, value in el.items():
        for kind in ("fixed", "pattern"):
            if key.startswith(kind) and key[len(kind) :][:1].isupper():
                return (kind, value)
    return None


class Checker:
    """Applies one differential to one instance; `problems` lists every mismatch."""

    def __init__(self, structure: dict[str, Any], reference_type: Any) -> None:
        self.structure = structure
        self.elements = {e["id"]: e for e in structure["differential"]["element"]}
        self.reference_type = reference_type
        self.problems: list[str] = []

    def discriminate(self, slice_id: str, candidates: list[Any]) -> list[Any]:
        parent = self.elements.get(slice_id.rsplit(":", 1)[0], {})
        discriminators = parent.get("slicing", {}).get("discriminator") or [
            {"type": "value", "path": "url"}  # extensions are always sliced by url
        ]
        chosen = candidates
        for discriminator in discriminators:
            path = discriminator["path"]
            target = (
                self.elements[slice_id]
                if path == "$this"
                else self.elements.get(f"{slice_id}.{path}", {})
            )
            wanted = fixed_or_pattern(target)
            if wanted is None and path == "url":
                wanted = ("fixed", self.elements[slice_id]["type"][0]["profile"][0])
            assert wanted is not None, f"{slice_id}: no value for discriminator {path}"
            chosen = [
                c
                for c in chosen
                if any(
                    matches(v, wanted[1]) for v in ([c] if path == "$this" else children(c, path))
                )
            ]
        return chosen

    def groups(self, element_id: str, instance: dict[str, Any]) -> list[list[Any]]:
        """For each node of the parent element, the nodes of `element_id` under it."""
        segments = element_id.split(".")
        if len(segments) == 1:
            return [[instance]]
        parent_id = ".".join(segments[:-1])
        parents = [node for group in self.groups(parent_id, instance) for node in group]
        name, _, slice_name = segments[-1].partition(":")
        result = []
        for parent in parents:
            nodes = children(parent, name)
            if slice_name:
                nodes = self.discriminate(element_id, nodes)
            result.append(nodes)
        return result

    def check(self, instance: dict[str, Any]) -> list[str]:
        for element_id, el in self.elements.items():
            for group in self.groups(element_id, instance):
                self.check_group(element_id, el, group)
        return self.problems

    def check_group(self, element_id: str, el: dict[str, Any], nodes: list[Any]) -> None:
        where = f"{self.structure['id']}: {element_id}"
        if len(nodes) < el.get("min", 0):
            self.problems.append(f"{where}: {len(nodes)} < min {el['min']}")
        if el.get("max", "*") != "*" and len(nodes) > int(el["max"]):
            self.problems.append(f"{where}: {len(nodes)} > max {el['max']}")
        wanted = fixed_or_pattern(el)
        for node in nodes:
            if wanted and not (
                node == wanted[1] if wanted[0] == "fixed" else matches(node, wanted[1])
            ):
                self.problems.append(f"{where}: {node!r} is not {wanted[0]} {wanted[1]!r}")
            self.check_types(where, el, node)
            self.check_binding(where, el, node)

    def check_types(self, where: str, el: dict[str, Any], node: Any) -> None:
        types = el.get("type") or []
        targets = {p for t in types for p in t.get("targetProfile", [])}
        if targets and isinstance(node, dict) and "reference" in node:
            allowed = {
                url[len(CORE) :] if url.startswith(CORE) else BY_URL[url]["type"] for url in targets
            }
            actual = self.reference_type(node["reference"])
            if actual not in allowed:
                self.problems.append(
                    f"{where}: {node['reference']} ({actual}) not in {sorted(allowed)}"
                )

    def check_binding(self, where: str, el: dict[str, Any], node: Any) -> None:
        binding = el.get("binding") or {}
        if binding.get("strength") not in ("required", "extensible") or not isinstance(node, dict):
            return
        allowed = value_set_codes(BY_URL[binding["valueSet"]])
        systems = {system for system, _ in allowed}
        codings = [(c.get("system"), c.get("code")) for c in node.get("coding") or []]
        if "coding" not in node and "code" in node:  # a Coding, not a CodeableConcept
            codings = [(node.get("system"), node.get("code"))]
        if binding["strength"] == "required" and not any(c in allowed for c in codings):
            self.problems.append(f"{where}: {codings} not in {binding['valueSet']}")
        for coding in codings:
            if coding[0] in systems and coding not in allowed:
                self.problems.append(f"{where}: {coding} not in {binding['valueSet']}")


def choice_types(structure: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    """value[x] restricted to types: the instance's choice key must name one of them."""
    problems = []
    checker = Checker(structure, lambda _: None)
    for element_id, el in checker.elements.items():
        if not element_id.endswith("[x]") or not el.get("type"):
            continue
        name = element_id.split(".")[-1]
        parent_id = element_id.rsplit(".", 1)[0]
        for group in checker.groups(parent_id, instance):
            for parent in group:
                key = choice_key(parent, name) if isinstance(parent, dict) else None
                if key and key[len(name) - 3 :].lower() not in {
                    t["code"].lower() for t in el["type"]
                }:
                    problems.append(f"{structure['id']}: {element_id} is {key}")
    return problems


def our_extensions(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if str(node.get("url", "")).startswith(OUR_HOST) and node.get("url") in BY_URL:
            yield node
        for value in node.values():
            yield from our_extensions(value)
    elif isinstance(node, list):
        for item in node:
            yield from our_extensions(item)


def local_type(reference: str) -> str | None:
    parts = reference.split("?")[0].split("/")
    return parts[-2] if len(parts) >= 2 else None


def conform(
    artifact_id: str, instance: dict[str, Any], reference_type: Any = local_type
) -> list[str]:
    structure = sd(artifact_id)
    assert instance["resourceType"] == structure["type"]
    problems = Checker(structure, reference_type).check(instance) + choice_types(
        structure, instance
    )
    for extension in our_extensions(instance):
        definition = BY_URL[extension["url"]]
        problems += Checker(definition, reference_type).check(extension)
        problems += choice_types(definition, extension)
    return problems


def bundle(path: Path) -> dict[str, Any]:
    content: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return content


def resolver(content: dict[str, Any]) -> Any:
    full_urls = {e["fullUrl"]: e["resource"]["resourceType"] for e in content["entry"]}
    return lambda reference: full_urls.get(reference) or local_type(reference)


def entry(content: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        e["resource"] for e in content["entry"] if e["resource"]["resourceType"] == resource_type
    ]
    assert len(found) == 1, resource_type
    return found[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_requests_conform_to_the_profiles(path: Path) -> None:
    content = bundle(path)
    resolve = resolver(content)
    assert conform("second-opinion-servicerequest", entry(content, "ServiceRequest"), resolve) == []
    assert conform("second-opinion-task", entry(content, "Task"), resolve) == []


@pytest.mark.parametrize("path", PAS_EXAMPLES, ids=lambda p: p.stem)
def test_pas_submit_examples_conform_to_the_profiles(path: Path) -> None:
    content = bundle(path)
    resolve = resolver(content)
    claim = content["entry"][0]["resource"]
    assert conform("second-opinion-claim", claim, resolve) == []
    assert conform("second-opinion-servicerequest", entry(content, "ServiceRequest"), resolve) == []


@pytest.mark.parametrize("path", EXAMPLES + PAS_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_requests_use_only_codes_our_code_systems_define(path: Path) -> None:
    def codings(node: Any) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            if isinstance(node.get("system"), str) and "code" in node:
                yield node["system"], node["code"]
            for value in node.values():
                yield from codings(value)
        elif isinstance(node, list):
            for item in node:
                yield from codings(item)

    used = [(s, c) for s, c in codings(bundle(path)) if s.startswith(OUR_HOST)]
    assert used, "every example carries at least the second-opinion category"
    for system, code in used:
        assert system in BY_URL, f"{system} has no CodeSystem in profiles/"
        assert code in concepts(system), f"{system}#{code} is not defined"


def test_example_path_code_system_names_every_example() -> None:
    tags = {tag["code"] for path in EXAMPLES for tag in bundle(path).get("meta", {}).get("tag", [])}
    assert set(concepts(f"{CANONICAL}/CodeSystem/example-path")) == tags


def test_the_profile_rejects_what_intake_rejects() -> None:
    """The checker is not vacuous: a request that breaks the profile shows every break."""
    content = bundle(EXAMPLES[0])
    request = dict(entry(content, "ServiceRequest"))
    request.update(status="draft", category=[], insurance=[{"reference": "Patient/x"}])
    request["extension"] = [
        {"url": INITIAL_PROVIDER_EXTENSION, "valueReference": {"reference": "Organization/o"}}
    ]
    del request["authoredOn"]
    problems = " ".join(conform("second-opinion-servicerequest", request, resolver(content)))
    for expected in (
        "ServiceRequest.status",
        "ServiceRequest.category:secondOpinion",
        "ServiceRequest.insurance",
        "ServiceRequest.authoredOn",
        "initial-opinion-provider: Extension.value[x]",
    ):
        assert expected in problems


def build_response(
    decision: Decision, requestor: str | None = "PractitionerRole/requester"
) -> dict[str, Any]:
    return pas.build_claim_response(
        decision,
        task_id="0b7c3c1e-5d1f-4c4e-9a43-6f1d2f0a9e11",
        claim_key="Claim/c1",
        patient="Patient/p1",
        insurer="Organization/demo-plan",
        requestor=requestor,
        now=NOW,
    )


PROVIDER = Provider(role_reference="PractitionerRole/second", display="Dr. Second", in_network=True)
TRAIL = (RuleStep("coverage_is_active", "Policy (coverage statement)", "passed"),)
DECISIONS = {
    Outcome.APPROVED_IN_NETWORK: Decision(Outcome.APPROVED_IN_NETWORK, providers=(PROVIDER,)),
    Outcome.APPROVED_OUT_OF_NETWORK: Decision(
        Outcome.APPROVED_OUT_OF_NETWORK, providers=(PROVIDER,)
    ),
    Outcome.DENIED: Decision.deny(DenialReason.REQUESTER_NOT_ELIGIBLE),
    Outcome.PENDING_REVIEW: Decision.review(ReviewReason.NO_LISTED_REASON),
    Outcome.PENDING_DIRECTORY: Decision(Outcome.PENDING_DIRECTORY),
}


@pytest.mark.parametrize("expedited", [False, True])
@pytest.mark.parametrize(
    "provider", ["PractitionerRole/r1", "Practitioner/p2", "Organization/demo-plan"]
)
def test_the_claim_the_adapter_builds_conforms(expedited: bool, provider: str) -> None:
    claim = pas.build_claim(
        task_id="t1",
        request_key="ServiceRequest/sr1",
        patient="Patient/p1",
        coverage="Coverage/c1",
        provider=provider,
        insurer="Organization/demo-plan",
        expedited=expedited,
        now=NOW,
    )
    model_class("Claim").model_validate(claim)
    assert conform("second-opinion-claim", claim) == []


@pytest.mark.parametrize("requestor", ["PractitionerRole/r1", "Practitioner/p2", None])
@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_claim_response_the_adapter_builds_conforms(
    outcome: Outcome, requestor: str | None
) -> None:
    decision = DECISIONS[outcome]
    decision = decision.with_trail(
        (*TRAIL, RuleStep("deciding_rule", "Policy II A-E", outcome.value))
    )
    response = build_response(decision, requestor)
    model_class("ClaimResponse").model_validate(response)
    assert conform("second-opinion-claimresponse", response) == []


@pytest.mark.parametrize(
    "outcome", [Outcome.APPROVED_IN_NETWORK, Outcome.APPROVED_OUT_OF_NETWORK, Outcome.DENIED]
)
def test_a_reviewers_claim_response_conforms(outcome: Outcome) -> None:
    decision = Decision(
        outcome,
        providers=()
        if outcome is Outcome.DENIED
        else (Provider(role_reference="PractitionerRole/x"),),
        denial_reason=DenialReason.REVIEWER_DENIED if outcome is Outcome.DENIED else None,
        trail=(RuleStep("reviewer_decision", "42 CFR 438.210(b)(3)", outcome.value),),
    )
    specialty = {"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207X00000X"}]}
    response = pas.build_claim_response(
        decision,
        task_id="t1",
        claim_key="Claim/c1",
        patient="Patient/p1",
        insurer="Organization/demo-plan",
        requestor=None,
        now=NOW,
        reviewer=pas.reviewer_extension("Practitioner/reviewer", "1234567893", specialty),
        note="Reviewed the records; the reviewer's own words.",
    )
    model_class("ClaimResponse").model_validate(response)
    assert conform("second-opinion-claimresponse", response) == []


@pytest.mark.parametrize("outcome", list(Outcome))
def test_decided_tasks_conform(outcome: Outcome) -> None:
    statuses = {
        Outcome.APPROVED_IN_NETWORK: TaskStatus.ACCEPTED,
        Outcome.APPROVED_OUT_OF_NETWORK: TaskStatus.ACCEPTED,
        Outcome.DENIED: TaskStatus.REJECTED,
        Outcome.PENDING_REVIEW: TaskStatus.ON_HOLD,
        Outcome.PENDING_DIRECTORY: TaskStatus.ON_HOLD,
    }
    content = bundle(EXAMPLES[0])
    task = entry(content, "Task")
    received = transition(
        task, TaskStatus.RECEIVED, business_status=BusinessStatus.RECEIVED, now=NOW
    )
    decided = transition(
        received, statuses[outcome], business_status=outcome.business_status, now=NOW
    )
    decided["output"] = [
        {
            "type": {"coding": [{"system": STATUS_SYSTEM, "code": "decision"}]},
            "valueReference": {"reference": "ClaimResponse/cr1"},
        }
    ]
    resolve = resolver(content)
    assert conform("second-opinion-task", received, resolve) == []
    assert conform("second-opinion-task", decided, resolve) == []


def test_an_extended_task_conforms_with_its_timeframe_extension() -> None:
    content = bundle(EXAMPLES[0])
    task = entry(content, "Task")
    received = transition(
        task, TaskStatus.RECEIVED, business_status=BusinessStatus.RECEIVED, now=NOW
    )
    received["restriction"] = {
        "period": {"start": "2026-11-25T18:00:00Z", "end": "2026-12-02T18:00:00Z"}
    }
    extended = extend_timeframe(
        received,
        reason=ExtensionReason.NEED_INFORMATION,
        until=datetime(2026, 12, 10, 18, 0, tzinfo=UTC),
        received=NOW,
        track=Track.STANDARD,
        now=NOW,
    )
    model_class("Task").model_validate(extended)
    assert [e["url"] for e in extended["extension"]] == [TIMEFRAME_EXTENSION]
    assert conform("second-opinion-task", extended, resolver(content)) == []


def test_the_measure_has_a_group_per_metric_and_the_report_uses_its_codes() -> None:
    measure = BY_URL[MEASURE_URL]
    codes = [g["code"]["coding"][0]["code"] for g in measure["group"]]
    assert codes == [m.value for m in Metric]
    for group in measure["group"]:
        assert {c["code"]["coding"][0]["code"] for c in group["stratifier"]} == set(
            STRATIFIERS.values()
        )
    assert MEASURE_URL.rsplit("/", 1)[1] == measure["id"]
