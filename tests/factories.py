"""Test data built from the canonical examples in examples/."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

from fhir_adapter.fhir.references import iter_references

EXAMPLES = Path(__file__).parents[1] / "examples"


def example_request(name: str, suffix: str = "") -> dict[str, Any]:
    """An example request Bundle; with `suffix`, under new identifiers, so it is a new request."""
    bundle: dict[str, Any] = json.loads((EXAMPLES / "requests" / f"{name}.json").read_text())
    if suffix:
        for entry in bundle["entry"]:
            resource, request = entry["resource"], entry["request"]
            # the member's own resources; the professionals stay the example's (conditional)
            if resource["resourceType"] in (
                "ServiceRequest",
                "Task",
                "Patient",
                "Coverage",
                "Condition",
            ):
                for identifier in resource.get("identifier", []):
                    identifier["value"] += suffix
                if request.get("ifNoneExist"):
                    request["ifNoneExist"] += suffix
    return bundle


def unresolved_references(bundle: dict[str, Any], index: int = 0) -> list[str]:
    """The references in `bundle.entry[index]` that resolve to no entry of the Bundle (relative
    ones against the entry's own fullUrl base, as FHIR Bundle resolution says)."""
    entry = bundle["entry"][index]
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    base = entry["fullUrl"].rsplit("/", 2)[0]
    missing = []
    for path, ref in iter_references(entry["resource"], entry["resource"]["resourceType"]):
        target = ref["reference"]
        if not target.startswith(("urn:", "http://", "https://", "#")):
            target = f"{base}/{target}"
        if target not in full_urls:
            missing.append(f"{path} -> {ref['reference']}")
    return missing


def pas_inquiry(request: dict[str, Any]) -> dict[str, Any]:
    """A PAS Inquiry Request Bundle about a PAS request Bundle: its Claim (the request's number,
    member, provider, insurer, coverage; no items named) and the resources those reference."""
    claim = copy.deepcopy(request["entry"][0]["resource"])
    claim.pop("item", None)
    claim.pop("related", None)
    wanted = {
        claim["patient"]["reference"],
        claim["provider"]["reference"],
        claim["insurer"]["reference"],
        *(i["coverage"]["reference"] for i in claim.get("insurance") or []),
    }
    full_url = request["entry"][0]["fullUrl"]
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:trnorg:inquiry", "value": str(uuid.uuid4())},
        "type": "collection",
        "entry": [{"fullUrl": full_url, "resource": claim}]
        + [copy.deepcopy(e) for e in request["entry"][1:] if e["fullUrl"] in wanted],
    }
