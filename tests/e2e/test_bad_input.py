"""Bad input through the API, on both backends: every refusal is a 4xx OperationOutcome that names
the element at fault, and a rejected write stores nothing (contract §2, Errors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import count_rows

FHIR_JSON = "application/fhir+json"


# -- helpers ------------------------------------------------------------------------------------


def patient(family: str = "Rivera", **extra: object) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Ana"]}], **extra}


def task(**extra: object) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


def entry(
    resource: dict[str, Any], method: str = "POST", url: str | None = None, **extra: object
) -> dict[str, Any]:
    return {
        "resource": resource,
        "request": {"method": method, "url": url or resource["resourceType"]},
        **extra,
    }


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def outcome_of(body: Any) -> list[dict[str, Any]]:
    """Check `body` is an OperationOutcome with well-formed issues; return the issues."""
    assert isinstance(body, dict), body
    assert body.get("resourceType") == "OperationOutcome", body
    issues = body.get("issue")
    assert isinstance(issues, list) and issues, body
    for issue in issues:
        assert issue["severity"] in ("fatal", "error"), issue
        assert isinstance(issue["code"], str) and issue["code"], issue
    return issues


def assert_outcome(
    response: httpx.Response,
    status: int,
    *,
    code: str | set[str] | None = None,
    expression: str | set[str] | None = None,
    what: str = "",
) -> list[dict[str, Any]]:
    """`response` has `status`, is a FHIR JSON OperationOutcome, and (when given) has an issue with
    `code` and one whose `expression` is (one of) `expression`. `what` names the case in failures."""
    assert response.status_code == status, (what, response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith(FHIR_JSON), (what, response.headers)
    issues = outcome_of(response.json())
    if code is not None:
        codes = {code} if isinstance(code, str) else code
        assert any(i["code"] in codes for i in issues), (what, issues)
    if expression is not None:
        wanted = {expression} if isinstance(expression, str) else expression
        assert wanted & expressions(issues), (what, issues)
    return issues


def expressions(issues: list[dict[str, Any]]) -> set[str]:
    return {e for i in issues for e in i.get("expression") or []}


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def nested_extension(levels: int) -> dict[str, Any]:
    """An extension holding an extension ... `levels` deep; each level adds two JSON levels."""
    ext: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "leaf"}
    for _ in range(levels - 1):
        ext = {"url": "http://example.org/nest", "extension": [ext]}
    return ext


# -- malformed bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"resourceType": "Patient", "name": [', id="syntax-error"),
        pytest.param(b'{"resourceType": "Patient", "active": true,}', id="trailing-comma"),
        pytest.param(b"{'resourceType': 'Patient'}", id="single-quotes"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n ", id="whitespace-only"),
        pytest.param(
            b'{"resourceType": "Patient", "name": [{"family": "\xff\xfe"}]}', id="not-utf8"
        ),
    ],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, raw: bytes
) -> None:
    before = await count_rows(engine)
    response = await client.post("/Patient", content=raw)
    assert_outcome(response, 400, code={"invalid", "structure"})
    assert await count_rows(engine) == before


@pytest.mark.parametrize(
    "path",
    [pytest.param("/Patient", id="create"), pytest.param("", id="bundle")],
)
async def test_body_that_is_not_a_json_object_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, path: str
) -> None:
    before = await count_rows(engine)
    for body in ([patient()], "Patient", 42, None):
        response = await client.post(path, content=orjson.dumps(body))
        assert_outcome(response, 400, code={"invalid", "structure"}, what=repr(body))
    assert await count_rows(engine) == before


async def test_put_body_that_is_not_a_json_object_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    response = await client.put(f"/Patient/{pid}", content=b'["Patient"]')
    assert_outcome(response, 400, code={"invalid", "structure"})
    assert await count_rows(engine) == before


# -- resourceType -------------------------------------------------------------------------------


async def test_wrong_resource_type_for_the_url_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await client.post("/Task", json=patient())
    assert_outcome(response, 400, code="invalid", expression="resourceType")
    assert await count_rows(engine) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/Patient", {"resourceType": "Foo", "name": [{"family": "X"}]}, id="create"),
        pytest.param("", {"resourceType": "Foo", "type": "transaction"}, id="bundle"),
        pytest.param("/Patient", {"name": [{"family": "X"}]}, id="missing"),
    ],
)
async def test_unknown_or_missing_resource_type_in_body_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, path: str, body: dict[str, Any]
) -> None:
    before = await count_rows(engine)
    response = await client.post(path, json=body)
    assert_outcome(response, 400, expression="resourceType")
    assert await count_rows(engine) == before


# -- structural validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "code", "expression"),
    [
        pytest.param(patient(foo="bar"), "structure", "Patient.foo", id="unknown-element"),
        pytest.param(
            {**patient(), "name": "Ana Rivera"}, "structure", "Patient.name", id="name-as-string"
        ),
        pytest.param(patient(active="yes"), "structure", "Patient.active", id="boolean-as-string"),
        pytest.param(
            patient(birthDate="1990-13-45"), "structure", "Patient.birthDate", id="bad-date"
        ),
        pytest.param(
            patient(name=[{"family": 5}]),
            "structure",
            "Patient.name[0].family",
            id="nested-wrong-type",
        ),
        pytest.param(
            patient(gender="bogus"), "code-invalid", "Patient.gender", id="invalid-gender"
        ),
        pytest.param(task(status="bogus"), "code-invalid", "Task.status", id="invalid-status"),
        pytest.param(
            {"resourceType": "Task", "intent": "order"}, "required", "Task.status", id="no-status"
        ),
        pytest.param(
            {"resourceType": "Task", "status": "requested"},
            "required",
            "Task.intent",
            id="no-intent",
        ),
    ],
)
async def test_invalid_resource_is_400_naming_the_element(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    resource: dict[str, Any],
    code: str,
    expression: str,
) -> None:
    before = await count_rows(engine)
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    issues = assert_outcome(response, 400, expression=expression)
    assert any(i["code"] == code and expression in i["expression"] for i in issues), issues
    assert await count_rows(engine) == before


async def test_every_issue_is_reported_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = {
        "resourceType": "Patient",
        "foo": 1,
        "name": "Ana Rivera",
        "active": "yes",
        "birthDate": "1990-13-45",
    }
    issues = assert_outcome(await client.post("/Patient", json=body), 400)
    assert {"Patient.foo", "Patient.name", "Patient.active", "Patient.birthDate"} <= expressions(
        issues
    )
    assert await count_rows(engine) == before


async def test_task_missing_status_and_intent_reports_both(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    issues = assert_outcome(await client.post("/Task", json={"resourceType": "Task"}), 400)
    required = {e for i in issues if i["code"] == "required" for e in i["expression"]}
    assert {"Task.status", "Task.intent"} <= required
    assert await count_rows(engine) == before


async def test_invalid_update_leaves_the_resource_unchanged(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    response = await client.put(
        f"/Patient/{pid}", json=patient("Reyes", id=pid, birthDate="1990-13-45")
    )
    assert_outcome(response, 400, expression="Patient.birthDate")
    assert await count_rows(engine) == before
    current = (await client.get(f"/Patient/{pid}")).json()
    assert current["meta"]["versionId"] == "1"
    assert current["name"][0]["family"] == "Rivera"


async def test_control_character_in_a_string_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """FHIR strings may not hold code points below U+0020 other than tab, CR and LF."""
    before = await count_rows(engine)
    raw = b'{"resourceType": "Patient", "name": [{"family": "Riv\\u0000era"}]}'
    response = await client.post("/Patient", content=raw)
    assert_outcome(response, 400, expression="Patient.name[0].family")
    assert await count_rows(engine) == before


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        pytest.param(
            patient(contained=[{"resourceType": "Foo", "id": "c1"}]),
            {"Patient.contained[0].resourceType", "Patient.contained[0]"},
            id="unknown-type",
        ),
        pytest.param(
            patient(contained=[{"resourceType": 5, "id": "c1"}]),
            {"Patient.contained[0].resourceType", "Patient.contained[0]"},
            id="type-not-a-string",
        ),
        pytest.param(
            patient(contained=[{"id": "c1"}]),
            {"Patient.contained[0].resourceType", "Patient.contained[0]"},
            id="no-type",
        ),
    ],
)
async def test_contained_resource_without_a_valid_type_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, resource: dict[str, Any], expression: set[str]
) -> None:
    before = await count_rows(engine)
    assert_outcome(await client.post("/Patient", json=resource), 400, expression=expression)
    wrapped = bundle("transaction", entry(resource))
    expression = {e.replace("Patient.", "Bundle.entry[0].resource.", 1) for e in expression}
    assert_outcome(await client.post("", json=wrapped), 400, expression=expression)
    assert await count_rows(engine) == before


# -- ids in the URL and the body ----------------------------------------------------------------


async def test_invalid_id_in_url_is_400(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    for bad_id in ("bad$id", "bad_id", "x" * 65):
        for method, path in (
            ("GET", f"/Patient/{bad_id}"),
            ("GET", f"/Patient/{bad_id}/_history"),
            ("GET", f"/Patient/{bad_id}/_history/1"),
            ("PUT", f"/Patient/{bad_id}"),
        ):
            body = patient(id=bad_id) if method == "PUT" else None
            response = await client.request(method, path, json=body)
            assert_outcome(response, 400, code="invalid", what=f"{method} {path}")
    assert await count_rows(engine) == before


async def test_put_with_body_id_different_from_url_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    response = await client.put(f"/Patient/{pid}", json=patient("Reyes", id="someone-else"))
    assert_outcome(response, 400, code="invalid", expression="Patient.id")
    assert await count_rows(engine) == before
    assert (await client.get("/Patient/someone-else")).status_code == 404


async def test_put_without_id_is_400(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    response = await client.put(f"/Patient/{pid}", json=patient("Reyes"))
    assert_outcome(response, 400, code="invalid", expression="Patient.id")
    assert await count_rows(engine) == before


# -- unknown things -----------------------------------------------------------------------------


@pytest.mark.parametrize("resource_type", ["Foo", "Observation"], ids=["unknown", "not-served"])
async def test_unknown_or_unserved_resource_type_is_404(
    client: httpx.AsyncClient, engine: AsyncEngine, resource_type: str
) -> None:
    before = await count_rows(engine)
    body = {"resourceType": resource_type, "id": "1", "status": "final", "code": {"text": "x"}}
    for method, path in (
        ("GET", f"/{resource_type}"),
        ("GET", f"/{resource_type}?_id=1"),
        ("GET", f"/{resource_type}/1"),
        ("GET", f"/{resource_type}/1/_history"),
        ("GET", f"/{resource_type}/1/_history/1"),
        ("POST", f"/{resource_type}"),
        ("PUT", f"/{resource_type}/1"),
    ):
        response = await client.request(method, path, json=body if method != "GET" else None)
        assert_outcome(response, 404, code={"not-supported", "not-found"}, what=f"{method} {path}")
    assert await count_rows(engine) == before


async def test_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/Patient/does-not-exist"), 404, code="not-found")
    assert_outcome(await client.get("/Patient/does-not-exist/_history"), 404, code="not-found")
    assert_outcome(await client.get("/Patient/does-not-exist/_history/1"), 404, code="not-found")


async def test_unknown_version_is_404(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    for version in ("2", "0", "99", "abc"):
        response = await client.get(f"/Patient/{pid}/_history/{version}")
        assert_outcome(response, 404, code="not-found", what=version)


# -- versions -----------------------------------------------------------------------------------


async def test_if_match_on_stale_version_is_412_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    pid = (await create(client, patient()))["id"]
    updated = await client.put(f"/Patient/{pid}", json=patient("Reyes", id=pid))
    assert updated.status_code == 200
    before = await count_rows(engine)
    response = await client.put(
        f"/Patient/{pid}", json=patient("Stale", id=pid), headers={"If-Match": 'W/"1"'}
    )
    assert_outcome(response, 412, code="conflict")
    assert await count_rows(engine) == before
    current = await client.get(f"/Patient/{pid}")
    assert current.json()["meta"]["versionId"] == "2"
    assert current.json()["name"][0]["family"] == "Reyes"


async def test_if_match_garbage_is_400(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    for if_match in ("garbage", 'W/"abc"', "W/", 'W/"-1"'):
        response = await client.put(
            f"/Patient/{pid}", json=patient("Reyes", id=pid), headers={"If-Match": if_match}
        )
        assert_outcome(response, 400, code="invalid", what=if_match)
    assert await count_rows(engine) == before
    assert (await client.get(f"/Patient/{pid}")).json()["meta"]["versionId"] == "1"


# -- content negotiation ------------------------------------------------------------------------


async def test_unsupported_content_type_is_415(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    raw = orjson.dumps(patient())
    for content_type in (
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "application/x-www-form-urlencoded",
    ):
        for path in ("/Patient", ""):
            response = await client.post(path, content=raw, headers={"content-type": content_type})
            assert_outcome(response, 415, code="not-supported", what=f"{content_type} to '{path}'")
    assert await count_rows(engine) == before


async def test_missing_content_type_is_415(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    request = client.build_request("POST", "/Patient", content=orjson.dumps(patient()))
    del request.headers["content-type"]
    assert_outcome(await client.send(request), 415, code="not-supported")
    assert await count_rows(engine) == before


async def test_non_json_format_is_406(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"_format": "xml"}, {}),
        ({"_format": "application/fhir+xml"}, {}),
        ({"_format": "turtle"}, {}),
        ({}, {"accept": "application/fhir+xml"}),
        ({}, {"accept": "text/html"}),
    ]
    for params, headers in cases:
        what = f"{params} {headers}"
        response = await client.get("/Patient", params=params, headers=headers)
        assert_outcome(response, 406, code="not-supported", what=what)
        response = await client.post("/Patient", json=patient(), params=params, headers=headers)
        assert_outcome(response, 406, code="not-supported", what=what)
    assert await count_rows(engine) == before


async def test_accept_any_or_json_is_fine(client: httpx.AsyncClient) -> None:
    for accept in (
        "*/*",
        "application/json",
        "application/fhir+json;q=0.9, */*;q=0.1",
        "text/html, */*",
    ):
        created = await client.post("/Patient", json=patient(), headers={"accept": accept})
        assert created.status_code == 201, (accept, created.text)
        found = await client.get(f"/Patient/{created.json()['id']}", headers={"accept": accept})
        assert found.status_code == 200, (accept, found.text)
        assert found.headers["content-type"].startswith(FHIR_JSON)


async def test_application_json_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Patient",
        content=orjson.dumps(patient()),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


# -- size and depth limits ----------------------------------------------------------------------


def _big_patient() -> bytes:
    """A valid Patient of a little over 70 KiB (the limit under test is 64 KiB)."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 70 * 1024 + "</div>"
    raw = orjson.dumps(patient(text={"status": "generated", "div": div}))
    assert len(raw) > 70 * 1024
    return raw


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, engine: AsyncEngine, framing: str
) -> None:
    before = await count_rows(engine)
    raw = _big_patient()
    if framing == "content-length":
        response = await client.post("/Patient", content=raw)
    else:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), 8 * 1024):
                yield raw[start : start + 8 * 1024]

        response = await client.post("/Patient", content=chunks())
    assert_outcome(response, 413, code="too-long")
    assert await count_rows(engine) == before


