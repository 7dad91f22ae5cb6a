"""Voicemails: the inbox API (list, audio with Range, heard, delete) and the agent's side
(announce a message, upload its audio in checked chunks: the same protocol as recordings)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from callbridge.domain.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from callbridge.domain.users import User
from callbridge.domain.voicemails import Voicemail
from callbridge.services.recording_uploads import Announced
from callbridge.services.voicemails import MessageLeft, Voicemails, pbx_delete_refusal
from callbridge.store.repos import Repos
from callbridge.web.deps import CurrentUser, HubDep, RepoDep
from callbridge.web.pages import render
from callbridge.web.routes.agent_uploads import agent_pbx
from callbridge.web.routes.calls import TranscriptOut
from callbridge.web.routes.recordings import serve_audio
from callbridge.web.schemas import Id, Page

router = APIRouter()


# -- the inbox ------------------------------------------------------------------------------------


class VoicemailContactOut(BaseModel):
    id: int
    name: str
    company: str | None


class VoicemailOut(BaseModel):
    id: int
    pbx: str
    mailbox: str
    caller_number: str
    caller_name: str
    contact: VoicemailContactOut | None
    received_at: datetime
    duration_seconds: int
    status: Literal["new", "heard"]
    heard: bool
    call_id: int | None
    audio_status: Literal["pending", "ready", "failed"]
    audio_reason: str | None = Field(description="Why the audio is not there (pending or failed).")
    audio_url: str | None = Field(description="The hub's address for the audio; null until it is stored.")
    transcript: TranscriptOut | None = Field(
        default=None, description="Made on the hub where transcription is on; null until then."
    )


class VoicemailUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heard: bool


async def _out(v: Voicemail, repos: Repos) -> VoicemailOut:
    contact = None
    if v.contact_id is not None:
        found = await repos.directory.find(v.contact_id)
        if found is not None:
            contact = VoicemailContactOut(id=found.id, name=found.name, company=found.company_name or None)
    ready = v.audio_status.value == "ready"
    return VoicemailOut(
        id=v.id,
        pbx=v.pbx,
        mailbox=v.mailbox,
        caller_number=v.caller_number,
        caller_name=v.caller_name,
        contact=contact,
        received_at=v.received_at,
        duration_seconds=v.duration_seconds,
        status="heard" if v.heard else "new",
        heard=v.heard,
        call_id=v.call_id,
        audio_status=v.audio_status.value,
        audio_reason=v.audio_reason or None,
        audio_url=f"/api/v1/voicemails/{v.id}/audio" if ready else None,
        transcript=TranscriptOut.of(v.transcript) if v.transcript else None,
    )


async def visible_voicemail(voicemail_id: int, user: User, repos: Repos) -> Voicemail:
    """The voicemail, when it is in a mailbox ``user`` may see (else 404, as for a missing one)."""
    found = await repos.voicemails.visible(voicemail_id, user)
    if found is None:
        raise NotFound(f"no voicemail with id {voicemail_id}")
    return found


@router.get("/api/v1/voicemails", tags=["voicemails"], summary="Voicemails, the newest first")
async def list_voicemails(
    user: CurrentUser,
    repos: RepoDep,
    mailbox: Annotated[str | None, Query(max_length=128, description="'7001' or '7001@default'")] = None,
    status: Annotated[
        Literal["new", "heard"] | None, Query(description="new (not heard yet) or heard")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[VoicemailOut]:
    """A user sees the voicemails of the mailboxes of their extensions; managers and admins all."""
    if mailbox is not None and not mailbox.strip():
        raise InvalidInput("mailbox is empty: leave it out for every mailbox, or give one like 7001")
    found, after = await repos.voicemails.search(
        mailboxes=await repos.voicemails.mailboxes_of(user),
        mailbox=mailbox,
        heard=None if status is None else status == "heard",
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[await _out(v, repos) for v in found], next=after)


@router.get("/api/v1/voicemails/{voicemail_id:int}", tags=["voicemails"])
async def get_voicemail(voicemail_id: Id, user: CurrentUser, repos: RepoDep) -> VoicemailOut:
    return await _out(await visible_voicemail(voicemail_id, user, repos), repos)


@router.get(
    "/api/v1/voicemails/{voicemail_id:int}/audio",
    tags=["voicemails"],
    responses={
        200: {"description": "The whole message.", "content": {"audio/wav": {}}},
        206: {"description": "The bytes a `Range: bytes=first-last` header asked for."},
        404: {"description": "No such voicemail, one whose audio is not stored yet, or another's."},
        416: {"description": "The range starts past the end of the file."},
    },
)
async def voicemail_audio(
    voicemail_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The message's audio. Supports a single byte range (206); a range past the end is 416."""
    v = await visible_voicemail(voicemail_id, user, repos)
    if v.audio_status.value != "ready" or not v.storage_key or hub.storage is None:
        reason = f": {v.audio_reason}" if v.audio_reason else ""
        raise NotFound(f"voicemail {v.id} has no audio yet ({v.audio_status.value}{reason})")
    return await serve_audio(hub.storage, v.storage_key, v.content_type, v.sha256, range_header, private=True)


