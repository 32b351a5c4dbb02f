"""Issue #5, "Must show": every endpoint against every kind of caller, and the patient compartment.

The matrix: each route of the app (enumerated from `create_app(...).routes`, so a route added
later without a row fails `test_every_route_has_a_matrix_row`) is called as a concrete request
with no token, with forged or mis-addressed tokens, with a scope that does not cover it, with
the minimal scope that does, and with another member's patient-scoped token. Auth failures are
401 with a `WWW-Authenticate: Bearer` challenge, scope failures 403, every 4xx an
OperationOutcome, and no answer carries a member's data to a caller not entitled to it.

The compartment tests: two members; a `patient/*.rs` token for member A reads, searches,
includes and writes only within A's compartment, and never sees member B's name, identifier or
ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from tests.conftest import BASE_URL, count_rows
from tests.e2e.test_operations import decide_params
from tests.factories import example_request, pas_inquiry
from tests.tokens import ADMIN_SCOPE, bearer

EXAMPLES = Path(__file__).parents[2] / "examples"
FORM = "application/x-www-form-urlencoded"

# ---------------------------------------------------------------------------------------------
# The data: two members (A and B) with complete second-opinion requests, a pended request for
# the reviewer, and a Subscription.


@dataclass
class Member:
    suffix: str
    family: str
    given: str
    member_id: str
    birth_date: str
    ids: dict[str, list[str]] = field(default_factory=dict)  # resource type -> ids

    @property
    def patient_id(self) -> str:
        return self.ids["Patient"][0]

    @property
    def patient(self) -> str:
        return f"Patient/{self.patient_id}"

    def one(self, resource_type: str) -> str:
        return self.ids[resource_type][0]

    def secrets(self) -> set[str]:
        """What identifies this member: names, member id, birth date, every id of their data."""
        found = {self.family, self.given, self.member_id, self.birth_date}
        for resource_type, ids in self.ids.items():
            if resource_type not in SHARED_TYPES:
                found.update(ids)
        return found


SHARED_TYPES = ("Practitioner", "PractitionerRole", "Organization")
COMPARTMENT_SEARCHES = (
    ("Coverage", "beneficiary"),
    ("Condition", "subject"),
    ("ServiceRequest", "subject"),
    ("Task", "patient"),
    ("Claim", "patient"),
    ("ClaimResponse", "patient"),
    ("Communication", "subject"),
)


async def submit_member(admin: httpx.AsyncClient, label: str, birth_date: str) -> Member:
    suffix = f"-{label}{uuid.uuid4().hex[:8]}"
    member = Member(
        suffix=suffix,
        family=f"Fam{label}{uuid.uuid4().hex[:8]}",
        given=f"Giv{label}{uuid.uuid4().hex[:8]}",
        member_id="",
        birth_date=birth_date,
    )
    bundle = example_request("in-network-specialist-care", suffix)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"family": member.family, "given": [member.given]}]
            resource["birthDate"] = birth_date
            member.member_id = resource["identifier"][0]["value"]
    response = await admin.post("", json=bundle)
    assert response.status_code == 200, response.text
    for entry in response.json()["entry"]:
        key = entry["response"]["location"].split("/_history")[0]
        resource_type, id = key.split("/")
        member.ids.setdefault(resource_type, []).append(id)
    # What the workflow wrote for the member: the Claim, ClaimResponse and notices.
    for resource_type, param in COMPARTMENT_SEARCHES:
        found = await admin.get(f"/{resource_type}", params={param: member.patient})
        assert found.status_code == 200, found.text
        ids = [e["resource"]["id"] for e in found.json().get("entry", [])]
        member.ids[resource_type] = sorted(set(member.ids.get(resource_type, [])) | set(ids))
    for resource_type in ("Task", "ServiceRequest", "Claim", "ClaimResponse", "Communication"):
        assert member.ids.get(resource_type), f"no {resource_type} for member {label}"
    return member


@dataclass
class World:
    container: Container
    app: Any
    admin: httpx.AsyncClient
    engine: AsyncEngine
    a: Member
    b: Member
    pended_task: str
    subscription: str
    plan_owned: dict[str, dict[str, Any]] = field(default_factory=dict)

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url=BASE_URL,
            headers={
                "content-type": "application/fhir+json",
                "accept": "application/fhir+json",
                **(headers or {}),
            },
        )


@pytest.fixture
async def world(
    container: Container, client: httpx.AsyncClient, engine: AsyncEngine
) -> AsyncIterator[World]:
    a = await submit_member(client, "A", "1971-03-14")
    b = await submit_member(client, "B", "1988-09-30")
    review = example_request("review", f"-rev{uuid.uuid4().hex[:8]}")
    answer = await client.post("", json=review)
    assert answer.status_code == 200, answer.text
    task_key = next(
        e["response"]["location"].split("/_history")[0]
        for e in answer.json()["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    assert (await client.get(f"/{task_key}")).json()["status"] == "on-hold"
    subscription = await client.post(
        "/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "access matrix",
            "criteria": "https://fhir-adapter.org/fhir/SubscriptionTopic/second-opinion-decision",
            "channel": {
                "type": "rest-hook",
                "endpoint": "http://127.0.0.1:9/hook",  # nothing listens: the handshake fails
                "payload": "application/fhir+json",
            },
        },
    )
    assert subscription.status_code == 201, subscription.text
    yield World(
        container,
        create_app(container=container),
        client,
        engine,
        a,
        b,
        task_key.split("/")[1],
        subscription.json()["id"],
    )


# ---------------------------------------------------------------------------------------------
# Tokens: the good ones come from the built-in issuer; the bad ones are made here.


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(container: Container, **override: Any) -> dict[str, Any]:
    assert container.issuer is not None
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": container.issuer.urls.issuer,
        "sub": "matrix-client",
        "client_id": "matrix-client",
        "aud": container.issuer.urls.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": ADMIN_SCOPE,
    }
    claims.update(override)
    return claims


def _signed(container: Container, claims: dict[str, Any], key: Any = None) -> str:
    """Claims signed as the issuer signs (ES384, its kid), by default with its real key."""
    assert container.issuer is not None
    return jwt.encode(
        claims,
        key if key is not None else container.issuer._private,
        algorithm="ES384",
        headers={"kid": container.issuer.kid},
    )


def _hand_made(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


def _public_pem(container: Container) -> bytes:
    assert container.issuer is not None
    return container.issuer._private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bad_token(container: Container, case: str) -> dict[str, str]:
    """Headers for the token failure `case`; every token claims the full admin scope."""
    assert container.issuer is not None
    kid = container.issuer.kid
    now = int(time.time())
    if case == "no token":
        return {}
    if case == "not bearer":
        return {"authorization": f"Basic {_b64(b'admin:admin')}"}
    if case == "expired":
        token = _signed(container, _claims(container, iat=now - 900, nbf=now - 900, exp=now - 120))
    elif case == "not yet valid":
        token = _signed(container, _claims(container, nbf=now + 600, exp=now + 900))
    elif case == "wrong audience":
        token = _signed(container, _claims(container, aud="https://other-server.example/fhir"))
    elif case == "wrong issuer":
        token = _signed(container, _claims(container, iss="https://evil.example/auth"))
    elif case == "alg none":
        token = _hand_made({"alg": "none", "typ": "JWT", "kid": kid}, _claims(container), None)
    elif case == "HS256 with public PEM":
        token = _hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(container), _public_pem(container)
        )
    elif case == "HS256 with public JWK":
        jwk = json.dumps(container.issuer.jwks()["keys"][0]).encode()
        token = _hand_made({"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(container), jwk)
    elif case == "forged signature":
        token = _signed(container, _claims(container), ec.generate_private_key(ec.SECP384R1()))
    elif case == "garbage":
        token = "not-a-jwt"
    else:
        raise AssertionError(case)
    return {"authorization": f"Bearer {token}"}


AUTH_FAILURES = (
    "no token",
    "not bearer",
    "expired",
    "not yet valid",
    "wrong audience",
    "wrong issuer",
    "alg none",
    "HS256 with public PEM",
    "HS256 with public JWK",
    "forged signature",
    "garbage",
)
# The right scope goes last: a successful write must not change what the other cases see.
CASES = (*AUTH_FAILURES, "wrong scope", "other patient", "right scope")


def test_the_forged_tokens_are_what_they_claim_to_be() -> None:
    """The hand-made tokens really are `alg: none` / HS256 over the issuer's public key (a
    library refusing to build them would leave the matrix testing garbage instead)."""
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"sub": "x", "exp": int(time.time()) + 60}
    none = _hand_made({"alg": "none"}, claims, None)
    assert jwt.decode(none, options={"verify_signature": False}) == claims
    assert jwt.get_unverified_header(none)["alg"] == "none"
    hs = _hand_made({"alg": "HS256"}, claims, pem)
    # The HMAC is valid with the PEM as the secret: a verifier trusting `alg` would accept it.
    header, payload, signature = hs.split(".")
    expected = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _b64(expected) == signature


# ---------------------------------------------------------------------------------------------
# The matrix rows: one concrete request per route (several for POST /fhir).


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    form: dict[str, str] | None = None

    def text(self) -> str:
        return self.url + json.dumps(self.json) + json.dumps(self.form)


@dataclass(frozen=True)
class Row:
    name: str
    route: tuple[str, str]  # (method, path) as the app declares it
    call: Callable[[World], Call]
    right: str = ""  # the least scope that makes it succeed
    wrong: str = ""  # a near miss: a valid scope that does not cover it
    ok: int = 200
    other_patient: int = 403  # member B's patient/*.cruds token on member A's data
    public: bool = False
    writes: bool = False
    batch: dict[str, tuple[str, ...]] | None = None  # case -> expected entry statuses


def _communication(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": subject},
        "payload": [{"contentString": f"matrix note {uuid.uuid4().hex[:6]}"}],
    }


def _decide_body() -> dict[str, Any]:
    return decide_params("denied", reason={"valueString": "Not medically necessary (matrix test)"})


def _transaction(w: World) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _communication(w.a.patient),
                "request": {"method": "POST", "url": "Communication"},
            },
            {"request": {"method": "GET", "url": f"Task/{w.a.one('Task')}"}},
        ],
    }


def _appeal_body() -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "outcome", "valueCode": "overturned"},
            {"name": "decidedAt", "valueDateTime": "2026-11-20T17:00:00Z"},
        ],
    }


def _batch(w: World) -> dict[str, Any]:
    return {**_transaction(w), "type": "batch"}


def _patient_update(w: World) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": w.a.patient_id,
        "identifier": [
            {"system": "https://demo-plan.example.org/member-id", "value": w.a.member_id}
        ],
        "name": [{"family": w.a.family, "given": [w.a.given]}],
        "birthDate": w.a.birth_date,
        "gender": "female",
    }


PAS_CREATES = " ".join(
    f"system/{t}.c"
    for t in (
        "Claim",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "Coverage",
        "Condition",
        "ServiceRequest",
    )
)

ROWS: tuple[Row, ...] = (
    Row(
        "metadata",
        ("GET", "/fhir/metadata"),
        lambda w: Call("GET", "/metadata"),
        public=True,
    ),
    Row(
        "smart-configuration",
        ("GET", "/fhir/.well-known/smart-configuration"),
        lambda w: Call("GET", "/.well-known/smart-configuration"),
        public=True,
    ),
    Row(
        "read",
        ("GET", "/fhir/{resource_type}/{id}"),
        lambda w: Call("GET", f"/Task/{w.a.one('Task')}"),
        right="system/Task.r",
        wrong="system/Task.s",
        other_patient=404,
    ),
    Row(
        "read Patient",
        ("GET", "/fhir/{resource_type}/{id}"),
        lambda w: Call("GET", f"/{w.a.patient}"),
        right="system/Patient.r",
        wrong="system/Task.r",
        other_patient=404,
    ),
    Row(
        "vread",
        ("GET", "/fhir/{resource_type}/{id}/_history/{version}"),
        lambda w: Call("GET", f"/ServiceRequest/{w.a.one('ServiceRequest')}/_history/1"),
        right="system/ServiceRequest.r",
        wrong="system/ServiceRequest.cus",
        other_patient=404,
    ),
    Row(
        "history",
        ("GET", "/fhir/{resource_type}/{id}/_history"),
        lambda w: Call("GET", f"/Task/{w.a.one('Task')}/_history"),
        right="system/Task.r",
        wrong="system/Task.cus",
        other_patient=404,
    ),
    Row(
        "search",
        ("GET", "/fhir/{resource_type}"),
        lambda w: Call(
            "GET", f"/ClaimResponse?patient={w.a.patient}&_include=ClaimResponse:request"
        ),
        right="system/ClaimResponse.s system/Claim.r",  # the include needs Claim read
        wrong="system/ClaimResponse.r system/Claim.rs",
        other_patient=200,
    ),
    Row(
        "search POST _search",
        ("POST", "/fhir/{resource_type}/_search"),
        lambda w: Call("POST", "/Task/_search", form={"patient": w.a.patient}),
        right="system/Task.s",
        wrong="system/Task.r",
        other_patient=200,
    ),
    Row(
        "create",
        ("POST", "/fhir/{resource_type}"),
        lambda w: Call("POST", "/Communication", json=_communication(w.a.patient)),
        right="system/Communication.c",
        wrong="system/Communication.ruds",
        ok=201,
        other_patient=403,
        writes=True,
    ),
    Row(
        "update",
        ("PUT", "/fhir/{resource_type}/{id}"),
        lambda w: Call("PUT", f"/{w.a.patient}", json=_patient_update(w)),
        right="system/Patient.u",
        wrong="system/Patient.crds",
        other_patient=404,  # another member's resource is unknown to the token, not forbidden
        writes=True,
    ),
    Row(
        "transaction",
        ("POST", "/fhir"),
        lambda w: Call("POST", "", json=_transaction(w)),
        right="system/Communication.c system/Task.r",
        wrong="system/Communication.r system/Task.r",
        other_patient=403,
        writes=True,
    ),
    Row(
        "transaction at /fhir/",
        ("POST", "/fhir/"),
        lambda w: Call("POST", "/", json=_transaction(w)),
        right="system/Communication.c system/Task.r",
        wrong="system/Communication.c",
        other_patient=403,
        writes=True,
    ),
    Row(
        "batch",
        ("POST", "/fhir"),
        lambda w: Call("POST", "", json=_batch(w)),
        right="system/Communication.c system/Task.r",
        wrong="system/Patient.cruds",
        other_patient=200,
        writes=True,
        batch={
            "right scope": ("201", "200"),
            "wrong scope": ("403", "403"),
            "other patient": ("403", "404"),
        },
    ),
    Row(
        "Claim/$submit",
        ("POST", "/fhir/Claim/$submit"),
        lambda w: Call("POST", "/Claim/$submit", json=_pas_request()),
        right=f"{PAS_CREATES} system/ClaimResponse.r",
        wrong=f"{PAS_CREATES}",  # cannot read the ClaimResponse it would answer with
        writes=True,
    ),
    Row(
        "Claim/$inquire",
        ("POST", "/fhir/Claim/$inquire"),
        lambda w: Call("POST", "/Claim/$inquire", json=pas_inquiry(_pas_request())),
        right="system/ClaimResponse.r",
        wrong="system/ClaimResponse.s",
        other_patient=200,  # a member may inquire: about their own requests only (none here)
    ),
    Row(
        "Task/$decide",
        ("POST", "/fhir/Task/{id}/$decide"),
        lambda w: Call("POST", f"/Task/{w.pended_task}/$decide", json=_decide_body()),
        right="system/Task.u",
        wrong="system/Task.crs",
        writes=True,
    ),
    Row(
        "Task/$record-appeal",
        ("POST", "/fhir/Task/{id}/$record-appeal"),
        lambda w: Call("POST", f"/Task/{w.a.one('Task')}/$record-appeal", json=_appeal_body()),
        right="system/Task.cu",
        wrong="system/Task.c",
        ok=409,  # member A's request was approved: past the scopes, only a denial can be appealed
        writes=True,
    ),
    Row(
        "MeasureReport/$pa-metrics",
        ("GET", "/fhir/MeasureReport/$pa-metrics"),
        lambda w: Call(
            "GET", "/MeasureReport/$pa-metrics?periodStart=2026-01-01&periodEnd=2026-12-31"
        ),
        right="system/MeasureReport.r",
        wrong="system/MeasureReport.s",  # a plan-level report: read, and only by systems
    ),
    Row(
        "Subscription/$status",
        ("GET", "/fhir/Subscription/{id}/$status"),
        lambda w: Call("GET", f"/Subscription/{w.subscription}/$status"),
        right="system/Subscription.r",
        wrong="system/Subscription.s",
    ),
    Row(
        "Subscription/$status POST",
        ("POST", "/fhir/Subscription/{id}/$status"),
        lambda w: Call("POST", f"/Subscription/{w.subscription}/$status"),
        right="system/Subscription.r",
        wrong="system/*.s",
    ),
    Row(
        "Subscription/$events",
        ("GET", "/fhir/Subscription/{id}/$events"),
        lambda w: Call("GET", f"/Subscription/{w.subscription}/$events?eventsSinceNumber=1"),
        right="system/Subscription.r",
        wrong="system/Task.r",
    ),
)


def _pas_request() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(
        (EXAMPLES / "pas" / "claim-submit-request.json").read_text()
    )
    return bundle


# Routes outside the FHIR base, with why they are not in the matrix. A new one fails the
# coverage test until someone decides where it belongs.
OUTSIDE_FHIR = {
    ("GET", "/openapi.json"): "OpenAPI description (no data)",
    ("GET", "/docs"): "Swagger UI (no data)",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI (no data)",
    ("POST", "/auth/token"): "the token endpoint itself (client assertion, tested elsewhere)",
    ("GET", "/auth/jwks"): "the issuer's public keys",
    # Operators' probes (docs/observability.md): no data; their own tests are
    # tests/e2e/test_observability.py (/metrics is loopback-only by default, a 403 otherwise).
    ("GET", "/healthz"): "liveness probe: the process answers (no data)",
    ("GET", "/readyz"): "readiness probe: database and migrations (no data)",
    ("GET", "/metrics"): "Prometheus metrics: counts by route template, never ids or PHI",
    ("GET", "/directory/fhir/{resource_type}"): "the built-in demo provider directory",
    ("GET", "/directory/fhir/{resource_type}/{id}"): "the built-in demo provider directory",
    ("POST", "/ehr/{organization}/fhir"): "the demo EHR inboxes (see the report on issue #5)",
    ("GET", "/ehr/{organization}/fhir/{resource_type}"): "the demo EHR inboxes",
    # The review workspace: staff pages behind a cookie session, not bearer tokens, so the
    # matrix's token kinds do not apply. Their own matrix (no session, reviewer, auditor, CSRF,
    # lock-out) is tests/e2e/test_review.py and the browser tests.
    ("GET", "/review/sign-in"): "review workspace: the sign-in form (no data)",
    ("POST", "/review/sign-in"): "review workspace: sign-in (test_review.py)",
    ("POST", "/review/sign-out"): "review workspace: sign-out (test_review.py)",
    ("GET", "/review"): "review workspace: the queue, staff session (test_review.py)",
    ("GET", "/review/requests/{task_id}"): "review workspace: a request (test_review.py)",
    (
        "POST",
        "/review/requests/{task_id}/decide",
    ): "review workspace: reviewers only (test_review.py)",
    (
        "GET",
        "/review/notices/{communication_id}.pdf",
    ): "review workspace: a notice (test_review.py)",
    ("GET", "/review/numbers"): "review workspace: the plan's numbers (test_review.py)",
}


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    for route in iter_route_contexts(app.routes):
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD" and route.path is not None:
                yield method, route.path


async def test_every_route_has_a_matrix_row(container: Container) -> None:
    demo = container.settings.model_copy(update={"demo": True})  # every route: the demo's too
    routes = set(app_routes(create_app(demo, container=container)))
    assert ("GET", "/fhir/{resource_type}") in routes  # the enumeration sees included routers
    covered = {row.route for row in ROWS}
    missing = sorted(r for r in routes if r not in covered and r not in OUTSIDE_FHIR)
    assert not missing, f"routes without an access-matrix row: {missing}"
    assert not [r for r in routes if r[1].startswith("/fhir") and r in OUTSIDE_FHIR]
    stale = sorted((covered | set(OUTSIDE_FHIR)) - routes)
    assert not stale, f"matrix rows for routes the app no longer has: {stale}"


# ---------------------------------------------------------------------------------------------
# Checking answers.


def _decoded(data: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return ""


def _attachment_text(node: Any) -> Iterator[str]:
    """Attachment data (base64) decoded, so a name inside a rendered notice counts as shown."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                yield _decoded(value)
            else:
                yield from _attachment_text(value)
    elif isinstance(node, list):
        for item in node:
            yield from _attachment_text(item)


