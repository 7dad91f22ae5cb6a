from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

import callbridge
from callbridge.web.deps import HubDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": callbridge.__version__}


@router.get("/readyz")
async def readyz(hub: HubDep) -> JSONResponse:
    """Readiness: the database answers and takes writes (a write is committed: a database that
    is full or read-only still answers ``SELECT 1``, and would lose what the hub is sent)."""
    if not await hub.db.ping():
        message = "the database does not answer"
    elif not await hub.db.can_write():
        message = "the database answers but does not take writes (full, read-only?)"
    else:
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"error": {"code": "database_unavailable", "message": message}},
        status_code=503,
        headers={"Retry-After": "1"},
    )