@router.patch("/api/v1/voicemails/{voicemail_id:int}", tags=["voicemails"])
async def update_voicemail(
    voicemail_id: Id, body: VoicemailUpdate, user: CurrentUser, repos: RepoDep
) -> VoicemailOut:
    """Mark a message heard (``{"heard": true}``) or new again (``false``)."""
    v = await visible_voicemail(voicemail_id, user, repos)
    await repos.voicemails.set_heard(v.id, body.heard)
    changed = await repos.voicemails.get(v.id)
    assert changed is not None
    return await _out(changed, repos)


class PbxDeleteOut(BaseModel):
    id: int
    pbx_copy: Literal["waiting"]


@router.delete(
    "/api/v1/voicemails/{voicemail_id:int}",
    status_code=204,
    tags=["voicemails"],
    responses={202: {"model": PbxDeleteOut, "description": "deleted here; the PBX's copy is being deleted"}},
)
async def delete_voicemail(
    voicemail_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    at_pbx: Annotated[bool, Query(description="delete the message at the phone system too")] = False,
) -> Response:
    """Delete the message and its stored audio from callbridge; the PBX's copy stays, unless
    ``at_pbx=true``: then the PBX's agent deletes it too (asked now, or when it is back: 202)."""
    v = await visible_voicemail(voicemail_id, user, repos)
    if at_pbx:
        refusal = pbx_delete_refusal(await repos.pbxes.find(v.pbx))
        if refusal:
            raise Conflict(f"voicemail {v.id} cannot be deleted at the phone system: {refusal}")
    await repos.voicemails.remove(v.id, pbx_copy=at_pbx)
    await repos.commit()
    if v.storage_key and hub.storage is not None:
        await hub.storage.delete(v.storage_key)
    if not at_pbx:
        return Response(status_code=204)
    if hub.voicemail_pbx_copies is not None:
        hub.voicemail_pbx_copies.wake()
    return JSONResponse(PbxDeleteOut(id=v.id, pbx_copy="waiting").model_dump(), status_code=202)


# -- the inbox page -------------------------------------------------------------------------------