def shown(response: httpx.Response) -> str:
    text = response.text
    try:
        body = response.json()
    except ValueError:
        return text
    return "\n".join([text, *_attachment_text(body)])


def leaked(member: Member, response: httpx.Response, request_text: str = "") -> list[str]:
    """`member`'s identifying data in the answer, apart from what the request itself said."""
    text = shown(response)
    return sorted(s for s in member.secrets() if s in text and s not in request_text)


def assert_outcome(response: httpx.Response, code: str | None = None) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/fhir+json"), response.headers
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    if code is not None:
        assert code in [i["code"] for i in body["issue"]], body
    return body


def case_headers(w: World, row: Row, case: str) -> dict[str, str]:
    if case in AUTH_FAILURES:
        return bad_token(w.container, case)
    if case == "wrong scope":
        return bearer(w.container, row.wrong)
    if case == "other patient":
        return bearer(w.container, "patient/*.cruds", patient=w.b.patient_id)
    return bearer(w.container, row.right)


def expected_status(row: Row, case: str) -> int:
    if row.public:
        return 200
    if case in AUTH_FAILURES:
        return 401
    if case == "wrong scope":
        return 200 if row.batch else 403
    if case == "other patient":
        return row.other_patient
    return row.ok


async def send(w: World, call: Call, headers: dict[str, str]) -> httpx.Response:
    async with w.client(headers) as http:
        if call.form is not None:
            return await http.request(
                call.method, call.url, data=call.form, headers={"content-type": FORM}
            )
        if call.json is not None:
            return await http.request(call.method, call.url, json=call.json)
        return await http.request(call.method, call.url)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