async def test_bundle_over_the_limit_is_413(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(orjson.loads(_big_patient())))
    assert_outcome(await client.post("", json=body), 413, code="too-long")
    assert await count_rows(engine) == before


async def test_declared_content_length_over_the_limit_is_413(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await client.post(
        "/Patient", content=orjson.dumps(patient()), headers={"content-length": str(70 * 1024)}
    )
    assert_outcome(response, 413, code="too-long")
    assert await count_rows(engine) == before


async def test_nesting_deeper_than_the_limit_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = patient(extension=[nested_extension(60)])  # 1 + 2 * 60 = 121 levels
    issues = assert_outcome(await client.post("/Patient", json=body), 400, code="invalid")
    assert any("100" in i["diagnostics"] and "deep" in i["diagnostics"] for i in issues), issues
    assert await count_rows(engine) == before


async def test_nesting_deeper_than_the_limit_in_a_bundle_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(patient(extension=[nested_extension(50)])))
    issues = assert_outcome(await client.post("", json=body), 400, code="invalid")
    assert any("100" in i["diagnostics"] for i in issues), issues
    assert await count_rows(engine) == before


async def test_nesting_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = patient(extension=[nested_extension(49)])  # 1 + 2 * 49 = 99 levels
    response = await client.post("/Patient", json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/Patient", ""])
async def test_pathological_nesting_is_400_not_500(
    client: httpx.AsyncClient, engine: AsyncEngine, path: str
) -> None:
    before = await count_rows(engine)
    raw = b'{"resourceType": "Patient", "extension": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    issues = assert_outcome(await client.post(path, content=raw), 400, code="invalid")
    assert any("100" in i["diagnostics"] for i in issues), issues
    assert await count_rows(engine) == before


# -- references ---------------------------------------------------------------------------------


async def test_reference_to_a_missing_resource_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = task(**{"for": {"reference": "Patient/does-not-exist"}})
    response = await client.post("/Task", json=body)
    assert_outcome(response, 422, code="not-found", expression="Task.for.reference")
    assert await count_rows(engine) == before


async def test_reference_to_a_missing_resource_on_update_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    tid = (await create(client, task()))["id"]
    before = await count_rows(engine)
    body = task(id=tid, owner={"reference": "Practitioner/nobody"})
    response = await client.put(f"/Task/{tid}", json=body)
    assert_outcome(response, 422, expression="Task.owner.reference")
    assert await count_rows(engine) == before


async def test_reference_to_a_missing_contained_resource_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = task(
        contained=[{"resourceType": "Patient", "id": "present"}],
        **{"for": {"reference": "#missing"}},
    )
    response = await client.post("/Task", json=body)
    assert_outcome(response, 400, code="invalid", expression="Task.for.reference")
    assert await count_rows(engine) == before


async def test_unresolved_urn_reference_in_single_create_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = task(**{"for": {"reference": "urn:uuid:6b1fe2a8-6f8d-4c4a-9d8a-1a2b3c4d5e6f"}})
    response = await client.post("/Task", json=body)
    assert_outcome(response, 400, code="invalid", expression="Task.for.reference")
    assert await count_rows(engine) == before


# -- transaction Bundles ------------------------------------------------------------------------

PATIENT_URN = "urn:uuid:0f7a5c1e-2b0d-4c55-9a41-3c1b2d4e5f60"
OTHER_URN = "urn:uuid:9d2e4f6a-8b1c-4d3e-a5f7-0b1c2d3e4f50"


async def test_transaction_with_unmatched_urn_reference_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient(), fullUrl=PATIENT_URN),
        entry(task(**{"for": {"reference": OTHER_URN}})),
    )
    response = await client.post("", json=body)
    # A reference the Bundle cannot resolve (issue #10): 422 naming the entry and element.
    assert_outcome(
        response, 422, code="processing", expression="Bundle.entry[1].resource.for.reference"
    )
    assert await count_rows(engine) == before


