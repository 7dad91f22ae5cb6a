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
    """Readiness: the database answers."""
    if await hub.db.ping():
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"error": {"code": "database_unavailable", "message": "the database does not answer"}},
        status_code=503,
    )