async def test_access_matrix(world: World, row: Row) -> None:
    w = world
    problems: list[str] = []
    for case in CASES:
        call = row.call(w)
        before = await count_rows(w.engine) if row.writes else None
        response = await send(w, call, case_headers(w, row, case))
        label = f"{row.name} / {case}"
        want = expected_status(row, case)
        if response.status_code != want:
            problems.append(f"{label}: {response.status_code}, expected {want}: {response.text}")
            continue
        if 400 <= want < 500:
            try:
                assert_outcome(response, {401: "login", 403: "forbidden"}.get(want))
            except (AssertionError, KeyError, ValueError) as exc:
                problems.append(f"{label}: not an OperationOutcome: {exc!r}")
        if want == 401:
            challenge = response.headers.get("www-authenticate", "")
            if not challenge.startswith("Bearer"):
                problems.append(f"{label}: WWW-Authenticate is {challenge!r}")
            if case != "no token" and 'error="' not in challenge:
                problems.append(f"{label}: WWW-Authenticate names no error: {challenge!r}")
        if row.batch and case in row.batch:
            statuses = tuple(e["response"]["status"].split()[0] for e in response.json()["entry"])
            if statuses != row.batch[case]:
                problems.append(f"{label}: entry statuses {statuses}, expected {row.batch[case]}")
            for e in response.json()["entry"]:
                if not e["response"]["status"].startswith("2"):
                    assert e["response"]["outcome"]["resourceType"] == "OperationOutcome"
        refused = want >= 400 or (row.batch is not None and case != "right scope")
        if before is not None and refused and await count_rows(w.engine) != before:
            problems.append(f"{label}: a refused write stored something")
        if case == "right scope" and not row.public:
            problems.extend(f"{label}: {s}" for s in check_success(w, row, response))
        # Nobody but an entitled caller sees member A's data; nobody here sees member B's.
        if case != "right scope":
            found = leaked(w.a, response, call.text())
            if found:
                problems.append(f"{label}: the answer shows member A's {found}")
        found = leaked(w.b, response, call.text())
        if found and case != "other patient":
            problems.append(f"{label}: the answer shows member B's {found}")
    assert not problems, "\n".join(problems)


