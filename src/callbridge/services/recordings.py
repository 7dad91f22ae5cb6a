"""Fetching recordings: pending rows in, stored audio out.

A call's ``RecordingAvailable`` event leaves a pending row (in the same unit of work as the
event, so it survives any restart). The :class:`RecordingFetcher`, a task owned by the hub's
lifespan, takes due pending rows, claims each (so two workers never fetch the same file, and a
worker that dies mid-fetch leaves it to be retried), asks the PBX's source for the bytes, checks
and stores them, and marks the row ready, or schedules a retry with capped back-off, or marks it
failed with the reason when retrying cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import struct
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from callbridge.domain.errors import CallbridgeError, PbxError
from callbridge.domain.recordings import (
    Recording,
    RecordingNotReady,
    RecordingUnavailable,
    content_type_for,
    retry_delay,
)
from callbridge.services.background import BackgroundWorker

log = logging.getLogger(__name__)


class RecordingStorage(Protocol):
    """Where recordings' bytes live (``media/storage.py``)."""

    @property
    def scratch(self) -> Path:
        """A local directory for files being fetched."""
        ...

    async def put(self, key: str, source: Path) -> None: ...

    async def size(self, key: str) -> int: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    def read_range(self, key: str, first: int = 0, last: int | None = None) -> AsyncIterator[bytes]: ...

    def open(self, key: str) -> AsyncIterator[bytes]: ...


class RecordingSource(Protocol):
    """Where one PBX's recordings come from."""

    async def fetch(self, reference: str, dest: Path) -> str:
        """Write the recording named ``reference`` to ``dest``; returns the file's name (its
        extension gives the content type). Raises :class:`RecordingNotReady` (try again later)
        or :class:`RecordingUnavailable` (never)."""
        ...


class RecordingRows(Protocol):
    async def due(self, at: datetime, limit: int) -> list[Recording]: ...

    async def next_due_at(self) -> datetime | None: ...

    async def claim(self, recording_id: int, at: datetime, hold: timedelta) -> bool: ...

    async def mark_ready(
        self,
        recording_id: int,
        *,
        storage_key: str,
        size_bytes: int,
        sha256: str,
        content_type: str,
        duration_seconds: float | None,
    ) -> None: ...

    async def mark_retry(self, recording_id: int, reason: str, next_attempt_at: datetime) -> None: ...

    async def mark_failed(self, recording_id: int, reason: str) -> None: ...

    async def release(self, recording_id: int, reason: str, next_attempt_at: datetime) -> None: ...


# Optional transcoding (``media/transcode.py``): ``(fetched file, its name)`` → the converted file
# next to it, or ``None`` to store the file as fetched.
Transcode = Callable[[Path, str], Awaitable["Path | None"]]

# A unit of work over the recordings' rows (commits when the block ends without an error).
Units = Callable[[], AbstractAsyncContextManager[RecordingRows]]
# The source for a PBX's recordings, or why there is none (shown as the pending reason).
SourceFor = Callable[[str], Awaitable["RecordingSource | str"]]


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    base_delay: float = 10.0  # seconds before the first retry; doubles per attempt
    max_delay: float = 3600.0  # the longest wait between attempts
    max_attempts: int = 30  # then the recording is failed (about a day at the cap)
    no_source_delay: float = 300.0  # a PBX whose recordings this worker cannot fetch: look again
    claim_seconds: float = 900.0  # a fetch that takes longer than this may be taken over
    fetch_timeout: float = 600.0
    batch: int = 10


@dataclass(frozen=True, slots=True)
class Digest:
    size: int
    sha256: str
    duration_seconds: float | None


def digest(path: Path) -> Digest:
    """Size, SHA-256 and (for PCM WAV files) duration of a fetched file."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            sha.update(chunk)
            size += len(chunk)
    duration: float | None = None
    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            if rate > 0:
                duration = round(w.getnframes() / rate, 3)
    except (wave.Error, EOFError, OSError, RuntimeError, struct.error):
        # Not a PCM WAV (MP3, GSM-in-WAV), or a corrupt one (the wave module raises a bare
        # RuntimeError for a chunk that runs past the end): the duration stays unknown.
        duration = None
    return Digest(size, sha.hexdigest(), duration)


def storage_key(recording: Recording, name: str) -> str:
    """Where a recording is stored: by PBX and month, its id first (unique), the PBX's
    extension last (players and downloads go by it)."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    if not ext[1:].isalnum() or len(ext) > 8:
        ext = ""
    pbx = "".join(c if c.isalnum() or c in "-_" else "_" for c in recording.pbx) or "pbx"
    return f"{pbx}/{recording.created_at:%Y/%m}/{recording.id}{ext}"