async def test_transaction_with_missing_reference_is_rejected_whole(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient(), fullUrl=PATIENT_URN),
        entry(
            task(
                **{"for": {"reference": PATIENT_URN}, "owner": {"reference": "Practitioner/nobody"}}
            )
        ),
    )
    response = await client.post("", json=body)
    assert_outcome(
        response, 422, code="not-found", expression="Bundle.entry[1].resource.owner.reference"
    )
    assert await count_rows(engine) == before


async def test_transaction_with_duplicate_full_urls_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient("One"), fullUrl=PATIENT_URN),
        entry(patient("Two"), fullUrl=OTHER_URN),
        entry(patient("Three"), fullUrl=PATIENT_URN),
    )
    response = await client.post("", json=body)
    # Two entries with one fullUrl make references to it ambiguous (issue #10): 422.
    issues = assert_outcome(response, 422, code="processing", expression="Bundle.entry[2].fullUrl")
    assert "Bundle.entry[1].fullUrl" not in expressions(issues)
    assert await count_rows(engine) == before


@pytest.mark.parametrize(
    ("bad", "expression"),
    [
        pytest.param(task(status="bogus"), "Bundle.entry[2].resource.status", id="invalid-code"),
        pytest.param(
            {"resourceType": "Task", "intent": "order"},
            "Bundle.entry[2].resource.status",
            id="missing-status",
        ),
        pytest.param(
            patient(birthDate="1990-13-45"), "Bundle.entry[2].resource.birthDate", id="bad-date"
        ),
        pytest.param(patient(foo="bar"), "Bundle.entry[2].resource.foo", id="unknown-element"),
        pytest.param(
            patient(active="yes"), "Bundle.entry[2].resource.active", id="boolean-as-string"
        ),
    ],
)
async def test_transaction_with_one_invalid_entry_stores_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, bad: dict[str, Any], expression: str
) -> None:
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient("One"), fullUrl=PATIENT_URN),
        entry(task(**{"for": {"reference": PATIENT_URN}})),
        entry(bad),
        entry(patient("Four")),
    )
    response = await client.post("", json=body)
    assert_outcome(response, 400, expression=expression)
    assert (await client.get("/Patient")).json()["total"] == 0
    assert await count_rows(engine) == before