def check_success(w: World, row: Row, response: httpx.Response) -> list[str]:
    """What a successful answer must hold, beyond its status."""
    body = response.json()
    if row.name in ("read", "read Patient", "vread"):
        return [] if body["id"] in w.a.secrets() else [f"read {body.get('id')}"]
    if row.name == "history":
        return [] if body["type"] == "history" and body["entry"] else ["empty history"]
    if row.name == "search":
        kinds = {e["resource"]["resourceType"] for e in body["entry"]}
        ok = body["total"] == len(w.a.ids["ClaimResponse"]) and kinds == {"ClaimResponse", "Claim"}
        return [] if ok else [f"search answered {body['total']} / {kinds}"]
    if row.name == "search POST _search":
        found = {e["resource"]["id"] for e in body["entry"]}
        return [] if found == set(w.a.ids["Task"]) else [f"_search found {found}"]
    if row.name == "Claim/$submit":
        return [] if body["entry"][0]["resource"]["resourceType"] == "ClaimResponse" else ["PAS"]
    if row.name == "Task/$decide":
        return [] if body["resourceType"] == "ClaimResponse" else ["no ClaimResponse"]
    if row.name == "MeasureReport/$pa-metrics":
        return [] if body["resourceType"] == "MeasureReport" else ["no MeasureReport"]
    return []


