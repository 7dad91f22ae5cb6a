"""Recordings uploaded by agents: chunked, resumable, checked by size and SHA-256.

An agent announces a file (its PBX's call id, the MixMonitor name, size, SHA-256); the hub
matches it to the call's pending recording and answers how many bytes it already holds. The
bytes go to a partial file in the storage's scratch directory (``.incoming``), named by the
recording and the announced checksum and size, so a hub restarted mid-upload finds what it has
and a changed file starts afresh. Every chunk carries its own SHA-256 and is appended only
when it matches, at the offset the partial file has reached; so the partial file is always a
checked prefix of the file. When all bytes are there, the whole file's size and SHA-256 are
checked before it is stored and the recording marked ready; a mismatch drops the partial file
and never becomes a recording.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.recordings import (
    Recording,
    RecordingStatus,
    UploadChecksumMismatch,
    UploadOffsetMismatch,
    UploadTooLarge,
    content_type_for,
)
from callbridge.services.recordings import Digest, RecordingStorage, Transcode, digest, storage_key

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class UploadRows(Protocol):
    async def get(self, recording_id: int) -> Recording | None: ...

    async def find_for_upload(self, pbx: str, reference: str, pbx_call_id: str) -> Recording | None: ...

    async def mark_ready(
        self,
        recording_id: int,
        *,
        storage_key: str,
        size_bytes: int,
        sha256: str,
        content_type: str,
        duration_seconds: float | None,
        via_agent: bool = False,
    ) -> None: ...

    async def mark_failed(self, recording_id: int, reason: str) -> None: ...


UploadUnits = Callable[[], AbstractAsyncContextManager[UploadRows]]


@dataclass(frozen=True, slots=True)
class Announced:
    """What the agent says the whole file is."""

    size: int
    sha256: str

    @classmethod
    def of(cls, size: int, sha256: str) -> Announced:
        sha256 = sha256.strip().lower()
        if size < 1:
            raise InvalidInput("a recording upload has at least one byte")
        if not _SHA256.fullmatch(sha256):
            raise InvalidInput("sha256 must be 64 hexadecimal digits")
        return cls(size, sha256)


@dataclass(frozen=True, slots=True)
class UploadState:
    recording_id: int
    status: str  # "uploading" (send from offset) | "ready" (the hub has it: drop it)
    offset: int
    chunk_bytes: int


class PartialFiles:
    """The partial files of uploads in progress, under the storage's scratch directory (named
    ``<prefix>-<id>-<sha256>-<size>.part``), with one writer per upload in this process: an agent
    that reconnects while its old request is still being read must not interleave with it.
    Recordings and voicemails upload the same way; each has its own prefix."""

    def __init__(self, storage: RecordingStorage, prefix: str) -> None:
        self._storage = storage
        self.prefix = prefix
        self._locks: dict[int, asyncio.Lock] = {}

    def path(self, upload_id: int, announced: Announced) -> Path:
        return self._storage.scratch / f"{self.prefix}-{upload_id}-{announced.sha256}-{announced.size}.part"

    def lock(self, upload_id: int) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    def forget(self, upload_id: int) -> None:
        self._locks.pop(upload_id, None)

    async def start(self, upload_id: int, announced: Announced) -> int:
        """The bytes held of this file (its partial kept, other files of the upload dropped)."""
        async with self.lock(upload_id):
            return await asyncio.to_thread(
                prepare_partial, self.path(upload_id, announced), f"{self.prefix}-{upload_id}-"
            )

    async def append(
        self, upload_id: int, announced: Announced, offset: int, data: bytes, chunk_sha256: str
    ) -> int:
        """Append one chunk at ``offset``; returns the bytes held now."""
        async with self.lock(upload_id):
            # The chunk's checksum and the append in one trip to a thread: a megabyte's SHA-256
            # takes milliseconds that the event loop (other agents, the web pages) should not wait.
            return await asyncio.to_thread(
                append_chunk,
                self.path(upload_id, announced),
                offset,
                data,
                announced.size,
                chunk_sha256.strip().lower(),
            )

    async def verified(self, upload_id: int, announced: Announced, what: str) -> tuple[Path, Digest]:
        """The whole file, checked against its announced size and SHA-256 (call it holding
        :meth:`lock`). None of it held: ``UploadOffsetMismatch`` (start again); not matching:
        dropped, ``UploadChecksumMismatch`` (send it again)."""
        partial = self.path(upload_id, announced)
        try:
            found = await asyncio.to_thread(digest, partial)
        except FileNotFoundError as exc:
            raise UploadOffsetMismatch("the hub has none of this file; start again", 0) from exc
        if found.size != announced.size or found.sha256 != announced.sha256:
            partial.unlink(missing_ok=True)
            log.warning(
                "%s: upload of %d bytes does not match its announced size or SHA-256; dropped, the "
                "agent sends it again",
                what,
                found.size,
            )
            raise UploadChecksumMismatch(
                f"the file the hub received ({found.size} bytes) does not match the announced "
                f"size ({announced.size} bytes) and SHA-256; send it again"
            )
        return partial, found


class AgentUploads:
    def __init__(
        self,
        units: UploadUnits,
        storage: RecordingStorage,
        *,
        max_bytes: int,
        chunk_bytes: int,
        transcode: Transcode | None = None,
    ) -> None:
        self._units = units
        # Optional transcoding (CALLBRIDGE_RECORDINGS_TRANSCODE), as for fetched recordings: the
        # row keeps the original's checksum and duration, the stored file's size and type.
        self.transcode = transcode
        self._storage = storage
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self._partials = PartialFiles(storage, "agent")

    async def _recording(self, pbx: str, recording_id: int) -> Recording:
        async with self._units() as rows:
            found = await rows.get(recording_id)
        if found is None or found.pbx != pbx:  # another PBX's recording is not this agent's business
            raise NotFound(f"no recording {recording_id} of PBX {pbx}")
        return found

    async def begin(self, pbx: str, pbx_call_id: str, reference: str, announced: Announced) -> UploadState:
        """Match an announced file to its recording; how many bytes the hub already has."""
        too_large = ""
        async with self._units() as rows:
            found = await rows.find_for_upload(pbx, reference, pbx_call_id)
            if found is None:
                raise NotFound(f"no recording {reference!r} of call {pbx_call_id} on PBX {pbx}")
            if found.status is RecordingStatus.PENDING and announced.size > self.max_bytes:
                too_large = f"the file has {announced.size} bytes, over the hub's cap of {self.max_bytes}"
                await rows.mark_failed(found.id, too_large)
        # Raised once the unit has committed (raised inside, it would roll the failure back and
        # leave the recording pending for ever): the recording stays, failed with why.
        if too_large:
            log.warning("recording %s (PBX %s) refused: %s", found.id, pbx, too_large)
            raise UploadTooLarge(too_large)
        if found.status is RecordingStatus.READY and found.sha256 == announced.sha256:
            return UploadState(found.id, "ready", announced.size, self.chunk_bytes)
        if found.status is not RecordingStatus.PENDING:
            raise NotFound(f"recording {found.id} is {found.status.value}; it takes no upload")
        offset = await self._partials.start(found.id, announced)
        return UploadState(found.id, "uploading", offset, self.chunk_bytes)

    async def write(
        self, pbx: str, recording_id: int, announced: Announced, offset: int, data: bytes, chunk_sha256: str
    ) -> int:
        """Append one chunk at ``offset``; returns the bytes held now."""
        recording = await self._recording(pbx, recording_id)
        if recording.status is not RecordingStatus.PENDING:
            raise NotFound(f"recording {recording_id} is {recording.status.value}; it takes no upload")
        if not data:
            raise InvalidInput("an empty chunk")
        return await self._partials.append(recording_id, announced, offset, data, chunk_sha256)

    async def complete(self, pbx: str, recording_id: int, announced: Announced) -> Recording:
        """Check the whole file and store it: the recording is ready."""
        recording = await self._recording(pbx, recording_id)
        if recording.status is RecordingStatus.READY and recording.sha256 == announced.sha256:
            return recording  # completed before; the answer was lost
        if recording.status is not RecordingStatus.PENDING:
            raise NotFound(f"recording {recording_id} is {recording.status.value}; it takes no upload")
        async with self._partials.lock(recording_id):
            partial, found = await self._partials.verified(
                recording_id, announced, f"recording {recording_id} (PBX {pbx})"
            )
            name, stored, size = recording.reference, partial, found.size
            converted: Path | None = None
            try:
                if self.transcode is not None:
                    converted = await self.transcode(partial, recording.reference)
                    if converted is not None:
                        stored, name = converted, converted.name
                        size = (await asyncio.to_thread(converted.stat)).st_size
                key = storage_key(recording, name)
                await self._storage.put(key, stored)
            finally:
                if converted is not None:
                    converted.unlink(missing_ok=True)
                    partial.unlink(missing_ok=True)
        async with self._units() as rows:
            await rows.mark_ready(
                recording_id,
                storage_key=key,
                size_bytes=size,
                sha256=found.sha256,
                content_type=content_type_for(name),
                duration_seconds=found.duration_seconds,
                via_agent=True,
            )
            ready = await rows.get(recording_id)
        assert ready is not None
        self._partials.forget(recording_id)
        log.info(
            "recording %s of call %s (%s) uploaded: %d bytes%s",
            recording_id,
            recording.call_id,
            pbx,
            found.size,
            f", stored as {size} bytes of {content_type_for(name)}" if size != found.size else "",
        )
        return ready

    async def refuse(self, pbx: str, pbx_call_id: str, reference: str, reason: str) -> None:
        """The agent will not send this file (outside its recordings directory, over its cap, gone)."""
        async with self._units() as rows:
            found = await rows.find_for_upload(pbx, reference, pbx_call_id)
            if found is None:
                raise NotFound(f"no recording {reference!r} of call {pbx_call_id} on PBX {pbx}")
            if found.status is RecordingStatus.PENDING:
                await rows.mark_failed(found.id, f"the agent did not send it: {reason}"[:500])
        log.warning("recording %s (PBX %s) refused by its agent: %s", found.id, pbx, reason)


def prepare_partial(partial: Path, prefix: str) -> int:
    """The bytes held for this announcement; partial files of other announcements of the same
    file (``prefix*.part``: the file changed on the PBX) are dropped."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    for other in partial.parent.glob(f"{prefix}*.part"):
        if other != partial:
            other.unlink(missing_ok=True)
    try:
        return partial.stat().st_size
    except FileNotFoundError:
        return 0


def append_chunk(partial: Path, offset: int, data: bytes, size: int, chunk_sha256: str) -> int:
    if hashlib.sha256(data).hexdigest() != chunk_sha256:
        raise UploadChecksumMismatch(f"the chunk at byte {offset} does not match its SHA-256; send it again")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("ab") as handle:
        held = handle.seek(0, 2)
        if offset != held:
            raise UploadOffsetMismatch(f"the hub has {held} bytes of this file, not {offset}", held)
        if held + len(data) > size:
            raise InvalidInput(f"the chunk goes past the announced size of {size} bytes")
        handle.write(data)
        handle.flush()
        return held + len(data)