async def test_transaction_entry_url_type_differs_from_resource_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(patient()), entry(patient("Two"), url="Task"))
    response = await client.post("", json=body)
    assert_outcome(
        response,
        400,
        code="invalid",
        expression={"Bundle.entry[1].resource.resourceType", "Bundle.entry[1].request.url"},
    )
    assert await count_rows(engine) == before


async def test_transaction_put_entry_id_differs_from_url_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient()),
        entry(patient("Two", id="other-id"), method="PUT", url="Patient/my-id"),
    )
    response = await client.post("", json=body)
    assert_outcome(response, 400, code="invalid", expression="Bundle.entry[1].resource.id")
    assert await count_rows(engine) == before


async def test_transaction_put_entry_without_id_in_url_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(patient("Two", id="x1"), method="PUT", url="Patient"))
    response = await client.post("", json=body)
    assert_outcome(response, 400, code="invalid", expression="Bundle.entry[0].request.url")
    assert await count_rows(engine) == before


async def test_transaction_with_delete_entry_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    pid = (await create(client, patient()))["id"]
    before = await count_rows(engine)
    body = bundle(
        "transaction",
        entry(patient("Two")),
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
    )
    response = await client.post("", json=body)
    assert 400 <= response.status_code < 500
    assert_outcome(response, response.status_code, expression="Bundle.entry[1].request.method")
    assert await count_rows(engine) == before
    assert (await client.get(f"/Patient/{pid}")).status_code == 200