# ---------------------------------------------------------------------------------------------
# The patient compartment.


def patient_headers(w: World, member: Member, scope: str = "patient/*.rs") -> dict[str, str]:
    return bearer(w.container, scope, patient=member.patient_id)


MEMBER_TYPES = (
    "Patient",
    "Coverage",
    "Condition",
    "ServiceRequest",
    "Task",
    "Claim",
    "ClaimResponse",
    "Communication",
)


async def test_a_member_reads_their_own_data_and_not_another_members(world: World) -> None:
    w = world
    async with w.client(patient_headers(w, w.a)) as member:
        for resource_type in MEMBER_TYPES:
            for id in w.a.ids[resource_type]:
                own = await member.get(f"/{resource_type}/{id}")
                assert own.status_code == 200, (resource_type, own.text)
                assert not leaked(w.b, own), resource_type
                assert (await member.get(f"/{resource_type}/{id}/_history")).status_code == 200
                assert (await member.get(f"/{resource_type}/{id}/_history/1")).status_code == 200
            for id in w.b.ids[resource_type]:
                for url in (
                    f"/{resource_type}/{id}",
                    f"/{resource_type}/{id}/_history",
                    f"/{resource_type}/{id}/_history/1",
                ):
                    other = await member.get(url)
                    assert other.status_code == 404, (url, other.text)
                    assert_outcome(other, "not-found")
                    assert not leaked(w.b, other, url), url
        # Directory-like data is shared: the member may read the practitioners involved.
        practitioner = w.a.one("Practitioner")
        assert (await member.get(f"/Practitioner/{practitioner}")).status_code == 200


async def test_a_members_searches_list_only_their_own(world: World) -> None:
    w = world
    async with w.client(patient_headers(w, w.a)) as member:
        for resource_type in MEMBER_TYPES:
            answer = await member.get(f"/{resource_type}")
            assert answer.status_code == 200, answer.text
            bundle = answer.json()
            ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
            assert ids == set(w.a.ids[resource_type]), resource_type
            assert bundle["total"] == len(w.a.ids[resource_type]), resource_type
            count = (await member.get(f"/{resource_type}", params={"_summary": "count"})).json()
            assert count["total"] == len(w.a.ids[resource_type]), resource_type
            assert not leaked(w.b, answer), resource_type
            # Asking for member B's by id, identifier or reference finds nothing.
            for id in w.b.ids[resource_type]:
                by_id = await member.get(f"/{resource_type}", params={"_id": id})
                assert by_id.json()["total"] == 0 and not leaked(w.b, by_id, id)
        for resource_type, param in COMPARTMENT_SEARCHES:
            other = await member.get(f"/{resource_type}", params={param: w.b.patient})
            assert other.json()["total"] == 0, resource_type
            assert not leaked(w.b, other, w.b.patient)
        by_identifier = await member.get("/Patient", params={"identifier": w.b.member_id})
        assert by_identifier.json()["total"] == 0
        by_name = await member.get("/Patient", params={"family": w.b.family})
        assert by_name.json()["total"] == 0
        # The same through POST _search.
        posted = await member.post(
            "/Task/_search", data={"patient": w.b.patient}, headers={"content-type": FORM}
        )
        assert posted.status_code == 200 and posted.json()["total"] == 0
        posted = await member.post(
            "/Communication/_search", data={}, headers={"content-type": FORM}
        )
        ids = {e["resource"]["id"] for e in posted.json().get("entry", [])}
        assert ids == set(w.a.ids["Communication"])


async def test_includes_never_bring_in_another_members_data(world: World) -> None:
    w = world
    # Member A's Communication that points at member B: recipient Patient B, basedOn B's request.
    crossing = _communication(w.a.patient)
    crossing["recipient"] = [{"reference": w.b.patient}]
    crossing["basedOn"] = [{"reference": f"ServiceRequest/{w.b.one('ServiceRequest')}"}]
    created = await w.admin.post("/Communication", json=crossing)
    assert created.status_code == 201, created.text
    crossing_id = created.json()["id"]
    w.a.ids["Communication"].append(crossing_id)
    async with w.client(patient_headers(w, w.a)) as member:
        searches = {
            "ClaimResponse": ["ClaimResponse:request", "ClaimResponse:patient"],
            "ServiceRequest": ["ServiceRequest:subject", "ServiceRequest:requester"],
            "Task": ["Task:patient", "Task:focus", "Task:owner"],
            "Communication": [
                "Communication:recipient",
                "Communication:based-on",
                "Communication:subject",
            ],
            "Coverage": ["Coverage:beneficiary", "Coverage:payor"],
        }
        for resource_type, includes in searches.items():
            answer = await member.get(
                f"/{resource_type}", params=[("_include", i) for i in includes]
            )
            assert answer.status_code == 200, answer.text
            bundle = answer.json()
            matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
            assert {e["resource"]["id"] for e in matches} == set(w.a.ids[resource_type])
            assert bundle["total"] == len(matches)
            for entry in bundle["entry"]:
                resource = entry["resource"]
                kind = resource["resourceType"]
                if kind not in SHARED_TYPES:
                    assert resource["id"] in w.a.ids.get(kind, []), (resource_type, kind)
            found = leaked(w.b, answer, json.dumps(crossing))
            assert not found, (resource_type, found)
        # The includes that may be shown are shown.
        claims = await member.get("/ClaimResponse", params={"_include": "ClaimResponse:request"})
        included = {
            e["resource"]["id"] for e in claims.json()["entry"] if e["search"]["mode"] == "include"
        }
        assert included == set(w.a.ids["Claim"])
        requests = await member.get(
            "/ServiceRequest", params={"_include": "ServiceRequest:subject"}
        )
        assert w.a.patient_id in {e["resource"]["id"] for e in requests.json()["entry"]}
        # The crossing Communication itself is member A's; what it points at stays hidden.
        own = await member.get(f"/Communication/{crossing_id}")
        assert own.status_code == 200
        assert (await member.get(f"/{w.b.patient}")).status_code == 404
    # With system scopes the same include does bring member B's Patient: the filter is the guard.
    everything = await w.admin.get(
        "/Communication", params={"_id": crossing_id, "_include": "Communication:recipient"}
    )
    assert w.b.patient_id in {e["resource"]["id"] for e in everything.json()["entry"]}
    assert leaked(w.b, everything)  # the leak check does see member B's data where it is


