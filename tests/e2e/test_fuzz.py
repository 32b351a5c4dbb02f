"""Fuzzing the FHIR endpoints with a valid token (issue #5): whatever arrives, the server never
answers 5xx, every 4xx is an OperationOutcome, every 2xx is a FHIR resource, a refused write
stores nothing, and the audit trail can record every request.

Hypothesis drives the cases. Its `@given` runs synchronously, so each fuzz test is an ordinary
async test on the session loop (using the conftest fixtures) that runs the Hypothesis engine in a
worker thread; every example is sent back to the loop with `run_coroutine_threadsafe`.

CI is deterministic (`derandomize=True`, no example database): the same examples every run.
For a longer local campaign:

    FHIR_ADAPTER_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/e2e/test_fuzz.py -q -s

sets the examples per test (default `DEFAULT_EXAMPLES`); FHIR_ADAPTER_FUZZ_SEED=<int> swaps the
derandomized stream for another fixed one. Each test prints how many examples it ran (`-s`).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import string
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings as hypothesis_settings, strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.bootstrap import Container
from fhir_adapter.config import Settings
from fhir_adapter.fhir.resources import SERVED_TYPES, model_class
from fhir_adapter.fhir.search_parameters import SEARCH_PARAMS
from fhir_adapter.workflow.subscriptions import DECISION_TOPIC
from tests.conftest import BASE_URL, count_rows
from tests.e2e.test_operations import decide_params
from tests.factories import EXAMPLES, example_request

DEFAULT_EXAMPLES = 100  # per fuzz test; five tests, so 500 examples per backend in CI
EXAMPLES_PER_TEST = int(os.environ.get("FHIR_ADAPTER_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)
SEED = os.environ.get("FHIR_ADAPTER_FUZZ_SEED")
FHIR_JSON = "application/fhir+json"
REQUEST_NAMES = sorted(p.stem for p in (EXAMPLES / "requests").glob("*.json"))


@pytest.fixture
def settings(database_url: str) -> Settings:
    """conftest's settings without the per-client rate limit: thousands of fuzz requests from
    one token would otherwise be answered 429 (an OperationOutcome, but it would stop the fuzz
    from reaching anything else)."""
    return Settings(
        database_url=database_url,
        base_url=BASE_URL,
        max_body_bytes=64 * 1024,
        max_bundle_entries=100,
        rate_limit="",
        subscription_allowed_hosts="payer.test",  # the fuzz's rest-hook receiver (issue #16)
    )


# -- one request and what every answer must be --------------------------------------------------


@dataclass
class Call:
    """One fuzz request. `path` is relative to the FHIR base (already percent-encoded)."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None
    absolute: bool = False  # `path` is from the server root, not from /fhir (the token endpoint)
    smart: bool = False  # SMART discovery: its 2xx is the SMART configuration (JSON, not FHIR)

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        body = self.body if self.body is None or len(self.body) < 3000 else self.body[:3000]
        return (
            f"Call({self.method} {self.path!r} params={self.params!r} "
            f"headers={self.headers!r} body={body!r})"
        )


def _header(headers: dict[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode("latin-1")


def assert_outcome(response: httpx.Response, call: Call) -> None:
    assert response.headers.get("content-type", "").startswith(FHIR_JSON), (
        call,
        response.status_code,
        response.headers,
    )
    body = response.json()
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", (call, body)
    issues = body.get("issue")
    assert isinstance(issues, list) and issues, (call, body)
    for issue in issues:
        assert issue.get("severity") in ("fatal", "error", "warning", "information"), (call, body)
        assert isinstance(issue.get("code"), str) and issue["code"], (call, body)
    model_class("OperationOutcome").model_validate(body)


def assert_fhir_answer(response: httpx.Response, call: Call) -> None:
    """No 5xx; a 4xx is an OperationOutcome; a 2xx is a FHIR resource (or nothing, when asked)."""
    status = response.status_code
    assert status < 500, (call, status, response.text[:2000])
    if status >= 400:
        assert_outcome(response, call)
        return
    if status == 304:
        assert _header(call.headers, "if-none-match"), (call, status)
        assert not response.content, (call, response.content[:200])
        return
    assert 200 <= status < 300, (call, status, response.text[:2000])
    if call.smart:
        configuration = response.json()
        assert isinstance(configuration, dict) and configuration["token_endpoint"], (call, status)
        return
    prefer = _header(call.headers, "prefer").replace(" ", "").lower()
    if not response.content:
        assert call.method in ("POST", "PUT") and "return=minimal" in prefer, (call, status)
        return
    assert response.headers.get("content-type", "").startswith(FHIR_JSON), (call, response.headers)
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("resourceType"), str), (call, body)
    try:
        model_class(body["resourceType"]).model_validate(body)
    except Exception as exc:  # pydantic.ValidationError, or the models failing on odd input
        raise AssertionError((call, f"2xx body is not a valid FHIR resource: {exc}")) from exc
    if body["resourceType"] == "Bundle" and body.get("type") in (
        "batch-response",
        "transaction-response",
    ):
        # The same rules inside: an entry never fails with a 5xx, and a refused one says why.
        for entry in body.get("entry", []):
            answer = entry["response"]
            assert not answer["status"].startswith("5"), (call, entry)
            if answer["status"][:1] == "4":
                outcome = answer.get("outcome")
                assert isinstance(outcome, dict), (call, entry)
                assert outcome.get("resourceType") == "OperationOutcome", (call, entry)
                assert outcome.get("issue"), (call, entry)


def assert_oauth_answer(response: httpx.Response, call: Call) -> None:
    """The token endpoint answers in OAuth 2.0 JSON (RFC 6749 §5.2), not FHIR."""
    assert response.status_code < 500, (call, response.status_code, response.text[:2000])
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), (call, body)
    else:
        assert isinstance(body, dict) and body.get("access_token"), (call, body)


