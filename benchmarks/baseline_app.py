"""The benchmark's baseline: a bare FastAPI endpoint that only parses a Bundle with fhir.resources
(through the adapter's one model module) and returns it. Same server stack as the adapter."""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from fhir_adapter.fhir.resources import model_class

app = FastAPI()


@app.post("/baseline")
async def parse_and_return(request: Request) -> Response:
    bundle = model_class("Bundle").model_validate(orjson.loads(await request.body()))
    return Response(
        bundle.model_dump_json(by_alias=True, exclude_none=True), media_type="application/fhir+json"
    )


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