async def test_transaction_entry_with_unknown_method_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(patient(), method="FETCH"))
    response = await client.post("", json=body)
    assert_outcome(response, 400, expression="Bundle.entry[0].request.method")
    assert await count_rows(engine) == before


async def test_transaction_entry_without_request_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", {"resource": patient()})
    assert_outcome(await client.post("", json=body), 400, expression="Bundle.entry[0].request")
    assert await count_rows(engine) == before


async def test_bundle_of_wrong_type_at_the_base_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    for kind in ("collection", "searchset", "document"):
        body = bundle(kind, {"fullUrl": PATIENT_URN, "resource": patient()})
        response = await client.post("", json=body)
        assert_outcome(response, 400, code="invalid", expression="Bundle.type", what=kind)
    assert await count_rows(engine) == before


async def test_bundle_without_type_is_400(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    body = {"resourceType": "Bundle", "entry": [entry(patient())]}
    assert_outcome(await client.post("", json=body), 400, expression="Bundle.type")
    assert await count_rows(engine) == before


async def test_non_bundle_at_the_base_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    assert_outcome(
        await client.post("", json=patient()), 400, code="invalid", expression="resourceType"
    )
    assert await count_rows(engine) == before


async def test_transaction_entry_of_unknown_resource_type_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = bundle("transaction", entry(patient()), entry({"resourceType": "Foo", "id": "x"}))
    response = await client.post("", json=body)
    assert_outcome(
        response,
        400,
        expression={"Bundle.entry[1].resource.resourceType", "Bundle.entry[1].request.url"},
    )
    assert await count_rows(engine) == before


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_bundle_entry_request_that_is_not_an_object_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, kind: str
) -> None:
    before = await count_rows(engine)
    body = bundle(kind, entry(patient()), {"resource": patient("Two"), "request": "POST Patient"})
    response = await client.post("", json=body)
    assert_outcome(response, 400, expression="Bundle.entry[1].request")
    assert await count_rows(engine) == before


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_too_many_bundle_entries_is_413(
    client: httpx.AsyncClient, engine: AsyncEngine, kind: str
) -> None:
    before = await count_rows(engine)
    body = bundle(kind, *(entry({"resourceType": "Patient"}) for _ in range(101)))
    assert len(orjson.dumps(body)) < 64 * 1024
    assert_outcome(await client.post("", json=body), 413, code="too-long")
    assert await count_rows(engine) == before