async def test_history_shows_only_the_versions_in_the_members_compartment(world: World) -> None:
    w = world
    # A note first filed under member B, then corrected to member A.
    first = await w.admin.post("/Communication", json=_communication(w.b.patient))
    note = first.json()
    moved = await w.admin.put(
        f"/Communication/{note['id']}", json={**note, "subject": {"reference": w.a.patient}}
    )
    assert moved.status_code == 200, moved.text
    async with w.client(patient_headers(w, w.a)) as member:
        assert (await member.get(f"/Communication/{note['id']}")).status_code == 200
        history = (await member.get(f"/Communication/{note['id']}/_history")).json()
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2"]
        assert w.b.patient_id not in json.dumps(history)
        old = await member.get(f"/Communication/{note['id']}/_history/1")
        assert old.status_code == 404 and w.b.patient_id not in old.text
        assert (await member.get(f"/Communication/{note['id']}/_history/2")).status_code == 200
    async with w.client(patient_headers(w, w.b)) as other:
        # Member B no longer sees it at all, not even the version that was theirs.
        for url in ("", "/_history", "/_history/1"):
            answer = await other.get(f"/Communication/{note['id']}{url}")
            assert answer.status_code == 404, (url, answer.text)


async def test_paging_stays_in_the_members_compartment(world: World) -> None:
    w = world
    for _ in range(3):
        await w.admin.post("/Communication", json=_communication(w.a.patient))
        await w.admin.post("/Communication", json=_communication(w.b.patient))
    own = {
        e["resource"]["id"]
        for e in (await w.admin.get("/Communication", params={"subject": w.a.patient})).json()[
            "entry"
        ]
    }
    async with w.client(patient_headers(w, w.a)) as member:
        seen: list[str] = []
        url: str | None = "/Communication?_count=2"
        while url:
            page = await member.get(url)
            assert page.status_code == 200, page.text
            bundle = page.json()
            assert bundle["total"] == len(own)
            seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
            assert not leaked(w.b, page)
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        assert sorted(seen) == sorted(own)


async def test_write_only_scopes_change_what_they_cannot_read(world: World) -> None:
    w = world
    async with w.client(patient_headers(w, w.a, "patient/Patient.u")) as member:
        own = await member.put(f"/{w.a.patient}", json=_patient_update(w))
        assert own.status_code == 200, own.text
        b_patient = (await w.admin.get(f"/{w.b.patient}")).json()
        other = await member.put(f"/{w.b.patient}", json=b_patient)
        assert other.status_code == 404, other.text
        assert (await member.get(f"/{w.a.patient}")).status_code == 403


async def test_bundles_answer_only_the_members_own_entries(world: World) -> None:
    w = world
    b_task = w.b.one("Task")
    async with w.client(patient_headers(w, w.a)) as member:
        transaction = await member.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"request": {"method": "GET", "url": f"Task/{w.a.one('Task')}"}},
                    {"request": {"method": "GET", "url": f"Task/{b_task}"}},
                ],
            },
        )
        assert transaction.status_code == 404, transaction.text
        assert_outcome(transaction, "not-found")
        assert not leaked(w.b, transaction, b_task)
        batch = await member.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"Task/{w.a.one('Task')}"}},
                    {"request": {"method": "GET", "url": f"Task/{b_task}"}},
                    {"request": {"method": "GET", "url": f"Task/{b_task}/_history/1"}},
                    {"request": {"method": "GET", "url": "Task"}},
                    {"request": {"method": "GET", "url": f"Task?patient={w.b.patient}"}},
                    {
                        "request": {
                            "method": "GET",
                            "url": f"ClaimResponse?_id={w.b.one('ClaimResponse')}",
                        }
                    },
                ],
            },
        )
        assert batch.status_code == 200, batch.text
        entries = batch.json()["entry"]
        assert [e["response"]["status"].split()[0] for e in entries] == [
            "200",
            "404",
            "404",
            "200",
            "200",
            "200",
        ]
        assert entries[0]["resource"]["id"] == w.a.one("Task")
        listed = {e["resource"]["id"] for e in entries[3]["resource"].get("entry", [])}
        assert listed == set(w.a.ids["Task"])
        assert entries[4]["resource"]["total"] == 0
        assert entries[5]["resource"]["total"] == 0
        found = leaked(w.b, batch, f"{b_task} {w.b.patient} {w.b.one('ClaimResponse')}")
        assert not found, found