@router.get("/voicemails", include_in_schema=False)
async def voicemails_page(
    request: Request,
    user: CurrentUser,
    repos: RepoDep,
    status: Annotated[Literal["new", "heard"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """The messages of the user's mailboxes (every mailbox for managers), with the player."""
    found, after = await repos.voicemails.search(
        mailboxes=await repos.voicemails.mailboxes_of(user),
        heard=None if status is None else status == "heard",
        cursor=cursor,
        limit=50,
    )
    items = [await _out(v, repos) for v in found]
    return render(request, "voicemails.html", items=items, status=status, next=after)


@router.post("/voicemails/{voicemail_id:int}/heard", include_in_schema=False)
async def voicemail_heard_form(
    voicemail_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    heard: Annotated[Literal["yes", "no"], Form()],
) -> Response:
    v = await visible_voicemail(voicemail_id, user, repos)
    await repos.voicemails.set_heard(v.id, heard == "yes")
    return RedirectResponse("/voicemails", status_code=303)


# -- the agent's side -----------------------------------------------------------------------------


class VoicemailAnnounce(BaseModel):
    mailbox: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=500)
    caller_number: str = Field(default="", max_length=64)
    caller_name: str = Field(default="", max_length=128)
    received_at: AwareDatetime
    duration_seconds: int = Field(default=0, ge=0, le=86_400)
    call_id: str = Field(default="", max_length=128, description="The PBX's call id (Linkedid), if known.")
    size: int | None = Field(default=None, ge=1)
    sha256: str | None = Field(default=None, min_length=64, max_length=64)


class VoicemailRefused(BaseModel):
    reference: str = Field(min_length=1, max_length=500)
    reason: str = Field(min_length=1, max_length=400)


class VoicemailUploadOut(BaseModel):
    voicemail_id: int
    created: bool
    # "waiting": no audio announced; "uploading": send from offset; "ready": the hub has it.
    status: str
    offset: int
    chunk_bytes: int


async def _agent(hub: HubDep, request: Request) -> tuple[str, Voicemails]:
    pbx, _ = await agent_pbx(hub, request)
    if hub.voicemails is None:
        raise StoreUnavailable("voicemails are not stored by this hub")
    return pbx, hub.voicemails


@router.post("/agent/v1/voicemails", include_in_schema=False)
async def announce_voicemail(body: VoicemailAnnounce, request: Request, hub: HubDep) -> VoicemailUploadOut:
    pbx, voicemails = await _agent(hub, request)
    if (body.size is None) != (body.sha256 is None):
        raise InvalidInput("give both size and sha256 of the audio, or neither")
    announced = Announced.of(body.size, body.sha256) if body.size is not None and body.sha256 else None
    message = MessageLeft(
        mailbox=body.mailbox.strip(),
        reference=body.reference,
        caller_number=body.caller_number.strip(),
        caller_name=body.caller_name.strip(),
        received_at=body.received_at,
        duration_seconds=body.duration_seconds,
        pbx_call_id=body.call_id.strip(),
    )
    v, created, state = await voicemails.announce(pbx, message, announced)
    if state is None:
        return VoicemailUploadOut(
            voicemail_id=v.id, created=created, status="waiting", offset=0, chunk_bytes=voicemails.chunk_bytes
        )
    return VoicemailUploadOut(
        voicemail_id=v.id,
        created=created,
        status=state.status,
        offset=state.offset,
        chunk_bytes=state.chunk_bytes,
    )


@router.post("/agent/v1/voicemails/refused", status_code=204, include_in_schema=False)
async def refuse_voicemail(body: VoicemailRefused, request: Request, hub: HubDep) -> Response:
    pbx, voicemails = await _agent(hub, request)
    await voicemails.refuse(pbx, body.reference, body.reason)
    return Response(status_code=204)


@router.put("/agent/v1/voicemails/{voicemail_id}/data", include_in_schema=False)
async def voicemail_chunk(
    voicemail_id: Id,
    request: Request,
    hub: HubDep,
    offset: Annotated[int, Query(ge=0)],
    size: Annotated[int, Query(ge=1)],
    sha256: Annotated[str, Query(min_length=64, max_length=64)],
    x_chunk_sha256: Annotated[str, Header(min_length=64, max_length=64)],
) -> dict[str, int]:
    pbx, voicemails = await _agent(hub, request)
    announced = Announced.of(size, sha256)
    data = await request.body()
    if not data:
        raise InvalidInput("an empty chunk")
    return {"offset": await voicemails.write(pbx, voicemail_id, announced, offset, data, x_chunk_sha256)}


@router.post("/agent/v1/voicemails/{voicemail_id}/complete", include_in_schema=False)
async def voicemail_complete(
    voicemail_id: Id,
    request: Request,
    hub: HubDep,
    size: Annotated[int, Query(ge=1)],
    sha256: Annotated[str, Query(min_length=64, max_length=64)],
) -> dict[str, object]:
    pbx, voicemails = await _agent(hub, request)
    ready = await voicemails.complete(pbx, voicemail_id, Announced.of(size, sha256))
    return {"voicemail_id": ready.id, "status": ready.audio_status.value, "size_bytes": ready.size_bytes}