@dataclass
class Target:
    """What a fuzz test talks to: the client, the store, and ids made before the fuzz started."""

    client: httpx.AsyncClient
    engine: AsyncEngine
    container: Container
    task_id: str = ""
    subscription_id: str = ""
    existing: dict[str, str] = field(default_factory=dict)  # resource type -> a stored id
    statuses: Counter[int] = field(default_factory=Counter)  # answers seen, for the summary


async def send(target: Target, call: Call) -> httpx.Response:
    """Send `call`, check the answer, and that a refused write stored nothing."""
    write = call.method in ("POST", "PUT") and not call.path.endswith("/_search")
    before = await count_rows(target.engine) if write else None
    # Absolute URLs: httpx refuses a relative one like "////" that a client may still send.
    url = f"http://testserver{call.path}" if call.absolute else f"{BASE_URL}{call.path}"
    response = await target.client.request(
        call.method, url, params=call.params or None, headers=call.headers, content=call.body
    )
    if response.status_code in (307, 308) and not call.absolute:
        # Starlette's trailing-slash redirect (`/fhir/Patient/` -> `/fhir/Patient`): it must stay
        # on this server, and where it leads must follow the same rules (checked below).
        location = response.headers["location"]
        assert location.startswith(BASE_URL), (call, response.status_code, location)
        response = await target.client.request(
            call.method, location, headers=call.headers, content=call.body
        )
    if call.method == "HEAD":
        # No body by definition: the status must still not be 5xx, and the GET it stands for
        # must answer by the rules.
        assert response.status_code < 500, (call, response.status_code)
        assert not response.content, (call, response.content[:200])
        return await send(target, dataclasses.replace(call, method="GET"))
    if call.absolute:
        assert_oauth_answer(response, call)
    else:
        assert_fhir_answer(response, call)
    target.statuses[response.status_code] += 1
    if before is not None and 400 <= response.status_code < 500:
        assert await count_rows(target.engine) == before, (call, "a refused write stored rows")
    # Every /fhir request is audited; the trail must be able to store the event of any request.
    await target.container.audit.flush()
    return response


async def fuzz(
    target: Target, name: str, strategy: st.SearchStrategy[Any], build: Callable[[Any], Call]
) -> int:
    """Run Hypothesis over `strategy` in a worker thread; each example is sent on this loop."""
    loop = asyncio.get_running_loop()
    ran = 0

    def one(case: Any) -> None:
        nonlocal ran
        ran += 1
        call = build(case)
        future = asyncio.run_coroutine_threadsafe(send(target, call), loop)
        future.result(timeout=120)

    test = hypothesis_settings(
        max_examples=EXAMPLES_PER_TEST,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )(given(strategy)(one))
    if SEED is not None:
        test = seed(int(SEED))(test)
    await asyncio.to_thread(test)
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(target.statuses.items()))
    print(f"\nfuzz {name}: {ran} examples ({statuses})")  # noqa: T201 - the count #5 quotes
    return ran


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 4) -> Any:
    """`odd` one time in `one_in`, `usual` otherwise: junk everywhere at once would stop every
    request at the first check, and the code behind it would never be reached."""
    return st.integers(1, one_in).flatmap(lambda n: odd if n == one_in else usual)


# -- values -------------------------------------------------------------------------------------

