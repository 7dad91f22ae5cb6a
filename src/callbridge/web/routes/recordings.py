"""Recordings: the audio of a call, served with HTTP Range to whoever may see the call; shared
links that play without signing in; legal holds; retention rules."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from callbridge.domain.errors import Conflict, Forbidden, NotFound
from callbridge.domain.events import Direction
from callbridge.domain.recordings import (
    SHARE_DEFAULT_DAYS,
    SHARE_MAX_DAYS,
    Recording,
    RecordingStatus,
    RetentionRule,
    Share,
    byte_range,
)
from callbridge.services.recordings import RecordingStorage
from callbridge.store.repos import Repos
from callbridge.web.deps import AdminUser, CurrentUser, HubDep, ManagerUser, RepoDep, client_address
from callbridge.web.schemas import Id

router = APIRouter(tags=["recordings"])


class PbxCopyOut(BaseModel):
    """After a purge of a recording an agent uploaded: what became of the PBX's own copy."""

    # waiting: the agent has not answered yet (it is asked when it connects); deleted;
    # not_found: the agent found no such file; refused: the agent would not delete it (detail).
    status: str
    detail: str | None
    at: datetime | None


class RecordingOut(BaseModel):
    id: int
    status: RecordingStatus
    duration_seconds: float | None
    size_bytes: int | None
    content_type: str | None
    # The hub's own address for the audio (never the PBX's); null until the audio is stored.
    audio_url: str | None
    # Why a recording is not ready (pending: the last fetch's problem; failed: why it gave up;
    # purged: the retention rule).
    reason: str | None
    # Under legal hold: retention never purges it.
    held: bool = False
    # Purged recordings an agent uploaded: the PBX's copy (null otherwise).
    pbx_copy: PbxCopyOut | None = None

    @classmethod
    def of(cls, r: Recording) -> RecordingOut:
        ready = r.status is RecordingStatus.READY
        return cls(
            id=r.id,
            status=r.status,
            duration_seconds=r.duration_seconds,
            size_bytes=r.size_bytes if ready else None,
            content_type=r.content_type or None,
            audio_url=f"/api/v1/recordings/{r.id}/audio" if ready else None,
            reason=r.reason or None,
            held=r.held,
            pbx_copy=PbxCopyOut(status=r.pbx_copy, detail=r.pbx_copy_detail or None, at=r.pbx_copy_at)
            if r.pbx_copy
            else None,
        )


async def visible_recording(recording_id: int, user: CurrentUser, repos: Repos) -> Recording:
    """The recording, when its call is one ``user`` may see (else 404, as for a missing one)."""
    recording = await repos.recordings.get(recording_id)
    if recording is None or await repos.calls.find(recording.call_id, viewer=user) is None:
        raise NotFound(f"no recording with id {recording_id}")
    return recording