class DueFetcher(BackgroundWorker):
    """A fetcher's loop: fetch what is due (``run_once``, how many it handled), then sleep until
    the next due time (``next_due_at``) or a :meth:`wake`, at most the policy's ``max_delay``.
    A failure to read (the database restarting) is logged and looked at again a bit later.
    Subclasses set ``policy``, ``_clock`` and ``_wake``, and name what they fetch in ``fetches``."""

    fetches = "items"
    policy: FetchPolicy
    _clock: Callable[[], datetime]
    _wake: asyncio.Event

    async def run_once(self) -> int:
        raise NotImplementedError

    async def next_due_at(self) -> datetime | None:
        raise NotImplementedError

    def wake(self) -> None:
        """New pending work was committed: look now instead of at the next due time."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                worked = await self.run_once()
            except Exception as exc:  # the database may be restarting: look again a bit later
                reason = type(exc).__name__
                log.warning("%s: could not read pending %s (%s)", self.task_name, self.fetches, reason)
                worked, wait = 0, self.policy.base_delay
            else:
                wait = await self._until_next_due()
            if worked:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _until_next_due(self) -> float:
        at = await self.next_due_at()
        if at is None:
            return self.policy.max_delay
        return min(self.policy.max_delay, max(0.05, (at - self._clock()).total_seconds()))


class RecordingFetcher(DueFetcher):
    task_name = "recording-fetcher"
    fetches = "recordings"

    def __init__(
        self,
        units: Units,
        storage: RecordingStorage,
        source_for: SourceFor,
        policy: FetchPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        transcode: Transcode | None = None,
    ) -> None:
        self._units = units
        self.transcode = transcode
        self._storage = storage
        self._source_for = source_for
        self.policy = policy or FetchPolicy()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wake = asyncio.Event()

    async def next_due_at(self) -> datetime | None:
        async with self._units() as rows:
            return await rows.next_due_at()

    async def run_once(self) -> int:
        """Fetch what is due now (one batch); returns how many recordings were tried."""
        now = self._clock()
        async with self._units() as rows:
            due = await rows.due(now, self.policy.batch)
        tried = 0
        for recording in due:
            async with self._units() as rows:
                claimed = await rows.claim(recording.id, now, timedelta(seconds=self.policy.claim_seconds))
            if claimed:
                tried += 1
                await self.fetch(recording)
        return tried

    async def fetch(self, recording: Recording) -> None:
        """Fetch one claimed recording and record the outcome."""
        try:
            source = await self._source_for(recording.pbx)
        except Exception as exc:
            source = f"could not read the phone system's settings ({type(exc).__name__})"
        if isinstance(source, str):
            async with self._units() as rows:
                later = self._clock() + timedelta(seconds=self.policy.no_source_delay)
                await rows.release(recording.id, source, later)
            return
        self._storage.scratch.mkdir(parents=True, exist_ok=True)
        part = self._storage.scratch / f"{recording.id}-{secrets.token_hex(6)}.part"
        converted: Path | None = None
        try:
            try:
                async with asyncio.timeout(self.policy.fetch_timeout):
                    name = await source.fetch(recording.reference, part)
                found = await asyncio.to_thread(digest, part)
                if found.size == 0:
                    raise RecordingNotReady("the phone system sent an empty file")
                name = name or recording.reference
                stored, size = part, found.size
                if self.transcode is not None:
                    # The row keeps the original's checksum and duration; the stored file's
                    # size and type (by its extension) are what is served.
                    converted = await self.transcode(part, name)
                    if converted is not None:
                        stored, name = converted, converted.name
                        size = (await asyncio.to_thread(converted.stat)).st_size
                key = storage_key(recording, name)
                await self._storage.put(key, stored)
            except RecordingUnavailable as exc:
                await self._failed(recording, exc.message)
                return
            except (RecordingNotReady, PbxError) as exc:
                await self._retry(recording, exc.message)
                return
            except TimeoutError:
                await self._retry(
                    recording, f"the download took longer than {self.policy.fetch_timeout:.0f} s"
                )
                return
            except CallbridgeError as exc:
                await self._retry(recording, exc.message)
                return
            except OSError as exc:
                await self._retry(recording, f"could not store the file ({type(exc).__name__})")
                return
            async with self._units() as rows:
                await rows.mark_ready(
                    recording.id,
                    storage_key=key,
                    size_bytes=size,
                    sha256=found.sha256,
                    content_type=content_type_for(name),
                    duration_seconds=found.duration_seconds,
                )
            log.info(
                "recording %s of call %s (%s) stored: %d bytes",
                recording.id,
                recording.call_id,
                recording.pbx,
                size,
            )
        finally:
            part.unlink(missing_ok=True)
            if converted is not None:
                converted.unlink(missing_ok=True)

    async def _retry(self, recording: Recording, reason: str) -> None:
        attempts = recording.attempts + 1
        if attempts >= self.policy.max_attempts:
            await self._failed(recording, f"gave up after {attempts} attempts: {reason}")
            return
        delay = retry_delay(attempts, base=self.policy.base_delay, cap=self.policy.max_delay)
        log.info(
            "recording %s of call %s (%s) not fetched (%s); retry in %.0f s",
            recording.id,
            recording.call_id,
            recording.pbx,
            reason,
            delay,
        )
        async with self._units() as rows:
            await rows.mark_retry(recording.id, reason, self._clock() + timedelta(seconds=delay))

    async def _failed(self, recording: Recording, reason: str) -> None:
        log.warning(
            "recording %s of call %s (%s) failed: %s", recording.id, recording.call_id, recording.pbx, reason
        )
        async with self._units() as rows:
            await rows.mark_failed(recording.id, reason)