WEIRD_TEXT = [
    "\x00",
    "\x01\x02\x1f",
    "\x7f",
    "\u0085",
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\ufeff",  # byte-order mark
    "\U0001f600",
    "e\u0301",  # combining accent
    "\\",
    '"',
    "'; DROP TABLE resources; --",
    "%00",
    "%2F..%2F",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "urn:uuid:",
    "Patient/",
    "\t\r\n",
    " ",
    "",
]

text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x20), max_size=8),
    st.sampled_from(WEIRD_TEXT),
    st.lists(st.sampled_from(WEIRD_TEXT), min_size=1, max_size=4).map("".join),
)
numbers = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 2**64, 1e308, -0.0, 5e-324]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.one_of(
    st.sampled_from(["fuzz-1", "fuzz-2", "1", "a" * 64, "a" * 65, "x.y-z", "-", "."]),
    st.text(alphabet=string.ascii_letters + string.digits + "-.", min_size=1, max_size=70),
    text.filter(bool),
)
FHIR_TYPES = [
    *SERVED_TYPES,
    "Bundle",
    "Parameters",
    "OperationOutcome",
    "Observation",
    "CapabilityStatement",
    "patient",
    "Patient ",
    "NotAType",
    "",
    "Resource",
    "DomainResource",
    "Element",
    "BackboneElement",
    "__proto__",
]
resource_types = st.one_of(st.sampled_from(FHIR_TYPES), text)
served_types = mostly(st.sampled_from(list(SERVED_TYPES)), resource_types)

# Headers: latin-1 bytes without CR/LF/NUL (what an HTTP client can put on the wire).
header_bytes = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F) or b"x"
)
ACCEPTS = [
    FHIR_JSON,
    "application/json",
    "*/*",
    "application/fhir+xml",
    "text/html",
    "application/fhir+json; fhirVersion=4.0",
    "application/fhir+json;q=0.1, text/plain;q=1",
    "",
    ",,,",
]
CONTENT_TYPES = [
    FHIR_JSON,
    "application/json",
    "application/json+fhir",
    "text/json",
    "application/fhir+json; charset=utf-8",
    "application/fhir+xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
    "",
    ";",
    "APPLICATION/FHIR+JSON",
]
PREFERS = [
    "return=minimal",
    "return=representation",
    "return=OperationOutcome",
    "return=operationoutcome",
    "handling=strict",
    "handling=lenient",
    "respond-async",
    "return=minimal, handling=strict",
    'return="minimal"',
    "=",
    ",,",
    "return",
]
ETAGS = ['W/"1"', 'W/"2"', '"1"', "W/1", 'W/"0"', 'W/"-1"', 'W/"99999999999999999999"', "*", ""]


def header_value(choices: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(choices).map(str.encode), header_bytes)


all_headers = st.fixed_dictionaries(
    {},
    optional={
        "accept": header_value(ACCEPTS),
        "content-type": header_value(CONTENT_TYPES),
        "if-match": header_value(ETAGS),
        "if-none-match": header_value(ETAGS),
        "if-none-exist": header_value(["identifier=a|b", "_id=fuzz-1", "name=x", "junk=1", "%"]),
        "prefer": header_value(PREFERS),
        "authorization": header_value(["Bearer", "Bearer x", "Basic abc", "bearer  "]),
        "x-forwarded-for": header_bytes,
    },
)
headers = mostly(st.just({}), all_headers, one_in=3)  # some requests with odd headers
format_params = st.lists(
    st.tuples(
        st.sampled_from(["_format", "_pretty", "_summary", "_elements"]),
        st.one_of(
            st.sampled_from(["json", "xml", "application/fhir+json", "true", "false", "count"]),
            text,
        ),
    ),
    max_size=2,
)


# -- structural mutations of JSON documents -------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    found: list[Path_] = []
    if isinstance(node, dict):
        for key, child in node.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.append((*prefix, index))
            found.extend(_paths(child, (*prefix, index)))
    return found


def _parent(doc: Any, path: Path_) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> None:
    _parent(doc, path)[path[-1]] = value


def _pick(doc: Any, index: int, suffix: str | None = None) -> Path_ | None:
    paths = _paths(doc)
    if suffix is not None:
        paths = [p for p in paths if p[-1] == suffix]
    return paths[index % len(paths)] if paths else None


def _nest(value: Any, levels: int) -> Any:
    for level in range(levels):
        value = [value] if level % 2 else {"x": value}
    return value


