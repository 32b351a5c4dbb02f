"""The read benchmark's floor: a bare FastAPI endpoint that reads one resource row by type and id
with asyncpg (the adapter's PostgreSQL driver) and returns its stored JSON. Same server stack."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

DSN = sys.argv[2] if len(sys.argv) > 2 else "postgresql://postgres@127.0.0.1:5432/test"
pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(DSN, min_size=8, max_size=10)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/floor/{resource_type}/{id}")
async def read(resource_type: str, id: str) -> Response:
    assert pool is not None
    content = await pool.fetchval(
        "SELECT content FROM resources WHERE resource_type = $1 AND id = $2", resource_type, id
    )
    if content is None:
        return Response(status_code=404)
    return Response(content, media_type="application/fhir+json")


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
