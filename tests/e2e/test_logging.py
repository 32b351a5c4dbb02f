"""No PHI in logs: a full flow at DEBUG leaves no patient name, birth date, identifier or diagnosis."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


async def test_a_full_flow_logs_no_patient_data(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fhir_adapter")
    secrets: set[str] = set()
    for name in ("in-network-specialist-care", "denied", "review", "out-of-network"):
        bundle = json.loads((EXAMPLES / "requests" / f"{name}.json").read_text())
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                secrets |= {
                    resource["birthDate"],
                    resource["name"][0]["family"],
                    *resource["name"][0]["given"],
                }
                secrets |= {i["value"] for i in resource["identifier"]}
            if resource["resourceType"] == "Condition":
                secrets.add(resource["code"]["text"])
        assert (await client.post("", json=bundle)).status_code == 200
        # Bad input whose values would be tempting to echo into a log line.
        bad = {
            "resourceType": "Patient",
            "name": [{"family": "Zyxwvut"}],
            "birthDate": "1901-02-03",
            "gender": "nope",
        }
        assert (await client.post("/Patient", json=bad)).status_code == 400
        assert (await client.get("/Patient", params={"family": "Qwertyuiop"})).status_code == 200
    secrets |= {"Zyxwvut", "1901-02-03", "Qwertyuiop"}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the flow should log something"
    for secret in secrets:
        assert secret not in logged, secret
