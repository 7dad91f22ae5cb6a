"""Agents upload their PBX's recordings here, over plain HTTP with the agent token.

HTTP rather than the agent's WebSocket: each chunk gets its own answer (a status code), a cut
costs at most the chunk in flight, the hub's body limit and slow-client timeouts apply as to any
request, and megabytes of audio never sit in front of the call events on the link.

* ``POST /agent/v1/recordings`` ``{"call_id", "reference", "size", "sha256"}`` → ``{"recording_id",
  "status": "uploading|ready", "offset", "chunk_bytes"}``; 404 when no such recording is
  waiting (the agent drops the file), 413 over the hub's cap (the recording is failed).
* ``PUT /agent/v1/recordings/{id}/data?offset=&size=&sha256=`` with ``X-Chunk-SHA256``: the
  chunk's bytes → ``{"offset"}``; 409 ``offset_mismatch`` (``details.offset`` says where to go on),
  422 ``checksum_mismatch`` (send the chunk again).
* ``POST /agent/v1/recordings/{id}/complete?size=&sha256=`` → ``{"status": "ready", …}``; 422 when
  the whole file does not match (the partial file is dropped; start again).
* ``POST /agent/v1/recordings/refused`` ``{"call_id", "reference", "reason"}``: the agent will not
  send it (outside its recordings directory, over its cap); the recording is failed with the reason.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from callbridge.domain.errors import AuthenticationFailed, StoreUnavailable
from callbridge.hub import Hub
from callbridge.services.agents import authenticate
from callbridge.services.recording_uploads import AgentUploads, Announced
from callbridge.web.deps import HubDep
from callbridge.web.schemas import Id

router = APIRouter(tags=["agents"], include_in_schema=False)


class UploadBegin(BaseModel):
    call_id: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=500)
    size: int = Field(ge=1)
    sha256: str = Field(min_length=64, max_length=64)


class UploadRefused(BaseModel):
    call_id: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=500)
    reason: str = Field(min_length=1, max_length=400)


class UploadStateOut(BaseModel):
    recording_id: int
    status: str
    offset: int
    chunk_bytes: int


async def agent_pbx(hub: Hub, request: Request) -> tuple[str, AgentUploads]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    async with hub.db.unit() as repos:
        record = await authenticate(repos.agents, value if scheme.lower() == "bearer" else "")
        pbx = await repos.pbxes.find(record.pbx)
    if pbx is None or not pbx.enabled:
        raise AuthenticationFailed("agent token refused: its PBX is disabled or gone")
    if hub.uploads is None:
        raise StoreUnavailable("recordings are not stored by this hub")
    return record.pbx, hub.uploads


@router.post("/agent/v1/recordings")
async def begin_upload(body: UploadBegin, request: Request, hub: HubDep) -> UploadStateOut:
    pbx, uploads = await agent_pbx(hub, request)
    state = await uploads.begin(pbx, body.call_id, body.reference, Announced.of(body.size, body.sha256))
    return UploadStateOut(
        recording_id=state.recording_id,
        status=state.status,
        offset=state.offset,
        chunk_bytes=state.chunk_bytes,
    )


@router.post("/agent/v1/recordings/refused", status_code=204)
async def refuse_upload(body: UploadRefused, request: Request, hub: HubDep) -> Response:
    pbx, uploads = await agent_pbx(hub, request)
    await uploads.refuse(pbx, body.call_id, body.reference, body.reason)
    return Response(status_code=204)


@router.put("/agent/v1/recordings/{recording_id}/data")
async def upload_chunk(
    recording_id: Id,
    request: Request,
    hub: HubDep,
    offset: Annotated[int, Query(ge=0)],
    size: Annotated[int, Query(ge=1)],
    sha256: Annotated[str, Query(min_length=64, max_length=64)],
    x_chunk_sha256: Annotated[str, Header(min_length=64, max_length=64)],
) -> dict[str, int]:
    pbx, uploads = await agent_pbx(hub, request)
    announced = Announced.of(size, sha256)
    data = await request.body()  # bounded by the hub's body limit (BodyLimit)
    held = await uploads.write(pbx, recording_id, announced, offset, data, x_chunk_sha256)
    return {"offset": held}


@router.post("/agent/v1/recordings/{recording_id}/complete")
async def complete_upload(
    recording_id: Id,
    request: Request,
    hub: HubDep,
    size: Annotated[int, Query(ge=1)],
    sha256: Annotated[str, Query(min_length=64, max_length=64)],
) -> dict[str, object]:
    pbx, uploads = await agent_pbx(hub, request)
    ready = await uploads.complete(pbx, recording_id, Announced.of(size, sha256))
    return {
        "recording_id": ready.id,
        "status": ready.status.value,
        "size_bytes": ready.size_bytes,
        "sha256": ready.sha256,
    }
