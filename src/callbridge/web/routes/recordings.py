"""Recordings: the audio of a call, served with HTTP Range to whoever may see the call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from callbridge.domain.errors import NotFound
from callbridge.domain.recordings import Recording, RecordingStatus, byte_range
from callbridge.store.repos import Repos
from callbridge.web.deps import CurrentUser, HubDep, RepoDep
from callbridge.web.schemas import Id

router = APIRouter(tags=["recordings"])


class RecordingOut(BaseModel):
    id: int
    status: RecordingStatus
    duration_seconds: float | None
    size_bytes: int | None
    content_type: str | None
    # The hub's own address for the audio (never the PBX's); null until the audio is stored.
    audio_url: str | None
    # Why a recording is not ready (pending: the last fetch's problem; failed: why it gave up).
    reason: str | None

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
    storage = hub.storage
    if recording.status is not RecordingStatus.READY or not recording.storage_key or storage is None:
        raise NotFound(f"recording {recording_id} has no audio yet ({recording.status.value})")
    size = await storage.size(recording.storage_key)
    span = byte_range(range_header, size)
    headers = {
        "accept-ranges": "bytes",
        "cache-control": "private, max-age=3600",
        "etag": f'"{recording.sha256[:32]}"' if recording.sha256 else "",
    }
    headers = {k: v for k, v in headers.items() if v}
    media_type = recording.content_type or "application/octet-stream"
    if span is None:
        headers["content-length"] = str(size)
        return StreamingResponse(storage.open(recording.storage_key), media_type=media_type, headers=headers)
    first, last = span
    headers["content-range"] = f"bytes {first}-{last}/{size}"
    headers["content-length"] = str(last - first + 1)
    return StreamingResponse(
        storage.read_range(recording.storage_key, first, last),
        status_code=206,
        media_type=media_type,
        headers=headers,
    )