def _swap(value: Any, choice: int) -> Any:
    """The same information under another JSON type."""
    options = [
        str(value) if not isinstance(value, str) else value + "x",
        len(value) if isinstance(value, str | list | dict) else 1,
        1.5,
        bool(value),
        {"value": value},
        [value],
        [],
        {},
        None,
        str(value).lower(),
        json.dumps(value),  # an object as a JSON string: "{}" for {}
    ]
    return options[choice % len(options)]


def mutate(doc: Any, mutation: tuple[Any, ...]) -> None:
    """Apply one mutation in place; kinds that find nothing to change leave `doc` alone."""
    kind, index = mutation[0], mutation[1]
    if kind == "drop":
        path = _pick(doc, index)
        if path:
            del _parent(doc, path)[path[-1]]
    elif kind == "replace":
        path = _pick(doc, index)
        if path:
            _set(doc, path, mutation[2])
    elif kind == "swap":
        path = _pick(doc, index)
        if path:
            _set(doc, path, _swap(_parent(doc, path)[path[-1]], mutation[2]))
    elif kind == "inject":
        strings = [p for p in _paths(doc) if isinstance(_parent(doc, p)[p[-1]], str)]
        if strings:
            path = strings[index % len(strings)]
            old: str = _parent(doc, path)[path[-1]]
            at = mutation[3] % (len(old) + 1)
            _set(doc, path, old[:at] + mutation[2] + old[at:])
    elif kind == "huge":
        path = _pick(doc, index)
        if path:
            _set(doc, path, mutation[2] * mutation[3])
    elif kind == "nest":
        path = _pick(doc, index)
        if path:
            _set(doc, path, _nest(_parent(doc, path)[path[-1]], mutation[2]))
    elif kind == "add":
        objects = [doc] + [
            _parent(doc, p)[p[-1]] for p in _paths(doc) if isinstance(_parent(doc, p)[p[-1]], dict)
        ]
        objects[index % len(objects)][mutation[2]] = mutation[3]
    elif kind in ("resourceType", "reference", "fullUrl", "method", "url", "ifNoneExist"):
        path = _pick(doc, index, kind)
        if path:
            _set(doc, path, mutation[2])
    elif kind == "dup-fullUrl":
        urls = _paths(doc)
        urls = [p for p in urls if p[-1] == "fullUrl"]
        if len(urls) >= 2:
            first, second = urls[index % len(urls)], urls[mutation[2] % len(urls)]
            _set(doc, second, _parent(doc, first)[first[-1]])
    elif kind == "dup-entry":
        entries = doc.get("entry") if isinstance(doc, dict) else None
        if isinstance(entries, list) and entries:
            entries.append(copy.deepcopy(entries[index % len(entries)]))
    elif kind == "root" and isinstance(doc, dict):  # the whole body becomes something else
        doc.clear()
        doc.update(mutation[2] if isinstance(mutation[2], dict) else {"value": mutation[2]})


indexes = st.integers(0, 10_000)
mutations = st.one_of(
    st.tuples(st.just("drop"), indexes),
    st.tuples(st.just("replace"), indexes, json_values),
    st.tuples(st.just("swap"), indexes, st.integers(0, 10)),
    st.tuples(st.just("inject"), indexes, text, st.integers(0, 100)),
    st.tuples(
        st.just("huge"),
        indexes,
        st.sampled_from(["x", "é", "\U0001f600", "\\u0000", "<"]),
        st.integers(1_000, 70_000),
    ),
    st.tuples(st.just("nest"), indexes, st.integers(1, 300)),
    st.tuples(st.just("add"), indexes, st.text(max_size=20), json_values),
    st.tuples(st.just("resourceType"), indexes, resource_types),
    st.tuples(
        st.just("reference"),
        indexes,
        st.one_of(
            st.uuids().map(lambda u: f"urn:uuid:{u}"),
            st.sampled_from(
                [
                    "Patient/does-not-exist",
                    "urn:uuid:not-a-uuid",
                    "urn:oid:1.2.3",
                    "#contained",
                    "http://elsewhere.example/fhir/Patient/1",
                    f"{BASE_URL}/Patient/nope",
                    "Patient",
                    "/Patient/1",
                    "Patient/1/_history/1",
                    "NotAType/1",
                ]
            ),
            text,
        ),
    ),
    st.tuples(
        st.just("fullUrl"), indexes, st.one_of(st.uuids().map(lambda u: f"urn:uuid:{u}"), text)
    ),
    st.tuples(
        st.just("method"),
        indexes,
        st.one_of(
            st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "post", "TRACE"]),
            json_values,
        ),
    ),
    st.tuples(
        st.just("url"),
        indexes,
        st.one_of(
            st.sampled_from(
                [
                    "Patient",
                    "Patient/fuzz-1",
                    "Patient?name=x",
                    "Task/$decide",
                    "Claim/$submit",
                    "metadata",
                    "/",
                    "",
                    "Patient/../Task",
                    "http://elsewhere/Patient",
                    "Patient/1/_history/1",
                    "Bundle",
                    "AuditEvent",
                ]
            ),
            text,
        ),
    ),
    st.tuples(st.just("ifNoneExist"), indexes, st.one_of(text, st.just("identifier=a|b"))),
    st.tuples(st.just("dup-fullUrl"), indexes, indexes),
    st.tuples(st.just("dup-entry"), indexes),
    st.tuples(st.just("root"), indexes, json_values),
)
mutation_lists = st.lists(mutations, max_size=4)