# -- batch Bundles ------------------------------------------------------------------------------


async def test_batch_bad_entry_fails_alone(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    before = await count_rows(engine)
    body = bundle(
        "batch",
        entry(patient("One")),
        entry(task(status="bogus")),
        entry(patient("Three")),
        entry(task(**{"for": {"reference": "Patient/does-not-exist"}})),
        entry(patient("Five", birthDate="1990-13-45")),
        {"request": {"method": "DELETE", "url": "Patient/x"}},
    )
    response = await client.post("", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["resourceType"] == "Bundle"
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert len(statuses) == 6
    assert statuses[0].startswith("201") and statuses[2].startswith("201"), statuses

    failures = {
        1: (400, "Bundle.entry[1].resource.status"),
        3: (422, "Bundle.entry[3].resource.for.reference"),
        4: (400, "Bundle.entry[4].resource.birthDate"),
    }
    for index, (status, expression) in failures.items():
        response_entry = result["entry"][index]["response"]
        assert response_entry["status"].split()[0] == str(status), response_entry
        assert expression in expressions(outcome_of(response_entry["outcome"]))
    delete = result["entry"][5]["response"]
    assert 400 <= int(delete["status"].split()[0]) < 500, delete
    assert expressions(outcome_of(delete["outcome"])) & {
        "Bundle.entry[5].request.method",
        "Bundle.entry[5]",
    }

    patients = (await client.get("/Patient")).json()
    assert sorted(e["resource"]["name"][0]["family"] for e in patients["entry"]) == ["One", "Three"]
    assert (await client.get("/Task")).json()["total"] == 0
    after = await count_rows(engine)
    assert after["resources"] == before["resources"] + 2


async def test_batch_entry_with_contained_resource_of_unknown_type_fails_alone(
    client: httpx.AsyncClient,
) -> None:
    body = bundle(
        "batch",
        entry(patient("One")),
        entry(patient("Two", contained=[{"resourceType": "Foo", "id": "c1"}])),
    )
    response = await client.post("", json=body)
    assert response.status_code == 200, response.text
    first, second = (e["response"] for e in response.json()["entry"])
    assert first["status"].startswith("201"), first
    assert second["status"].split()[0] == "400", second
    assert expressions(outcome_of(second["outcome"])) & {
        "Bundle.entry[1].resource.contained[0].resourceType",
        "Bundle.entry[1].resource.contained[0]",
    }
    assert (await client.get("/Patient")).json()["total"] == 1


# -- search -------------------------------------------------------------------------------------


async def test_bad_search_is_400(client: httpx.AsyncClient) -> None:
    for query in (
        "/Task?authored-on=notadate",
        "/Task?authored-on=ge2024-13-01",
        "/Patient?_lastUpdated=yesterday",
        "/Patient?_count=abc",
        "/Patient?_count=-1",
        "/Patient?gender:contains=x",
        "/Task?authored-on:exact=2024-01-01",
        "/Task?patient=not a reference!",
        "/Task?_include=Task:nothing",
    ):
        assert_outcome(await client.get(query), 400, code="invalid", what=query)


async def test_out_of_range_search_numbers_are_400(client: httpx.AsyncClient) -> None:
    await create(client, patient())
    for query in (
        "/Patient?_cursor=99999999999999999999999",
        "/Patient?_cursor=9223372036854775808",
        "/Patient?_count=" + "9" * 5000,
        "/Patient?_count=%D9%A3",  # ARABIC-INDIC DIGIT THREE is not a FHIR integer
    ):
        assert_outcome(await client.get(query), 400, code="invalid", what=query[:60])


async def test_control_character_in_a_search_value_is_400(client: httpx.AsyncClient) -> None:
    await create(client, patient())
    for query in (
        "/Patient?name=Riv%00era",
        "/Patient?identifier=urn:x%7Ca%00b",
        "/Task?status=a%00",
    ):
        assert_outcome(await client.get(query), 400, code="invalid", what=query)


async def test_bad_search_by_post_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Task/_search",
        content=b"authored-on=notadate",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_outcome(response, 400, code="invalid")


async def test_unknown_search_parameter_is_ignored_unless_strict(client: httpx.AsyncClient) -> None:
    await create(client, patient())
    lenient = await client.get("/Patient?foo=bar")
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 1
    assert "foo" not in lenient.json()["link"][0]["url"]
    strict = await client.get("/Patient?foo=bar", headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400, code="invalid")
    explicit_lenient = await client.get("/Patient?foo=bar", headers={"Prefer": "handling=lenient"})
    assert explicit_lenient.status_code == 200


# -- methods ------------------------------------------------------------------------------------


async def test_unsupported_method_is_405(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    assert (await client.put("/Patient/1", json=patient(id="1"))).status_code == 201
    before = await count_rows(engine)
    for method, path in (
        ("DELETE", "/Patient/1"),
        ("DELETE", "/Patient"),
        ("PATCH", "/Patient/1"),
        ("PUT", "/Patient"),
        ("POST", "/Patient/1"),
        ("DELETE", ""),
    ):
        response = await client.request(method, path, json=patient("Changed", id="1"))
        assert_outcome(response, 405, code="not-supported", what=f"{method} {path}")
    assert await count_rows(engine) == before
    assert (await client.get("/Patient/1")).json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/Patient/1", "GET, PUT"),
        ("PATCH", "/Patient/1", "GET, PUT"),
        ("DELETE", "/Patient", "GET, POST"),
        ("PUT", "/Patient", "GET, POST"),
        ("DELETE", "/AuditEvent/1", "GET"),
        ("DELETE", "/AuditEvent", "GET"),
        ("PUT", "/AuditEvent/1", "GET"),
        ("POST", "/AuditEvent", "GET"),
        ("DELETE", "/metadata", "GET"),
    ],
    ids=[
        "instance-delete",
        "instance-patch",
        "type-delete",
        "type-put",
        "audit-instance-delete",
        "audit-type-delete",
        "audit-instance-put",
        "audit-type-post",
        "metadata-delete",
    ],
)
async def test_405_allow_lists_every_method_the_url_supports(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, json={"resourceType": "Patient", "id": "1"})
    assert_outcome(response, 405, code="not-supported", what=f"{method} {path}")
    assert response.headers["allow"] == allow


async def test_an_unsupported_method_on_an_unserved_type_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/Basic/1")
    assert_outcome(response, 404, code="not-found", what="DELETE /Basic/1")