async def test_patient_scoped_writes_stay_in_the_members_compartment(world: World) -> None:
    w = world
    async with w.client(patient_headers(w, w.a, "patient/*.cruds")) as member:
        # Writing into member B's compartment: refused, nothing stored.
        before = await count_rows(w.engine)
        refused = await member.post("/Communication", json=_communication(w.b.patient))
        assert refused.status_code == 403, refused.text
        assert_outcome(refused, "forbidden")
        transaction = await member.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                        "resource": _communication(w.a.patient),
                        "request": {"method": "POST", "url": "Communication"},
                    },
                    {
                        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                        "resource": _communication(w.b.patient),
                        "request": {"method": "POST", "url": "Communication"},
                    },
                ],
            },
        )
        assert transaction.status_code == 403, transaction.text
        assert_outcome(transaction, "forbidden")
        # Nor may a write for member A also land in member B's record (a message to B).
        to_b = _communication(w.a.patient)
        to_b["recipient"] = [{"reference": w.b.patient}]
        refused = await member.post("/Communication", json=to_b)
        assert refused.status_code == 403, refused.text
        assert_outcome(refused, "forbidden")
        # Updating member B's resources: unknown to this token.
        b_patient = (await w.admin.get(f"/{w.b.patient}")).json()
        b_patient["gender"] = "other"
        update = await member.put(f"/{w.b.patient}", json=b_patient)
        assert update.status_code == 404, update.text
        assert not leaked(w.b, update, json.dumps(b_patient))
        # Update-as-create with a new id: a member's token cannot choose ids (issue #16: a fresh
        # id answers as another member's does, 404, so neither tells whether the id exists).
        stranger = {"resourceType": "Patient", "id": f"stranger-{uuid.uuid4().hex[:8]}"}
        assert (await member.put(f"/Patient/{stranger['id']}", json=stranger)).status_code == 404
        # A conditional create that matches member B's Patient must not hand it over.
        conditional = await member.post(
            "/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Probe"}]},
            headers={"if-none-exist": f"identifier={w.b.member_id}"},
        )
        assert conditional.status_code == 403, conditional.text
        assert not leaked(w.b, conditional, w.b.member_id)
        # Whether another member matches conditional-create criteria must not show: the
        # answers are the same as for criteria nobody matches.
        for probe, nobody in (
            (f"identifier={w.b.member_id}", "identifier=nobody-at-all"),
            (f"family={w.b.family}&birthdate={w.b.birth_date}", "family=Nobody&birthdate=1900"),
        ):
            answers = []
            for criteria in (probe, nobody):
                answer = await member.post(
                    "/Patient",
                    json={"resourceType": "Patient", "name": [{"family": "Probe"}]},
                    headers={"if-none-exist": criteria},
                )
                assert not leaked(w.b, answer, criteria)
                answers.append((answer.status_code, answer.json()["issue"][0]["diagnostics"]))
            assert answers[0] == answers[1], answers
            assert answers[0][0] == 403
        # Directory-like data is readable under patient scopes, never writable.
        practitioner = await member.post(
            "/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "X"}]}
        )
        assert practitioner.status_code == 403, practitioner.text
        assert await count_rows(w.engine) == before
        # Writing within the member's own compartment works.
        own = await member.post("/Communication", json=_communication(w.a.patient))
        assert own.status_code == 201, own.text
        # A conditional create looks only among the member's own resources.
        own_id = own.json()["id"]
        for criteria in (f"subject={w.b.patient}", f"_id={w.b.one('Communication')}"):
            again = await member.post(
                "/Communication",
                json=_communication(w.a.patient),
                headers={"if-none-exist": criteria},
            )
            assert again.status_code == 201, again.text
            assert again.json()["id"] not in w.b.ids["Communication"]
            assert not leaked(w.b, again, criteria)
        same = await member.post(
            "/Communication",
            json=_communication(w.a.patient),
            headers={"if-none-exist": f"_id={own_id}"},
        )
        assert same.status_code == 200 and same.json()["id"] == own_id
        # ...but moving one of the member's resources to member B, or adding B, does not.
        shared = {**own.json(), "recipient": [{"reference": w.b.patient}]}
        assert (await member.put(f"/Communication/{shared['id']}", json=shared)).status_code == 403
        moved = {**own.json(), "subject": {"reference": w.b.patient}}
        before = await count_rows(w.engine)
        assert (await member.put(f"/Communication/{moved['id']}", json=moved)).status_code == 403
        assert await count_rows(w.engine) == before


async def test_plan_actions_and_admin_data_need_more_than_patient_scopes(world: World) -> None:
    w = world
    before = await count_rows(w.engine)
    async with w.client(patient_headers(w, w.a, "patient/*.cruds")) as member:
        decide = await member.post(f"/Task/{w.pended_task}/$decide", json=_decide_body())
        assert decide.status_code == 403, decide.text
        assert_outcome(decide, "forbidden")
        submit = await member.post("/Claim/$submit", json=_pas_request())
        assert submit.status_code == 403, submit.text
        for url in (
            "/AuditEvent",
            f"/Subscription/{w.subscription}",
            f"/Subscription/{w.subscription}/$status",
            "/Subscription",
        ):
            answer = await member.get(url)
            assert answer.status_code == 403, (url, answer.text)
            assert_outcome(answer, "forbidden")
    async with w.client(patient_headers(w, w.a, "patient/AuditEvent.rs")) as member:
        assert (await member.get("/AuditEvent")).status_code == 403
    # A system scope for something else does not turn patient scopes into plan powers.
    mixed = patient_headers(w, w.a, "system/Practitioner.rs patient/*.cruds")
    async with w.client(mixed) as member:
        decide = await member.post(f"/Task/{w.pended_task}/$decide", json=_decide_body())
        assert decide.status_code == 403, decide.text
        assert_outcome(decide, "forbidden")
        assert (await member.post("/Claim/$submit", json=_pas_request())).status_code == 403
    # Patient scopes in a token that names no patient reach nothing.
    async with w.client(bearer(w.container, "patient/*.cruds")) as nobody:
        for url in ("/Task", f"/Task/{w.a.one('Task')}", f"/{w.a.patient}"):
            answer = await nobody.get(url)
            assert answer.status_code == 403, (url, answer.text)
            assert not leaked(w.a, answer, url)
    assert await count_rows(w.engine) == before
    assert (await w.admin.get(f"/Task/{w.pended_task}")).json()["status"] == "on-hold"


async def test_the_audit_log_needs_a_scope_that_names_it(world: World) -> None:
    w = world
    for scope, status in (
        ("system/*.rs", 403),
        ("system/*.cruds", 403),
        ("system/*.read", 403),
        ("system/*.*", 403),
        ("system/AuditEvent.s", 200),
        ("system/AuditEvent.rs", 200),
        ("system/AuditEvent.read", 200),
    ):
        async with w.client(bearer(w.container, scope)) as caller:
            answer = await caller.get("/AuditEvent")
            assert answer.status_code == status, (scope, answer.text)
            if status == 403:
                assert_outcome(answer, "forbidden")
    # Written by the server only: no scope lets a client add to it.
    async with w.client(bearer(w.container, "system/AuditEvent.cruds")) as caller:
        added = await caller.post("/AuditEvent", json={"resourceType": "AuditEvent"})
        assert added.status_code == 405 and added.headers["allow"] == "GET"
        assert_outcome(added)


V1_V2 = (
    ("system/*.read", "system/*.rs"),
    ("system/*.write", "system/*.cud"),
    ("system/*.*", "system/*.cruds"),
    ("patient/*.read", "patient/*.rs"),
)


@pytest.mark.parametrize(("v1", "v2"), V1_V2)
async def test_v1_and_v2_scopes_mean_the_same(world: World, v1: str, v2: str) -> None:
    w = world
    patient = w.a.patient_id if v1.startswith("patient/") else None
    outcomes: dict[str, list[tuple[str, int, int | None]]] = {}
    for scope in (v1, v2):
        seen = outcomes.setdefault(scope, [])
        for call in (
            Call("GET", f"/Task/{w.a.one('Task')}"),
            Call("GET", f"/Task/{w.b.one('Task')}"),
            Call("GET", "/Task"),
            Call("GET", "/AuditEvent"),
            Call("GET", f"/Task/{w.a.one('Task')}/_history"),
            Call("PUT", f"/{w.a.patient}", json=_patient_update(w)),
            Call("POST", "/Communication", json=_communication(w.a.patient)),
            Call("POST", "/Task/_search", form={"_count": "5"}),
        ):
            response = await send(w, call, bearer(w.container, scope, patient=patient))
            total = response.json().get("total") if response.status_code == 200 else None
            seen.append((f"{call.method} {call.url}", response.status_code, total))
    assert outcomes[v1] == outcomes[v2]


