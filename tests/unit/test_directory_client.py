"""DirectoryClient against a respx-mocked Plan-Net directory: queries, paging, retries, cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.errors import DirectoryUnavailableError
from fhir_adapter.policy.facts import Provider

BASE = "http://directory.test/fhir"
NETWORK = "Organization/medi-cal-network"
TODAY = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
NUCC = "http://nucc.org/provider-taxonomy"
NPI = "http://hl7.org/fhir/sid/us-npi"
ORTHO = "207X00000X"
NETWORK_EXT = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/network-reference"
CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
INCLUDES = {
    "PractitionerRole:practitioner",
    "PractitionerRole:endpoint",
    "PractitionerRole:organization",
    "PractitionerRole:location",
}

MakeClient = Callable[..., DirectoryClient]


# -- directory resources -------------------------------------------------------------------------


def role(
    id: str,
    practitioner: str,
    *,
    active: bool | None = True,
    period: dict[str, str] | None = None,
    network: str | None = NETWORK,
    endpoints: tuple[str, ...] = (),
    organization: str = "Organization/coast-ipa",
    specialty: str = ORTHO,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": id,
        "practitioner": {"reference": f"Practitioner/{practitioner}"},
        "organization": {"reference": organization},
        "specialty": [{"coding": [{"system": NUCC, "code": specialty}]}],
        "endpoint": [{"reference": f"Endpoint/{e}"} for e in endpoints],
    }
    if active is not None:
        resource["active"] = active
    if period is not None:
        resource["period"] = period
    if network is not None:
        resource["extension"] = [{"url": NETWORK_EXT, "valueReference": {"reference": network}}]
    return resource


def practitioner(id: str, npi: str, given: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": id,
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
    }


def endpoint(id: str, address: str, *, code: str = "hl7-fhir-rest") -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": id,
        "status": "active",
        "connectionType": {"system": CONNECTION, "code": code},
        "address": address,
    }


def bundle(
    matches: list[dict[str, Any]],
    includes: list[dict[str, Any]] | None = None,
    *,
    next: str | None = None,
) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": mode},
        }
        for mode, group in (("match", matches), ("include", includes or []))
        for r in group
    ]
    links = [{"relation": "self", "url": f"{BASE}/PractitionerRole"}]
    if next:
        links.append({"relation": "next", "url": next})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})


OKAFOR = practitioner("okafor", "1427364852", "Chidi", "Okafor")
PATEL = practitioner("patel", "1538475968", "Anita", "Patel")
GARCIA = practitioner("garcia", "1649586071", "Rosa", "Garcia")
OKAFOR_DIRECT = endpoint("okafor-direct", "mailto:okafor@direct.example.org", code="direct-project")
OKAFOR_EHR = endpoint("okafor-ehr", "https://ehr.coast-ipa.example.org/fhir")
PATEL_EHR = endpoint("patel-ehr", "https://ehr.coast-ipa.example.org/fhir/patel")
GARCIA_EHR = endpoint("garcia-ehr", "https://ehr.valley.example.org/fhir")


def okafor_provider() -> Provider:
    return Provider(
        role_reference=f"{BASE}/PractitionerRole/okafor-role",
        specialties=frozenset({ORTHO}),
        practitioner_reference=f"{BASE}/Practitioner/okafor",
        npi="1427364852",
        display="Dr. Chidi Okafor",
        organization_reference=f"{BASE}/Organization/coast-ipa",
        in_network=True,
        fhir_endpoint="https://ehr.coast-ipa.example.org/fhir",
    )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_mocked=True)


@pytest.fixture
async def http(router: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient) -> MakeClient:
    def make(**options: Any) -> DirectoryClient:
        options.setdefault("backoff_seconds", 0.001)
        return DirectoryClient(http, BASE, network=NETWORK, **options)

    return make


def params_of(request: httpx.Request) -> dict[str, list[str]]:
    return {k: request.url.params.get_list(k) for k in request.url.params}


# -- the contract §5 query -----------------------------------------------------------------------


async def test_in_network_providers_builds_the_contract_query_and_resolves_includes(
    router: respx.Router, make_client: MakeClient
) -> None:
    other = role(
        "elsewhere-role", "patel", network="Organization/other-network", endpoints=("patel-ehr",)
    )
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle(
                [role("okafor-role", "okafor", endpoints=("okafor-direct", "okafor-ehr")), other],
                [OKAFOR, OKAFOR_DIRECT, OKAFOR_EHR, PATEL, PATEL_EHR],
            )
        )
    )

    found = await make_client().in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.url.path == "/fhir/PractitionerRole"
    params = params_of(request)
    assert params["specialty"] == [f"{NUCC}|{ORTHO}"]
    assert params["network"] == [NETWORK]
    assert set(params["_include"]) == INCLUDES
    assert len(params["_include"]) == len(INCLUDES)
    # Narrow: active roles only, in pages as large as the directory will give.
    assert params["active"] == ["true"]
    assert params["_count"] == ["100"]
    assert set(params) == {"specialty", "network", "active", "_count", "_include"}
    assert found == [okafor_provider()]


async def test_in_network_providers_joins_several_specialties_in_one_parameter(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([])))

    assert await make_client().in_network_providers(["207Q00000X", ORTHO], today=TODAY) == []

    router.assert_all_called()
    assert params_of(route.calls.last.request)["specialty"] == [f"{NUCC}|207Q00000X,{NUCC}|{ORTHO}"]


@pytest.mark.parametrize(
    "changes",
    [
        {"period": {"start": "2015-01-01", "end": "2019-12-31"}},
        {"period": {"start": "2027-01-01"}},
        {"active": False},
        {"network": "Organization/other-network"},
        {"network": None},
    ],
    ids=["period-ended", "period-not-started", "inactive", "other-network", "no-network"],
)
async def test_role_that_is_not_in_network_is_left_out(
    router: respx.Router, make_client: MakeClient, changes: dict[str, Any]
) -> None:
    outside = role("outside-role", "patel", endpoints=("patel-ehr",), **changes)
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(bundle([outside], [PATEL, PATEL_EHR]))
    )
    client = make_client(cache_seconds=0)

    assert await client.in_network_providers([ORTHO], today=TODAY) == []
    (listed,) = await client.providers_with_specialty([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2
    assert listed.role_reference == f"{BASE}/PractitionerRole/outside-role"
    assert listed.npi == "1538475968"
    assert listed.in_network is False


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"active": None},
        {"period": {"start": "2020-01-01", "end": "2030-12-31"}},
        {"period": {"start": "2020-01-01"}},
        {"network": f"{BASE}/{NETWORK}"},
    ],
    ids=["plain", "active-absent", "period-covers-today", "open-ended", "absolute-network"],
)
async def test_role_that_is_in_network_is_kept(
    router: respx.Router, make_client: MakeClient, changes: dict[str, Any]
) -> None:
    router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle(
                [role("patel-role", "patel", endpoints=("patel-ehr",), **changes)],
                [PATEL, PATEL_EHR],
            )
        )
    )

    (found,) = await make_client().in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert found.in_network is True
    assert found.fhir_endpoint == "https://ehr.coast-ipa.example.org/fhir/patel"


# -- paging --------------------------------------------------------------------------------------


async def test_next_links_are_followed_verbatim_and_pages_merged(
    router: respx.Router, make_client: MakeClient
) -> None:
    # A HAPI-style server: the next links point at the base with an opaque page token.
    page2 = "http://directory.test/fhir?_getpages=a1b2-c3d4&_getpagesoffset=1&_count=1&_bundletype=searchset"
    page3 = "http://directory.test/fhir?_getpages=a1b2-c3d4&_getpagesoffset=2&_count=1&_bundletype=searchset"
    route = router.get(host="directory.test").mock(
        side_effect=[
            ok(
                bundle(
                    [role("okafor-role", "okafor", endpoints=("okafor-ehr",))],
                    [OKAFOR, OKAFOR_EHR],
                    next=page2,
                )
            ),
            ok(
                bundle(
                    [role("patel-role", "patel", endpoints=("patel-ehr",))],
                    [PATEL, PATEL_EHR],
                    next=page3,
                )
            ),
            ok(
                bundle(
                    [role("garcia-role", "garcia", endpoints=("garcia-ehr",))], [GARCIA, GARCIA_EHR]
                )
            ),
        ]
    )

    found = await make_client().in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 3
    urls = [str(call.request.url) for call in route.calls]
    assert urls[0].startswith(f"{BASE}/PractitionerRole?")
    assert urls[1:] == [page2, page3]
    assert [p.role_reference.rsplit("/", 1)[-1] for p in found] == [
        "okafor-role",
        "patel-role",
        "garcia-role",
    ]
    assert [p.npi for p in found] == ["1427364852", "1538475968", "1649586071"]
    assert [p.fhir_endpoint for p in found] == [
        OKAFOR_EHR["address"],
        PATEL_EHR["address"],
        GARCIA_EHR["address"],
    ]


async def test_a_directory_that_pages_forever_is_unavailable_after_max_pages(
    router: respx.Router, make_client: MakeClient
) -> None:
    served = 0

    def endless(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        return ok(bundle([], next=f"{BASE}/PractitionerRole?_page={served + 1}"))

    route = router.get(host="directory.test").mock(side_effect=endless)

    with pytest.raises(DirectoryUnavailableError):
        await asyncio.wait_for(
            make_client(max_pages=4).in_network_providers([ORTHO], today=TODAY), timeout=5
        )

    router.assert_all_called()
    assert route.call_count == 4


async def test_a_next_link_to_the_same_page_is_unavailable_not_a_hang(
    router: respx.Router, make_client: MakeClient
) -> None:
    def itself(request: httpx.Request) -> httpx.Response:
        return ok(bundle([role("okafor-role", "okafor")], [OKAFOR], next=str(request.url)))

    route = router.get(f"{BASE}/PractitionerRole").mock(side_effect=itself)

    with pytest.raises(DirectoryUnavailableError):
        await asyncio.wait_for(
            make_client(max_pages=5, cache_seconds=0).in_network_providers([ORTHO], today=TODAY),
            timeout=5,
        )

    router.assert_all_called()
    # The repeat is noticed when the link comes back, not after a page budget is spent.
    assert route.call_count == 2


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_a_transient_status_then_200_succeeds_after_one_retry(
    router: respx.Router, make_client: MakeClient, status: int
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        side_effect=[
            httpx.Response(status),
            ok(
                bundle(
                    [role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR]
                )
            ),
        ]
    )

    found = await make_client().in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2
    assert found == [okafor_provider()]


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError],
)
async def test_a_transport_error_then_200_succeeds_after_one_retry(
    router: respx.Router, make_client: MakeClient, error: type[httpx.TransportError]
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        side_effect=[
            error("directory unreachable (test)"),
            ok(
                bundle(
                    [role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR]
                )
            ),
        ]
    )

    found = await make_client().in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2
    assert found == [okafor_provider()]


@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
async def test_persistent_500_is_unavailable_after_exactly_attempts_calls(
    router: respx.Router, make_client: MakeClient, attempts: int
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=httpx.Response(500))

    with pytest.raises(DirectoryUnavailableError, match="HTTP 500"):
        await make_client(attempts=attempts).in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == attempts


async def test_persistent_connect_error_is_unavailable_after_attempts_calls(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(side_effect=httpx.ConnectError("refused"))

    with pytest.raises(DirectoryUnavailableError, match="ConnectError"):
        await make_client(attempts=3).in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 3


async def test_backoff_grows_between_attempts(
    router: respx.Router, make_client: MakeClient
) -> None:
    # backoff 0.02 s, doubling, jitter x0.5..x1.5: the waits total at least 0.01 + 0.02 + 0.04 s.
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=httpx.Response(503))
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(DirectoryUnavailableError):
        await make_client(attempts=4, backoff_seconds=0.02).in_network_providers(
            [ORTHO], today=TODAY
        )

    elapsed = loop.time() - started
    router.assert_all_called()
    assert route.call_count == 4
    assert 0.07 <= elapsed < 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service temporarily unavailable</body></html>",
        b"",
        b"not json at all",
        b"[]",
        b'"Bundle"',
        b'{"resourceType": "OperationOutcome", "issue": []}',
        b'{"entry": []}',
        b'{"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {}}}',
        b'{"resourceType": "Bundle", "type": "searchset", "entry": "none"}',
        b'{"resourceType": "Bundle", "type": "searchset", "link": "next"}',
    ],
    ids=[
        "html",
        "empty",
        "not-json",
        "json-array",
        "json-string",
        "operation-outcome",
        "no-resource-type",
        "entry-object",
        "entry-string",
        "link-string",
    ],
)
async def test_a_200_that_is_not_a_bundle_is_retried_then_unavailable(
    router: respx.Router, make_client: MakeClient, body: bytes
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=httpx.Response(200, content=body, headers={"Content-Type": "text/html"})
    )

    with pytest.raises(DirectoryUnavailableError, match="not a FHIR Bundle"):
        await make_client(attempts=2).in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2


async def test_a_200_that_is_not_a_bundle_then_a_bundle_succeeds(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        side_effect=[
            httpx.Response(200, content=b"<html>maintenance</html>"),
            ok(
                bundle(
                    [role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR]
                )
            ),
        ]
    )

    assert await make_client().in_network_providers([ORTHO], today=TODAY) == [okafor_provider()]

    router.assert_all_called()
    assert route.call_count == 2


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "searchset", "entry": [42, "x", None]},
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": "PractitionerRole/x"}],
        },
        {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": ["next"]},
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": 42}],
        },
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": "http://[::1"}],
        },
    ],
    ids=[
        "entries-not-objects",
        "resource-not-object",
        "links-not-objects",
        "next-url-not-string",
        "next-url-invalid",
    ],
)
async def test_a_bundle_with_malformed_entries_or_links_is_unavailable(
    router: respx.Router, make_client: MakeClient, body: dict[str, Any]
) -> None:
    # Directory garbage must end as "unavailable" (the request pends), never as an internal error.
    router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(body))

    with pytest.raises(DirectoryUnavailableError):
        await make_client(attempts=2).in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_a_client_error_status_is_not_retried(
    router: respx.Router, make_client: MakeClient, status: int
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=httpx.Response(
            status,
            json={
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid"}],
            },
        )
    )

    with pytest.raises(DirectoryUnavailableError, match=f"HTTP {status}"):
        await make_client(attempts=3).in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 1


# -- cache ---------------------------------------------------------------------------------------


async def test_a_second_identical_query_within_the_cache_time_makes_no_call(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle([role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR])
        )
    )
    client = make_client(cache_seconds=60)

    first = await client.in_network_providers([ORTHO], today=TODAY)
    second = await client.in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 1
    assert first == second == [okafor_provider()]


async def test_a_different_query_is_not_answered_from_the_cache(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([])))
    client = make_client(cache_seconds=60)

    await client.in_network_providers([ORTHO], today=TODAY)
    await client.in_network_providers(["207Q00000X"], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2


async def test_with_cache_seconds_zero_every_query_calls_the_directory(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle([role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR])
        )
    )
    client = make_client(cache_seconds=0)

    await client.in_network_providers([ORTHO], today=TODAY)
    found = await client.in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2
    assert found == [okafor_provider()]


async def test_a_cached_answer_expires_after_the_cache_time(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([])))
    client = make_client(cache_seconds=0.05)

    await client.in_network_providers([ORTHO], today=TODAY)
    await asyncio.sleep(0.1)
    await client.in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2


async def test_a_failed_answer_is_not_cached(router: respx.Router, make_client: MakeClient) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        side_effect=[
            httpx.Response(503),
            ok(
                bundle(
                    [role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR]
                )
            ),
        ]
    )
    client = make_client(attempts=1, cache_seconds=60)

    with pytest.raises(DirectoryUnavailableError):
        await client.in_network_providers([ORTHO], today=TODAY)
    found = await client.in_network_providers([ORTHO], today=TODAY)

    router.assert_all_called()
    assert route.call_count == 2
    assert found == [okafor_provider()]


# -- provider() and roles_by_npi() ---------------------------------------------------------------


async def test_provider_for_a_practitioner_role_url_of_this_directory(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle([role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR])
        )
    )

    found = await make_client().provider(f"{BASE}/PractitionerRole/okafor-role", today=TODAY)

    router.assert_all_called()
    assert route.call_count == 1
    params = params_of(route.calls.last.request)
    assert params["_id"] == ["okafor-role"]
    assert set(params["_include"]) == INCLUDES
    assert found == okafor_provider()


async def test_provider_for_a_relative_practitioner_role_reference(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(
            bundle([role("okafor-role", "okafor", endpoints=("okafor-ehr",))], [OKAFOR, OKAFOR_EHR])
        )
    )

    found = await make_client().provider("PractitionerRole/okafor-role", today=TODAY)

    router.assert_all_called()
    assert params_of(route.calls.last.request)["_id"] == ["okafor-role"]
    assert found == okafor_provider()


@pytest.mark.parametrize("reference", ["Practitioner/patel", f"{BASE}/Practitioner/patel"])
async def test_provider_for_a_practitioner_prefers_the_in_network_role(
    router: respx.Router, make_client: MakeClient, reference: str
) -> None:
    old = role("patel-old-role", "patel", period={"start": "2015-01-01", "end": "2019-12-31"})
    current = role("patel-role", "patel", endpoints=("patel-ehr",))
    route = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(bundle([old, current], [PATEL, PATEL_EHR]))
    )

    found = await make_client().provider(reference, today=TODAY)

    router.assert_all_called()
    assert route.call_count == 1
    params = params_of(route.calls.last.request)
    assert params["practitioner"] == ["Practitioner/patel"]
    assert set(params["_include"]) == INCLUDES
    assert found is not None
    assert found.role_reference == f"{BASE}/PractitionerRole/patel-role"
    assert found.in_network is True
    assert found.npi == "1538475968"
    assert found.display == "Dr. Anita Patel"
    assert found.fhir_endpoint == PATEL_EHR["address"]


async def test_provider_for_a_practitioner_with_only_an_old_role_is_out_of_network(
    router: respx.Router, make_client: MakeClient
) -> None:
    old = role("patel-old-role", "patel", period={"start": "2015-01-01", "end": "2019-12-31"})
    router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([old], [PATEL])))

    found = await make_client().provider("Practitioner/patel", today=TODAY)

    router.assert_all_called()
    assert found is not None
    assert found.role_reference == f"{BASE}/PractitionerRole/patel-old-role"
    assert found.in_network is False


async def test_provider_that_the_directory_does_not_list_is_none(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([])))

    assert await make_client().provider("PractitionerRole/nobody", today=TODAY) is None

    router.assert_all_called()
    assert route.call_count == 1


@pytest.mark.parametrize(
    "reference",
    [
        "https://other-directory.example.org/fhir/PractitionerRole/okafor-role",
        "Organization/coast-ipa",
        f"{BASE}/Patient/123",
    ],
    ids=["other-server", "organization", "patient"],
)
async def test_provider_for_a_reference_we_cannot_look_up_is_none_without_a_call(
    router: respx.Router, make_client: MakeClient, reference: str
) -> None:
    route = router.route().mock(return_value=httpx.Response(500))

    assert await make_client().provider(reference, today=TODAY) is None

    assert route.call_count == 0


async def test_roles_by_npi_finds_the_practitioner_then_its_roles(
    router: respx.Router, make_client: MakeClient
) -> None:
    by_npi = router.get(f"{BASE}/Practitioner").mock(
        return_value=ok(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {
                        "fullUrl": f"{BASE}/Practitioner/patel",
                        "resource": PATEL,
                        "search": {"mode": "match"},
                    }
                ],
            }
        )
    )
    old = role("patel-old-role", "patel", period={"start": "2015-01-01", "end": "2019-12-31"})
    current = role("patel-role", "patel", endpoints=("patel-ehr",))
    roles = router.get(f"{BASE}/PractitionerRole").mock(
        return_value=ok(bundle([current, old], [PATEL, PATEL_EHR]))
    )

    found = await make_client().roles_by_npi("1538475968", today=TODAY)

    router.assert_all_called()
    assert by_npi.call_count == 1
    assert roles.call_count == 1
    assert params_of(by_npi.calls.last.request) == {"identifier": [f"{NPI}|1538475968"]}
    role_params = params_of(roles.calls.last.request)
    assert role_params["practitioner"] == ["Practitioner/patel"]
    assert set(role_params["_include"]) == INCLUDES
    # The Practitioner search happens first, then the role search for the id it found.
    assert router.calls[0].request.url.path == "/fhir/Practitioner"
    assert router.calls[1].request.url.path == "/fhir/PractitionerRole"
    assert [(p.role_reference.rsplit("/", 1)[-1], p.in_network) for p in found] == [
        ("patel-role", True),
        ("patel-old-role", False),
    ]
    assert {p.npi for p in found} == {"1538475968"}


async def test_roles_by_npi_for_an_unknown_npi_is_empty_after_one_call(
    router: respx.Router, make_client: MakeClient
) -> None:
    by_npi = router.get(f"{BASE}/Practitioner").mock(
        return_value=ok({"resourceType": "Bundle", "type": "searchset", "total": 0})
    )

    assert await make_client().roles_by_npi("1999999999", today=TODAY) == []

    router.assert_all_called()
    assert by_npi.call_count == 1
    assert len(router.calls) == 1


# -- reading one resource (PAS response Bundles carry the listed providers) ---------------------


async def test_read_finds_a_directory_resource_by_its_absolute_url(
    router: respx.Router, make_client: MakeClient
) -> None:
    okafor = role("okafor-role", "okafor")
    route = router.get(f"{BASE}/PractitionerRole", params={"_id": "okafor-role"}).mock(
        return_value=ok(bundle([okafor]))
    )
    found = await make_client().read(f"{BASE}/PractitionerRole/okafor-role")
    assert found == okafor
    assert route.call_count == 1


async def test_read_of_another_servers_resource_asks_nobody(
    router: respx.Router, make_client: MakeClient
) -> None:
    assert await make_client().read("http://elsewhere.test/fhir/PractitionerRole/x") is None
    assert not router.calls


async def test_read_of_an_unlisted_resource_is_none(
    router: respx.Router, make_client: MakeClient
) -> None:
    router.get(f"{BASE}/PractitionerRole").mock(return_value=ok(bundle([])))
    assert await make_client().read("PractitionerRole/gone") is None
