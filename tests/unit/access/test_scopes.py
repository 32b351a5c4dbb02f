"""SMART scopes, grants and the patient compartment: the pure core of issue #5's access rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from fhir_adapter.access.compartment import (
    PATIENT_COMPARTMENT,
    has_compartment,
    in_compartment,
    other_patients,
)
from fhir_adapter.access.scopes import (
    ADMIN_ONLY,
    Access,
    Reach,
    ScopeGrant,
    grantable,
    parse_scope,
    parse_scopes,
)
from fhir_adapter.fhir.resources import SERVED_TYPES

BASE = "https://plan.example/fhir"
INTERACTIONS = ("c", "r", "u", "d", "s")


# -- parse_scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "level", "resource_type", "letters"),
    [
        ("system/Task.cru", "system", "Task", "cru"),
        ("system/*.rs", "system", "*", "rs"),
        ("user/Patient.r", "user", "Patient", "r"),
        ("patient/*.cruds", "patient", "*", "cruds"),
        ("system/AuditEvent.s", "system", "AuditEvent", "s"),
        # SMART v1 spellings
        ("system/*.read", "system", "*", "rs"),
        ("system/*.write", "system", "*", "cud"),
        ("system/*.*", "system", "*", "cruds"),
        ("patient/Observation.read", "patient", "Observation", "rs"),
    ],
)
def test_scopes_parse_to_grants(scope: str, level: str, resource_type: str, letters: str) -> None:
    assert parse_scope(scope) == ScopeGrant(level, resource_type, frozenset(letters))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "system/Task",  # no permissions
        "system/Task.",  # empty permissions
        "system/Task.x",
        "system/Task.rc",  # v2 letters out of order
        "system/Task.rr",
        "system/Task.crudsx",
        "system/task.rs",  # not a resource type name
        "admin/*.rs",  # not a level
        "System/*.rs",
        "system/*.rs?category=x",  # query-restricted: grants nothing here
        "patient/Observation.rs?category=laboratory",
        " system/*.rs",
        "system/*.rs ",
        "system/Task.READ",
        "system/**.rs",
    ],
)
def test_scopes_that_grant_nothing(scope: str) -> None:
    assert parse_scope(scope) is None


def test_a_scope_claim_keeps_only_the_grants() -> None:
    grants = parse_scopes(
        "openid  system/Task.cru launch/patient system/*.rs?x=y user/Patient.read"
    )
    assert grants == (
        ScopeGrant("system", "Task", frozenset("cru")),
        ScopeGrant("user", "Patient", frozenset("rs")),
    )
    assert parse_scopes("") == ()


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ("system/*.read", "system/*.rs"),
        ("system/*.write", "system/*.cud"),
        ("system/*.*", "system/*.cruds"),
        ("patient/*.read", "patient/*.rs"),
        ("user/Task.read", "user/Task.rs"),
    ],
)
def test_v1_and_v2_scopes_are_the_same_grant(v1: str, v2: str) -> None:
    assert parse_scope(v1) == parse_scope(v2)


# -- Access.reach ---------------------------------------------------------------------------------


def access(scope: str, patient: str | None = None) -> Access:
    return Access("client", parse_scopes(scope), patient=patient)


@pytest.mark.parametrize(
    ("scope", "patient", "resource_type", "interaction", "reach"),
    [
        ("system/*.rs", None, "Task", "r", Reach.ALL),
        ("system/*.rs", None, "Task", "s", Reach.ALL),
        ("system/*.rs", None, "Task", "c", Reach.NONE),
        ("system/*.rs", None, "Task", "u", Reach.NONE),
        ("system/Task.cru", None, "Task", "u", Reach.ALL),
        ("system/Task.cru", None, "Task", "s", Reach.NONE),
        ("system/Task.cru", None, "ServiceRequest", "c", Reach.NONE),
        ("user/*.r", None, "Patient", "r", Reach.ALL),
        ("patient/*.rs", "p1", "Task", "r", Reach.COMPARTMENT),
        ("patient/*.rs", None, "Task", "r", Reach.NONE),  # a patient scope without a patient
        ("patient/*.rs", "p1", "Task", "c", Reach.NONE),
        ("patient/*.rs system/Task.r", "p1", "Task", "r", Reach.ALL),  # the widest grant wins
        ("system/Task.r patient/*.rs", "p1", "Task", "r", Reach.ALL),
        ("patient/*.rs system/Task.r", "p1", "Claim", "r", Reach.COMPARTMENT),
        # `*` never covers the audit log; naming it does
        ("system/*.cruds", None, "AuditEvent", "r", Reach.NONE),
        ("system/*.*", None, "AuditEvent", "s", Reach.NONE),
        ("system/AuditEvent.rs", None, "AuditEvent", "s", Reach.ALL),
        ("patient/*.rs", "p1", "AuditEvent", "r", Reach.NONE),
        ("system/*.rs?category=x", None, "Task", "r", Reach.NONE),
        ("openid launch/patient", "p1", "Patient", "r", Reach.NONE),
    ],
)
def test_reach(
    scope: str, patient: str | None, resource_type: str, interaction: Any, reach: Reach
) -> None:
    assert access(scope, patient).reach(resource_type, interaction) is reach


grant_strategy = st.builds(
    ScopeGrant,
    st.sampled_from(["system", "user", "patient"]),
    st.sampled_from(["*", "Task", "Patient", "AuditEvent", "Claim"]),
    st.frozensets(st.sampled_from(INTERACTIONS), min_size=1),
)


@given(st.lists(grant_strategy, max_size=5), st.sampled_from([None, "p1"]))
def test_reach_is_what_some_grant_covers(grants: list[ScopeGrant], patient: str | None) -> None:
    caller = Access("client", tuple(grants), patient=patient)
    for resource_type in ("Task", "Patient", "AuditEvent", "Claim", "Coverage"):
        for interaction in INTERACTIONS:
            covering = [g for g in grants if g.covers(resource_type, interaction)]
            reach = caller.reach(resource_type, interaction)
            if any(g.level != "patient" for g in covering):
                assert reach is Reach.ALL
            elif covering and patient is not None:
                assert reach is Reach.COMPARTMENT
            else:
                assert reach is Reach.NONE
            if resource_type in ADMIN_ONLY and reach is not Reach.NONE:
                assert any(g.resource_type == resource_type for g in covering)


@given(st.lists(grant_strategy, max_size=4))
def test_access_scope_round_trips(grants: list[ScopeGrant]) -> None:
    caller = Access("client", tuple(grants))
    assert parse_scopes(caller.scope) == tuple(grants)


# -- grantable ----------------------------------------------------------------------------------

scope_string = st.builds(
    "{}/{}.{}".format,
    st.sampled_from(["system", "user", "patient"]),
    st.sampled_from(["*", "Task", "Patient", "AuditEvent"]),
    st.sampled_from(["r", "rs", "cru", "cruds", "s", "cud", "read", "write", "*", "rc", "x"]),
)
scope_list = st.lists(
    st.one_of(scope_string, st.sampled_from(["openid", "launch/patient", "system/*.rs?a=b"])),
    max_size=6,
).map(" ".join)


def _allows(allowed: str, resource_type: str, interaction: Any, level: str) -> bool:
    return any(
        g.level == level and g.covers(resource_type, interaction) for g in parse_scopes(allowed)
    )


@given(scope_list, scope_list)
def test_grantable_never_grants_more_than_allowed(requested: str, allowed: str) -> None:
    granted = grantable(requested, allowed)
    assert set(granted.split()) <= set(requested.split())
    for grant in parse_scopes(granted):
        for interaction in grant.interactions:
            for resource_type in ("Task", "Patient", "AuditEvent", "Claim"):
                if grant.covers(resource_type, interaction):  # type: ignore[arg-type]
                    assert _allows(allowed, resource_type, interaction, grant.level), (
                        grant,
                        resource_type,
                        interaction,
                    )


@given(scope_list)
def test_grantable_grants_what_is_allowed(allowed: str) -> None:
    granted = grantable(allowed, allowed)
    assert granted.split() == [s for s in dict.fromkeys(allowed.split()) if parse_scope(s)]


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/Task.rs", "system/*.cruds", "system/Task.rs"),
        ("system/*.cruds", "system/*.rs", ""),
        ("system/*.rs system/Task.c", "system/*.rs", "system/*.rs"),
        ("system/AuditEvent.rs", "system/*.cruds", ""),  # `*` does not cover the audit log
        ("system/AuditEvent.rs", "system/AuditEvent.rs", "system/AuditEvent.rs"),
        ("system/*.read", "system/*.rs", "system/*.read"),
        ("system/*.rs", "system/*.read", "system/*.rs"),
        ("user/Task.r", "system/*.cruds", ""),  # levels do not mix
        ("system/Task.r", "patient/*.rs", ""),
        ("openid system/Task.r", "system/Task.rs", "system/Task.r"),
        ("system/Task.r system/Task.r", "system/Task.rs", "system/Task.r"),
        ("system/*.rs?x=y", "system/*.rs", ""),
    ],
)
def test_grantable_examples(requested: str, allowed: str, granted: str) -> None:
    assert grantable(requested, allowed) == granted


# -- in_compartment -------------------------------------------------------------------------------


def test_every_compartment_type_is_served_and_indexed() -> None:
    from fhir_adapter.fhir.search_parameters import params_for

    for resource_type, params in PATIENT_COMPARTMENT.items():
        assert resource_type in SERVED_TYPES
        known = params_for(resource_type)
        for param in params:
            assert known[param].type == "reference", (resource_type, param)
    assert has_compartment("Patient") and not has_compartment("Practitioner")
    assert not has_compartment("AuditEvent") and not has_compartment("Subscription")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"resourceType": "Patient", "id": "p1"}, True),
        ({"resourceType": "Patient", "id": "p2"}, False),
        ({"resourceType": "Patient"}, False),
        ({"resourceType": "Task", "for": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "Task", "for": {"reference": "Patient/p2"}}, False),
        ({"resourceType": "Task", "for": {"reference": f"{BASE}/Patient/p1"}}, True),
        (
            {"resourceType": "Task", "for": {"reference": "https://other.example/fhir/Patient/p1"}},
            False,
        ),
        ({"resourceType": "Task", "owner": {"reference": "Patient/p1"}}, False),
        ({"resourceType": "Task", "focus": {"reference": "ServiceRequest/p1"}}, False),
        ({"resourceType": "Task"}, False),
        ({"resourceType": "ServiceRequest", "subject": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "ServiceRequest", "requester": {"reference": "Patient/p1"}}, False),
        ({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "Coverage", "subscriber": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "Coverage", "payor": [{"reference": "Patient/p1"}]}, False),
        ({"resourceType": "Claim", "patient": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "ClaimResponse", "patient": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "ClaimResponse", "patient": {"reference": "Patient/p11"}}, False),
        ({"resourceType": "Communication", "recipient": [{"reference": "Patient/p1"}]}, True),
        ({"resourceType": "Communication", "sender": {"reference": "Patient/p1"}}, True),
        (
            {
                "resourceType": "Communication",
                "subject": {"reference": "Patient/p2"},
                "recipient": [{"reference": "Practitioner/p1"}],
            },
            False,
        ),
        ({"resourceType": "Communication", "subject": {"reference": "Group/p1"}}, False),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "DiagnosticReport", "subject": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "DocumentReference", "subject": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "Provenance", "target": [{"reference": "Patient/p1"}]}, True),
        ({"resourceType": "Practitioner", "id": "p1"}, False),
        ({"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/p1"}}]}, False),
        ({"resourceType": "Subscription", "id": "p1"}, False),
        ({"resourceType": "Task", "for": {"reference": "#p1"}}, False),
        ({"resourceType": "Task", "for": {"reference": "urn:uuid:p1"}}, False),
    ],
)
def test_in_compartment(content: dict[str, Any], expected: bool) -> None:
    assert in_compartment(content, "p1", base_url=BASE) is expected


@given(
    st.sampled_from(sorted(PATIENT_COMPARTMENT)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20),
)
def test_a_resource_about_one_patient_is_in_no_other_compartment(
    resource_type: str, owner: str, other: str
) -> None:
    for param in PATIENT_COMPARTMENT[resource_type]:
        path = {"Task": "for", "Provenance": "target"}.get(resource_type, param)
        if resource_type == "Provenance":
            path = "target"
        reference = {"reference": f"Patient/{owner}"}
        value: Any = [reference] if path in ("recipient", "target") else reference
        content = {"resourceType": resource_type, path: value}
        assert in_compartment(content, owner, base_url=BASE), (resource_type, path)
        assert in_compartment(content, other, base_url=BASE) is (other == owner)


@pytest.mark.parametrize(
    ("content", "others"),
    [
        ({"resourceType": "Patient", "id": "p2"}, set()),
        ({"resourceType": "Task", "for": {"reference": "Patient/p1"}}, set()),
        ({"resourceType": "Task", "for": {"reference": "Patient/p2"}}, {"p2"}),
        (
            {
                "resourceType": "Communication",
                "subject": {"reference": "Patient/p1"},
                "recipient": [{"reference": "Patient/p2"}, {"reference": "Practitioner/x"}],
                "sender": {"reference": f"{BASE}/Patient/p3"},
            },
            {"p2", "p3"},
        ),
        (
            {
                "resourceType": "Communication",
                "subject": {"reference": "Patient/p1"},
                "recipient": [{"reference": "https://other.example/fhir/Patient/p2"}],
            },
            set(),  # a patient on another server is no member's record here
        ),
        ({"resourceType": "Task", "owner": {"reference": "Patient/p2"}}, set()),
        ({"resourceType": "Practitioner", "id": "p2"}, set()),
    ],
)
def test_other_patients(content: dict[str, Any], others: set[str]) -> None:
    assert other_patients(content, "p1", base_url=BASE) == others
