"""FHIR JSON answers of the demo's stand-ins (the API's own FhirResponse stays in api/, which
this package does not import: the app factory imports the demo, never the other way round)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir_json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type=FHIR_JSON)