async def test_a_members_writes_do_not_reveal_which_of_other_members_ids_exist(
    world: World,
) -> None:
    """Referring to another member's resource answers exactly as referring to nothing at all."""
    w = world
    others = f"ServiceRequest/{w.b.one('ServiceRequest')}"
    nowhere = f"ServiceRequest/{uuid.uuid4()}"
    answers = []
    async with w.client(patient_headers(w, w.a, "patient/*.cruds")) as member:
        for target in (others, nowhere):
            body = {**_communication(w.a.patient), "basedOn": [{"reference": target}]}
            answer = await member.post("/Communication", json=body)
            assert answer.status_code == 422, answer.text
            assert_outcome(answer, "not-found")
            answers.append(answer.json()["issue"][0]["diagnostics"].replace(target, "<target>"))
        assert answers[0] == answers[1]
        own = {
            **_communication(w.a.patient),
            "basedOn": [{"reference": f"ServiceRequest/{w.a.one('ServiceRequest')}"}],
        }
        assert (await member.post("/Communication", json=own)).status_code == 201


# ---------------------------------------------------------------------------------------------
# Issue #16: Subscriptions belong to their owner; what the plan owns is not written over REST.


async def test_subscriptions_are_seen_by_their_owner_alone(world: World) -> None:
    w = world
    assert w.container.issuer is not None
    own = await w.admin.get(f"/Subscription/{w.subscription}")
    assert own.status_code == 200, own.text
    for scope in ("system/Subscription.cruds", "system/*.cruds", "user/Subscription.rs"):
        token = w.container.issuer.mint("another-system", scope)
        async with w.client({"authorization": f"Bearer {token}"}) as other:
            listed = await other.get("/Subscription")
            assert listed.status_code == 200 and listed.json()["total"] == 0, listed.text
            for url in (
                f"/Subscription/{w.subscription}",
                f"/Subscription/{w.subscription}/_history",
                f"/Subscription/{w.subscription}/$status",
                f"/Subscription/{w.subscription}/$events",
            ):
                answer = await other.get(url)
                assert answer.status_code == 404, (scope, url, answer.text)
                assert_outcome(answer, "not-found")
            taken = {**own.json(), "reason": "taken over"}
            put = await other.put(f"/Subscription/{w.subscription}", json=taken)
            assert put.status_code == (403 if scope.endswith(".rs") else 404), put.text


def _plan_owned_writes(w: World, provenance: dict[str, Any]) -> list[tuple[str, Call]]:
    """Every way a client might rewrite what the plan decided, on member A's record."""

    def current(resource_type: str) -> dict[str, Any]:
        return w.plan_owned[resource_type]

    response, task = current("ClaimResponse"), current("Task")
    notice, claim = current("Communication"), current("Claim")
    fresh_response = {k: v for k, v in response.items() if k not in ("id", "meta")}
    return [
        (
            "PUT ClaimResponse",
            Call("PUT", f"/ClaimResponse/{response['id']}", {**response, "preAuthRef": "X"}),
        ),
        (
            "POST ClaimResponse",
            Call("POST", "/ClaimResponse", {**fresh_response, "outcome": "complete"}),
        ),
        ("PUT Claim", Call("PUT", f"/Claim/{claim['id']}", {**claim, "status": "cancelled"})),
        ("cancel Task", Call("PUT", f"/Task/{task['id']}", {**task, "status": "cancelled"})),
        (
            "Task output",
            Call("PUT", f"/Task/{task['id']}", {k: v for k, v in task.items() if k != "output"}),
        ),
        (
            "PUT notice",
            Call("PUT", f"/Communication/{notice['id']}", {**notice, "status": "stopped"}),
        ),
        ("PUT Provenance", Call("PUT", f"/Provenance/{provenance['id']}", provenance)),
        (
            "POST Provenance",
            Call(
                "POST",
                "/Provenance",
                {k: v for k, v in provenance.items() if k not in ("id", "meta")},
            ),
        ),
    ]


async def test_what_the_plan_owns_is_not_written_over_rest(world: World) -> None:
    w = world
    w.plan_owned = {}
    for resource_type in ("ClaimResponse", "Task", "Claim"):
        w.plan_owned[resource_type] = (
            await w.admin.get(f"/{resource_type}/{w.a.one(resource_type)}")
        ).json()
    w.plan_owned["Communication"] = next(
        e["resource"]
        for e in (await w.admin.get("/Communication", params={"patient": w.a.patient})).json()[
            "entry"
        ]
        if any("/sid/notice" in i.get("system", "") for i in e["resource"].get("identifier", []))
    )
    provenance = (await w.admin.get("/Provenance", params={"_count": "1"})).json()["entry"][0][
        "resource"
    ]
    callers = {
        "member": patient_headers(w, w.a, "patient/*.cruds"),
        "EHR": bearer(w.container, "system/*.cruds"),
        "admin": bearer(w.container),
    }
    before = await count_rows(w.engine)
    problems = []
    for who, headers in callers.items():
        for name, call in _plan_owned_writes(w, provenance):
            answer = await send(w, call, headers)
            # The decision's Provenance is in no member's compartment: unknown to a member.
            unseen = who == "member" and name == "PUT Provenance"
            if answer.status_code != (404 if unseen else 403):
                problems.append(f"{who} / {name}: {answer.status_code} {answer.text[:200]}")
                continue
            assert_outcome(answer, "not-found" if unseen else "forbidden")
    assert not problems, "\n".join(problems)
    assert await count_rows(w.engine) == before


async def test_put_answers_another_members_id_as_it_answers_a_fresh_one(world: World) -> None:
    """Issue #16, finding 13: PUT under a member's token does not tell which ids exist."""
    w = world
    answers = []
    async with w.client(patient_headers(w, w.a, "patient/*.cruds")) as member:
        for target in (w.b.one("Communication"), f"fresh-{uuid.uuid4().hex[:8]}"):
            body = {**_communication(w.a.patient), "id": target}
            answer = await member.put(f"/Communication/{target}", json=body)
            assert not leaked(w.b, answer, target)
            answers.append(
                (
                    answer.status_code,
                    answer.json()["issue"][0]["diagnostics"].replace(target, "<id>"),
                )
            )
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 404
