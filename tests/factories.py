"""Test data built from the canonical examples in examples/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).parents[1] / "examples"


def example_request(name: str, suffix: str = "") -> dict[str, Any]:
    """An example request Bundle; with `suffix`, under new identifiers, so it is a new request."""
    bundle: dict[str, Any] = json.loads((EXAMPLES / "requests" / f"{name}.json").read_text())
    if suffix:
        for entry in bundle["entry"]:
            resource, request = entry["resource"], entry["request"]
            if resource["resourceType"] in ("ServiceRequest", "Task", "Patient"):
                for identifier in resource.get("identifier", []):
                    identifier["value"] += suffix
                if request.get("ifNoneExist"):
                    request["ifNoneExist"] += suffix
    return bundle