@router.get(
    "/api/v1/recordings/{recording_id:int}/audio",
    responses={
        200: {"description": "The whole recording.", "content": {"audio/wav": {}, "audio/mpeg": {}}},
        206: {"description": "The bytes a `Range: bytes=first-last` header asked for."},
        404: {"description": "No such recording, one not stored yet, or one of a call you may not see."},
        416: {"description": "The range starts past the end of the file."},
    },
)
async def recording_audio(
    recording_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The recording's audio. Supports a single byte range (206); a range past the end is 416."""
    recording = await visible_recording(recording_id, user, repos)
    return await _audio(recording, hub.storage, range_header, private=True)


async def _started(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the first chunk before the answer starts, so that a store that cannot be read (an
    S3 server down, an object gone) is a clear error answer rather than a cut-off body."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    return rest()


async def _audio(
    recording: Recording, storage: RecordingStorage | None, range_header: str | None, *, private: bool
) -> Response:
    if recording.status is not RecordingStatus.READY or not recording.storage_key or storage is None:
        raise NotFound(f"recording {recording.id} has no audio yet ({recording.status.value})")
    return await serve_audio(
        storage,
        recording.storage_key,
        recording.content_type,
        recording.sha256,
        range_header,
        private=private,
    )


async def serve_audio(
    storage: RecordingStorage,
    key: str,
    content_type: str,
    sha256: str,
    range_header: str | None,
    *,
    private: bool,
) -> Response:
    """Stored audio, whole (200) or the single byte range asked for (206); past the end: 416.
    Recordings and voicemails are served by it."""
    size = await storage.size(key)
    span = byte_range(range_header, size)
    headers = {
        "accept-ranges": "bytes",
        # A shared link's audio must not outlive a revocation in a shared cache.
        "cache-control": "private, max-age=3600" if private else "private, no-store",
        "etag": f'"{sha256[:32]}"' if sha256 else "",
    }
    headers = {k: v for k, v in headers.items() if v}
    media_type = content_type or "application/octet-stream"
    if span is None:
        headers["content-length"] = str(size)
        body = await _started(storage.open(key))
        return StreamingResponse(body, media_type=media_type, headers=headers)
    first, last = span
    headers["content-range"] = f"bytes {first}-{last}/{size}"
    headers["content-length"] = str(last - first + 1)
    return StreamingResponse(
        await _started(storage.read_range(key, first, last)),
        status_code=206,
        media_type=media_type,
        headers=headers,
    )


# -- shares ---------------------------------------------------------------------------------------


class ShareIn(BaseModel):
    expires_in_days: int = Field(default=SHARE_DEFAULT_DAYS, ge=1, le=SHARE_MAX_DAYS)


class ShareCreatedOut(BaseModel):
    id: int
    # The link itself: shown once (only a hash of its token is kept).
    url: str
    expires_at: datetime


class SharePlayOut(BaseModel):
    at: datetime
    address: str
    user_agent: str


class ShareOut(BaseModel):
    id: int
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    active: bool
    # The newest plays first (at most 100).
    plays: list[SharePlayOut]

    @classmethod
    def of(cls, s: Share, at: datetime) -> ShareOut:
        return cls(
            id=s.id,
            created_by=s.created_by,
            created_at=s.created_at,
            expires_at=s.expires_at,
            revoked_at=s.revoked_at,
            active=s.usable(at),
            plays=[SharePlayOut(at=p.at, address=p.address, user_agent=p.user_agent) for p in s.plays],
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@router.post("/api/v1/recordings/{recording_id:int}/shares", status_code=201)
async def create_share(
    recording_id: Id, body: ShareIn, request: Request, user: CurrentUser, repos: RepoDep
) -> ShareCreatedOut:
    """A link that plays the recording without signing in, until it expires (default 7 days,
    1 to 90) or is revoked. Whoever may see the call may share it."""
    recording = await visible_recording(recording_id, user, repos)
    if recording.status is not RecordingStatus.READY:
        raise Conflict(f"recording {recording_id} has no stored audio to share ({recording.status.value})")
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    share = await repos.shares.add(recording_id, token_hash(token), user.id, expires_at)
    url = str(request.base_url).rstrip("/") + f"/shared/{token}"
    return ShareCreatedOut(id=share.id, url=url, expires_at=share.expires_at)


@router.get("/api/v1/recordings/{recording_id:int}/shares")
async def list_shares(recording_id: Id, user: CurrentUser, repos: RepoDep) -> list[ShareOut]:
    """The recording's shares (revoked and expired ones too), each with its plays."""
    await visible_recording(recording_id, user, repos)
    at = datetime.now(UTC)
    return [ShareOut.of(s, at) for s in await repos.shares.for_recording(recording_id)]


@router.delete("/api/v1/recordings/{recording_id:int}/shares/{share_id:int}", status_code=204)
async def revoke_share(recording_id: Id, share_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    """Revoke a share: its link answers 410 from now on."""
    await visible_recording(recording_id, user, repos)
    share = await repos.shares.get(share_id)
    if share is None or share.recording_id != recording_id:
        raise NotFound(f"no share with id {share_id} for recording {recording_id}")
    await repos.shares.revoke(share_id)
    return Response(status_code=204)


_GONE = "This link has expired or was revoked; ask whoever shared it for a new one."


def _gone(request: Request) -> HTMLResponse:
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, "shared.html", {"gone": _GONE}, status_code=410
    )
    response.headers["cache-control"] = "no-store"
    return response


async def _shared(token: str, repos: Repos) -> tuple[Share, Recording] | None:
    if not 20 <= len(token) <= 100:
        return None  # forged: same answer as revoked or expired
    share = await repos.shares.by_token_hash(token_hash(token))
    if share is None or not share.usable(datetime.now(UTC)):
        return None
    recording = await repos.recordings.get(share.recording_id)
    if recording is None or recording.status is not RecordingStatus.READY:
        return None  # purged since: the link no longer plays
    return share, recording


@router.get("/shared/{token}", include_in_schema=False, response_model=None)
async def shared_page(token: str, request: Request, repos: RepoDep) -> HTMLResponse:
    """The page of a shared link: a player and a minimal label, nothing else of the call log."""
    found = await _shared(token, repos)
    if found is None:
        return _gone(request)
    share, recording = found
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "shared.html",
        {
            "audio_url": f"/shared/{token}/audio",
            "label": f"Call recording {recording.created_at:%Y-%m-%d}",
            "expires_at": share.expires_at,
        },
    )
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["x-robots-tag"] = "noindex"
    return response


@router.get("/shared/{token}/audio", include_in_schema=False, response_model=None)
async def shared_audio(
    token: str,
    request: Request,
    repos: RepoDep,
    hub: HubDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """A shared link's audio, with Range. A request from the first byte is a play, and logged."""
    found = await _shared(token, repos)
    if found is None:
        return _gone(request)
    share, recording = found
    if range_header is None or range_header.replace(" ", "").lower() in ("bytes=0-", "bytes=0-1"):
        await repos.shares.log_play(share.id, client_address(request), request.headers.get("user-agent", ""))
    return await _audio(recording, hub.storage, range_header, private=False)


# -- legal hold -----------------------------------------------------------------------------------


class HoldOut(BaseModel):
    id: int
    held: bool
    held_by: str | None
    held_at: datetime | None


async def _set_hold(recording_id: int, held: bool, user: CurrentUser, repos: Repos) -> HoldOut:
    await visible_recording(recording_id, user, repos)
    if not user.sees_all_calls:
        raise Forbidden("only managers and admins may put a recording on legal hold or lift it")
    await repos.recordings.set_hold(recording_id, held, user.name)
    after = await repos.recordings.get(recording_id)
    assert after is not None
    return HoldOut(id=after.id, held=after.held, held_by=after.held_by or None, held_at=after.held_at)


@router.post("/api/v1/recordings/{recording_id:int}/hold")
async def hold_recording(recording_id: Id, user: CurrentUser, repos: RepoDep) -> HoldOut:
    """Legal hold: retention never purges the recording until the hold is lifted (managers, admins)."""
    return await _set_hold(recording_id, True, user, repos)


@router.delete("/api/v1/recordings/{recording_id:int}/hold")
async def release_recording(recording_id: Id, user: CurrentUser, repos: RepoDep) -> HoldOut:
    """Lift the legal hold (managers, admins)."""
    return await _set_hold(recording_id, False, user, repos)


# -- retention rules --------------------------------------------------------------------------------


class RetentionRuleIn(BaseModel):
    older_than_days: int = Field(ge=1, le=36500)
    direction: Direction | None = None
    tag: str | None = Field(default=None, max_length=40)
    pbx: str | None = Field(default=None, max_length=64)


class RetentionRuleOut(BaseModel):
    id: int
    older_than_days: int
    direction: str | None
    tag: str | None
    pbx: str | None

    @classmethod
    def of(cls, r: RetentionRule) -> RetentionRuleOut:
        return cls(
            id=r.id,
            older_than_days=r.older_than_days,
            direction=r.direction or None,
            tag=r.tag or None,
            pbx=r.pbx or None,
        )


@router.get("/api/v1/retention-rules")
async def list_retention_rules(user: ManagerUser, repos: RepoDep) -> list[RetentionRuleOut]:
    """The rules the daily purge applies (a recording matching any of them is purged)."""
    return [RetentionRuleOut.of(r) for r in await repos.retention.rules()]


@router.post("/api/v1/retention-rules", status_code=201)
async def add_retention_rule(body: RetentionRuleIn, user: AdminUser, repos: RepoDep) -> RetentionRuleOut:
    """Purge the recordings of calls older than ``older_than_days`` (optionally only of one
    direction, contact/company tag, or phone system). Admins only."""
    rule = await repos.retention.add(
        body.older_than_days,
        body.direction.value if body.direction else "",
        (body.tag or "").strip(),
        (body.pbx or "").strip(),
    )
    return RetentionRuleOut.of(rule)


@router.delete("/api/v1/retention-rules/{rule_id:int}", status_code=204)
async def remove_retention_rule(rule_id: Id, user: AdminUser, repos: RepoDep) -> Response:
    if not await repos.retention.remove(rule_id):
        raise NotFound(f"no retention rule with id {rule_id}")
    return Response(status_code=204)