def mutated(doc: Any, changes: list[tuple[Any, ...]]) -> Any:
    doc = copy.deepcopy(doc)
    for change in changes:
        mutate(doc, change)
    return doc


def encode(doc: Any) -> bytes:
    """JSON bytes; stdlib json, which (unlike orjson) writes very deep documents and big ints."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- seeds: valid documents the mutations start from ---------------------------------------------


def load_example(path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / path).read_text())
    return loaded


def subscription_resource() -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "fuzz",
        "criteria": DECISION_TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://payer.test/hooks/fuzz",
            "payload": "application/fhir+json",
        },
    }


def decide_parameters(decision: str) -> dict[str, Any]:
    return decide_params(
        decision,
        provider={
            "valueReference": {"reference": "https://directory.example/fhir/PractitionerRole/pr-1"}
        },
        reason={"valueString": "fuzz"},
    )


def _seed_resources() -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in REQUEST_NAMES:
        for entry in example_request(name)["entry"]:
            found.setdefault(entry["resource"]["resourceType"], entry["resource"])
    for entry in load_example("pas/claim-submit-request.json")["entry"]:
        found.setdefault(entry["resource"]["resourceType"], entry["resource"])
    found["Subscription"] = subscription_resource()
    return [found[k] for k in sorted(found)]


SEED_RESOURCES = _seed_resources()
PAS_BUNDLE = load_example("pas/claim-submit-request.json")


# -- 1. structural mutations of valid bodies, to every endpoint that takes one --------------------

body_cases = st.one_of(
    st.tuples(
        st.just("transaction"),
        st.sampled_from(REQUEST_NAMES),
        st.sampled_from(["", "-a", "-b", "-c"]),
        st.sampled_from(["transaction", "transaction", "batch"]),
        mutation_lists,
    ),
    st.tuples(
        st.just("create"),
        st.sampled_from(SEED_RESOURCES),
        mostly(st.none(), resource_types),  # None: the URL names the body's type
        mutation_lists,
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(SEED_RESOURCES),
        ids,
        st.booleans(),
        mutation_lists,
    ),
    st.tuples(st.just("submit"), st.sampled_from(["", "-a", "-b"]), mutation_lists),
    st.tuples(
        st.just("decide"),
        st.sampled_from(["approved-in-network", "approved-out-of-network", "denied", "maybe", ""]),
        st.one_of(st.none(), ids),
        mutation_lists,
    ),
)


def build_body_case(target: Target, case: tuple[Any, ...], extra: dict[str, bytes]) -> Call:
    kind = case[0]
    headers = {k: v for k, v in extra.items() if k in ("prefer", "if-match", "if-none-exist")}
    if kind == "transaction":
        _, name, suffix, bundle_type, changes = case
        bundle = example_request(name, suffix)
        bundle["type"] = bundle_type
        return Call("POST", "", headers=headers, body=encode(mutated(bundle, changes)))
    if kind == "create":
        _, resource, url_type, changes = case
        body = mutated(resource, changes)
        url_type = url_type if url_type is not None else resource["resourceType"]
        return Call("POST", f"/{quote(url_type, safe='')}", headers=headers, body=encode(body))
    if kind == "update":
        _, resource, id_, existing, changes = case
        body = copy.deepcopy(resource)
        if existing and resource["resourceType"] in target.existing:
            id_ = target.existing[resource["resourceType"]]
        body["id"] = id_
        body = mutated(body, changes)
        path = f"/{resource['resourceType']}/{quote(id_, safe='')}"
        return Call("PUT", path, headers=headers, body=encode(body))
    if kind == "submit":
        _, suffix, changes = case
        bundle = copy.deepcopy(PAS_BUNDLE)
        if suffix:
            bundle["identifier"]["value"] += suffix
            bundle["entry"][0]["resource"]["identifier"][0]["value"] += suffix
        return Call(
            "POST", "/Claim/$submit", headers=headers, body=encode(mutated(bundle, changes))
        )
    _, decision, id_, changes = case
    task = target.task_id if id_ is None else id_
    body = mutated(decide_parameters(decision), changes)
    return Call("POST", f"/Task/{quote(task, safe='')}/$decide", headers=headers, body=encode(body))


async def setup_target(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> Target:
    """Stored resources the fuzz can aim at: a pended Task to decide, a Subscription, one
    resource of each seed type to update."""
    target = Target(client, engine, container)
    answer = await client.post("", json=load_example("requests/review.json"))
    assert answer.status_code == 200, answer.text
    for entry in answer.json()["entry"]:
        kind, id_ = entry["response"]["location"].split("/")[:2]
        target.existing.setdefault(kind, id_)
    target.task_id = target.existing["Task"]
    created = await client.post("/Subscription", json=subscription_resource())
    assert created.status_code == 201, created.text
    target.subscription_id = created.json()["id"]
    target.existing["Subscription"] = target.subscription_id
    return target


async def test_fuzz_mutated_bodies(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> None:
    target = await setup_target(client, engine, container)
    ran = await fuzz(
        target,
        "mutated-bodies",
        st.tuples(body_cases, headers),
        lambda case: build_body_case(target, case[0], case[1]),
    )
    assert ran >= EXAMPLES_PER_TEST


# -- 2. search query strings -------------------------------------------------------------------

PARAM_NAMES = sorted(
    {p.name for params in SEARCH_PARAMS.values() for p in params}
    | {"_id", "_lastUpdated", "_count", "_cursor", "_include", "_revinclude", "_summary"}
    | {"_total", "_format", "_pretty", "_sort", "_elements", "_has", "_type", "_list", "page"}
)
MODIFIERS = [
    "",
    ":exact",
    ":contains",
    ":not",
    ":missing",
    ":text",
    ":above",
    ":below",
    ":in",
    ":of-type",
    ":identifier",
    ":Patient",
    ":Task",
    ":patient",
    ":",
    "::",
    ":Patient:exact",
]
DATE_PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "E"]
DATES = [
    "2026",
    "2026-11",
    "2026-11-25",
    "2026-11-25T10:00:00-08:00",
    "2026-11-25T10:00Z",
    "2026-11-25T10:00:00.123456789+14:00",
    "2026-02-30",
    "2026-13-01",
    "0000-01-01",
    "9999-12-31T23:59:59Z",
    "10000",
    "2026-11-25T25:61:61Z",
    "2026-11-25T10:00:00+99:99",
    "-2026",
    "now",
]
search_values = st.one_of(
    st.tuples(st.sampled_from(DATE_PREFIXES), st.sampled_from(DATES)).map("".join),
    st.sampled_from(
        [
            "a|b",
            "|b",
            "a|",
            "|",
            "||",
            "http://hl7.org/fhir/sid/us-npi|1427364852",
            "Patient/1",
            "Patient/",
            "urn:uuid:4786d5a2-afbc-4cd9-8892-e64829837dba",
            "http://testserver/fhir/Patient/1",
            "https://directory.example/fhir/PractitionerRole/pr-1",
            "Task:patient",
            "Task:patient:Patient",
            "Task:focus:NotAType",
            "Task:status",
            "Patient:organization",
            "count",
            "true",
            "false",
            "0",
            "-1",
            "501",
            "99999999999999999999999",
            "1e3",
            "a\\,b,c",
            "\\",
            ",",
            ",,,",
            "a,b",
            "requested,accepted",
        ]
    ),
    st.integers().map(str),
    text,
)
search_params = st.lists(
    st.tuples(
        st.tuples(st.one_of(st.sampled_from(PARAM_NAMES), text), st.sampled_from(MODIFIERS)).map(
            "".join
        ),
        search_values,
    ),
    max_size=6,
)
search_cases = st.tuples(
    served_types,
    search_params,
    mostly(st.sampled_from(["get", "post"]), st.just("post-form-wrong"), one_in=6),
    mostly(st.just({}), all_headers, one_in=6),
)


def build_search(case: tuple[Any, ...]) -> Call:
    resource_type, params, how, extra = case
    path = f"/{quote(resource_type, safe='')}"
    if how == "get":
        extra = {k: v for k, v in extra.items() if k != "content-type"}
        return Call("GET", path, params=params, headers=extra)
    form = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    if how == "post":
        extra = {**extra, "content-type": b"application/x-www-form-urlencoded"}
    return Call("POST", f"{path}/_search", headers=extra, body=form.encode())


async def test_fuzz_search(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> None:
    target = await setup_target(client, engine, container)
    ran = await fuzz(target, "search", search_cases, build_search)
    assert ran >= EXAMPLES_PER_TEST


# -- 3. paths, ids, versions, methods and headers --------------------------------------------------

path_cases = st.tuples(
    st.sampled_from(
        [
            "read",
            "vread",
            "history",
            "status",
            "events",
            "metadata",
            "smart",
            "root",
            "existing",
            "segments",
        ]
    ),
    served_types,
    ids,
    st.one_of(st.sampled_from(["1", "2", "0", "-1", "01", "1.0", "99999999999999999999"]), text),
    mostly(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])),
    st.lists(text, min_size=1, max_size=6),
    format_params,
    headers,
)


def build_path(target: Target, case: tuple[Any, ...]) -> Call:
    kind, resource_type, id_, version, method, segments, params, extra = case
    t, i, v = (quote(x, safe="") for x in (resource_type, id_, version))
    if kind == "existing" and target.existing:
        known = sorted(target.existing)
        resource_type = known[len(id_) % len(known)]
        t, i = resource_type, target.existing[resource_type]
    path = {
        "read": f"/{t}/{i}",
        "existing": f"/{t}/{i}",
        "vread": f"/{t}/{i}/_history/{v}",
        "history": f"/{t}/{i}/_history",
        "status": f"/Subscription/{quote(target.subscription_id if len(id_) % 2 else id_, safe='')}/$status",
        "events": f"/Subscription/{quote(target.subscription_id if len(id_) % 2 else id_, safe='')}/$events",
        "metadata": "/metadata",
        "smart": "/.well-known/smart-configuration",
        "root": "",
        "segments": "/" + "/".join(quote(s, safe="") for s in segments),
    }[kind]
    if kind == "events":
        params = [*params, ("eventsSinceNumber", version), ("eventsUntilNumber", id_)]
    body = b"{}" if method in ("POST", "PUT") else None
    return Call(method, path, params=params, headers=extra, body=body, smart=kind == "smart")


async def test_fuzz_paths_and_headers(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> None:
    target = await setup_target(client, engine, container)
    ran = await fuzz(target, "paths-and-headers", path_cases, lambda case: build_path(target, case))
    assert ran >= EXAMPLES_PER_TEST


# -- 4. raw bodies: bytes, broken UTF-8, not JSON, JSON scalars ------------------------------------

raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"true",
            b"0",
            b"-0",
            b"1e999",
            b"NaN",
            b"Infinity",
            b'"Patient"',
            b"[]",
            b"{}",
            b"[{}]",
            b'{"resourceType": "Patient"',
            b'{"resourceType": "Patient",}',
            b"{'resourceType': 'Patient'}",
            b'{"resourceType": "Patient", "resourceType": "Bundle"}',
            b'{"resourceType": "Bundle", "type": "transaction", "entry": null}',
            b'{"resourceType": "Patient", "name": [{"family": "\xff\xfe"}]}',
            b'{"resourceType": "Patient", "name": [{"family": "\\ud800"}]}',
            b'{"resourceType": "Patient", "id": "\\u0000"}',
            b"\xef\xbb\xbf{}",
            b"\x00\x00\x00{",
            b"\xfe\xff\x00{\x00}",
            b'{"a":' * 200 + b"1" + b"}" * 200,
            b"[" * 5000 + b"]" * 5000,
            b'{"resourceType": "Patient", "birthDate": 123456789012345678901234567890}',
            b"<Patient xmlns='http://hl7.org/fhir'/>",
            b"resourceType=Patient",
        ]
    ),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    scalars.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
)
RAW_TARGETS = [
    "",
    "/Patient",
    "/Task",
    "/Bundle",
    "/Patient/fuzz-1",
    "/Claim/$submit",
    "/Task/{task}/$decide",
    "/Patient/_search",
    "/Subscription/{subscription}/$status",
    "token",
]
raw_cases = st.tuples(
    st.sampled_from(RAW_TARGETS),
    raw_bodies,
    mostly(
        st.just(b"application/fhir+json"),
        st.one_of(st.sampled_from(CONTENT_TYPES).map(str.encode), header_bytes),
    ),
)


def build_raw(target: Target, case: tuple[Any, ...]) -> Call:
    where, body, content_type = case
    if where == "token":
        return Call(
            "POST", "/auth/token", headers={"content-type": content_type}, body=body, absolute=True
        )
    path = where.format(task=target.task_id, subscription=target.subscription_id)
    method = "PUT" if path == "/Patient/fuzz-1" else "POST"
    return Call(method, path, headers={"content-type": content_type}, body=body)


async def test_fuzz_raw_bodies(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> None:
    target = await setup_target(client, engine, container)
    ran = await fuzz(target, "raw-bodies", raw_cases, lambda case: build_raw(target, case))
    assert ran >= EXAMPLES_PER_TEST


# -- 5. random JSON resources, not derived from any example ----------------------------------------

random_resources = st.tuples(
    st.sampled_from(list(SERVED_TYPES)),
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                [
                    "id",
                    "meta",
                    "text",
                    "contained",
                    "extension",
                    "identifier",
                    "status",
                    "intent",
                    "subject",
                    "for",
                    "focus",
                    "name",
                    "birthDate",
                    "patient",
                    "entry",
                    "type",
                    "resourceType",
                    "_status",
                    "implicitRules",
                ]
            ),
            st.text(max_size=10),
        ),
        json_values,
        max_size=6,
    ),
    st.sampled_from(["create", "update", "entry"]),
    ids,
)


def build_random_resource(case: tuple[Any, ...]) -> Call:
    resource_type, elements, how, id_ = case
    resource = {"resourceType": resource_type, **elements}
    if how == "create":
        return Call("POST", f"/{resource_type}", body=encode(resource))
    if how == "update":
        return Call("PUT", f"/{resource_type}/{quote(id_, safe='')}", body=encode(resource))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.UUID(int=len(id_))}",
                "resource": resource,
                "request": {"method": "POST", "url": resource_type},
            }
        ],
    }
    return Call("POST", "", body=encode(bundle))


async def test_fuzz_random_resources(
    client: httpx.AsyncClient, engine: AsyncEngine, container: Container
) -> None:
    target = await setup_target(client, engine, container)
    ran = await fuzz(target, "random-resources", random_resources, build_random_resource)
    assert ran >= EXAMPLES_PER_TEST


# -- what the fuzz found, kept as plain regression cases -----------------------------------------


def _decide_with(index: int, key: str, value: Any) -> dict[str, Any]:
    body = decide_parameters("approved-in-network")
    body["parameter"][index][key] = value
    return body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # parse_review hashed an object valueCode (TypeError) -> 500
        ("decide", _decide_with(0, "valueCode", {"value": "denied"})),
        # parse_review called .get on a string valueReference (AttributeError) -> 500
        ("decide", _decide_with(1, "valueReference", "x")),
        # the models read a JSON string holding an object as that object: such bodies were
        # accepted (a Patient stored with "name": ["{}"]), and $decide then failed with a 500
        ("decide", _decide_with(1, "valueReference", "{}")),
        ("decide", _decide_with(4, "valueReference", '{"reference": "Practitioner/1"}')),
        ("Patient", {"resourceType": "Patient", "name": ["{}"]}),
        ("Patient", {"resourceType": "Patient", "managingOrganization": '{"display": "x"}'}),
        ("Task", {"resourceType": "Task", "status": "draft", "intent": "order", "for": "{}"}),
        # fhir_core's Url validator calls .startswith on a number (AttributeError) -> 500
        (
            "Subscription",
            {**subscription_resource(), "channel": {"type": "rest-hook", "endpoint": 28}},
        ),
        ("Patient", {"resourceType": "Patient", "extension": [{"url": "x", "valueUrl": 5}]}),
        # the Bundle code check enumerated a non-list entry (TypeError) -> 500
        ("", {"resourceType": "Bundle", "type": "transaction", "entry": 3}),
        # the batch path listed a non-list entry before validating it (TypeError) -> 500
        ("", {"resourceType": "Bundle", "type": "batch", "entry": 3}),
        ("", {"resourceType": "Bundle", "type": "batch", "entry": True}),
    ],
    ids=[
        "decide-object-code",
        "decide-string-reference",
        "decide-json-string-reference",
        "decide-json-string-provider",
        "json-string-humanname",
        "json-string-reference",
        "json-string-task-for",
        "number-as-url",
        "number-as-valueurl",
        "transaction-entry-not-a-list",
        "batch-entry-a-number",
        "batch-entry-a-boolean",
    ],
)
async def test_fuzz_findings_are_400(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    container: Container,
    path: str,
    body: dict[str, Any],
) -> None:
    target = await setup_target(client, engine, container)
    url = f"/Task/{target.task_id}/$decide" if path == "decide" else f"/{path}" if path else ""
    response = await send(target, Call("POST", url, body=encode(body)))
    assert response.status_code == 400, response.text
