"""Voicemails: a PBX says a message was left in a mailbox; the hub keeps it, links it to the
caller's contact and the call, and stores its audio as the agent uploads it (the same chunked,
resumable, checked upload as recordings; see ``services/recording_uploads.py``).

The agent announces each message once with its metadata, and with the audio's size and SHA-256
when the file is there. The voicemail exists from the first announcement on, its audio
``pending`` with the reason until the last chunk is checked and stored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from callbridge.domain.directory import Contact
from callbridge.domain.errors import CallbridgeError, NotFound, PbxError
from callbridge.domain.numbers import format_for_region
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.domain.recordings import (
    RecordingNotReady,
    RecordingUnavailable,
    UploadTooLarge,
    content_type_for,
    retry_delay,
)
from callbridge.domain.voicemails import AudioStatus, Voicemail
from callbridge.services.directory import lookup
from callbridge.services.recording_uploads import Announced, PartialFiles, UploadState
from callbridge.services.recordings import DueFetcher, FetchPolicy, RecordingStorage, digest

log = logging.getLogger(__name__)

WAITING_FOR_AGENT = "waiting for the agent on the phone system to upload it"
FETCHING = "being fetched from the phone system"


class VoicemailRows(Protocol):
    async def get(self, voicemail_id: int) -> Voicemail | None: ...

    async def find(self, pbx: str, reference: str) -> Voicemail | None: ...

    async def add(
        self,
        *,
        pbx: str,
        mailbox: str,
        reference: str,
        caller_number: str,
        caller_name: str,
        contact_id: int | None,
        received_at: datetime,
        duration_seconds: int,
        pbx_call_id: str,
        audio_reason: str,
        fetch_at: datetime | None = None,
    ) -> tuple[Voicemail, bool]: ...

    async def mark_ready(
        self,
        voicemail_id: int,
        *,
        storage_key: str,
        size_bytes: int,
        sha256: str,
        content_type: str,
        pbx_message_id: str = "",
        duration_seconds: int | None = None,
        caller_name: str = "",
    ) -> None: ...

    async def mark_failed(self, voicemail_id: int, reason: str) -> None: ...

    # The audio the hub fetches from the PBX itself (Yeastar), with retries and back-off.
    async def due(self, at: datetime, limit: int) -> list[tuple[Voicemail, int]]: ...

    async def next_due_at(self) -> datetime | None: ...

    async def claim(self, voicemail_id: int, at: datetime, hold: timedelta) -> bool: ...

    async def mark_retry(self, voicemail_id: int, reason: str, next_attempt_at: datetime) -> None: ...

    async def release(self, voicemail_id: int, reason: str, next_attempt_at: datetime) -> None: ...

    async def taken_message_ids(self, pbx: str, mailbox: str) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """What a PBX's voicemail source fetched: the PBX's id of the message (so no other voicemail
    takes it), the file's name (its extension gives the type) and what the PBX says of it."""

    message_id: str
    name: str
    duration_seconds: int = 0
    caller_name: str = ""


class VoicemailSource(Protocol):
    """Where a PBX's voicemail audio comes from when the hub fetches it (Yeastar's OpenAPI).
    Raises ``RecordingNotReady``/``PbxError`` to be retried, ``RecordingUnavailable`` never."""

    async def fetch(self, voicemail: Voicemail, taken: Collection[str], dest: Path) -> FetchedMessage: ...


# The source for a PBX's voicemails, or why there is none (shown as the pending reason).
VoicemailSourceFor = Callable[[str], Awaitable["VoicemailSource | str"]]


class Finder(Protocol):
    async def by_number_key(self, key: str) -> list[Contact]: ...


class VoicemailUnit(Protocol):
    @property
    def voicemails(self) -> VoicemailRows: ...

    @property
    def directory(self) -> Finder: ...


VoicemailUnits = Callable[[], AbstractAsyncContextManager[VoicemailUnit]]


@dataclass(frozen=True, slots=True)
class MessageLeft:
    """What the PBX says about one new message."""

    mailbox: str
    reference: str
    caller_number: str
    caller_name: str
    received_at: datetime
    duration_seconds: int
    pbx_call_id: str = ""


def storage_key(voicemail: Voicemail, name: str) -> str:
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    if not ext[1:].isalnum() or len(ext) > 8:
        ext = ""
    pbx = "".join(c if c.isalnum() or c in "-_" else "_" for c in voicemail.pbx) or "pbx"
    return f"voicemail/{pbx}/{voicemail.created_at:%Y/%m}/{voicemail.id}{ext}"


class Voicemails:
    def __init__(
        self,
        units: VoicemailUnits,
        storage: RecordingStorage,
        *,
        region: str,
        max_bytes: int,
        chunk_bytes: int,
    ) -> None:
        self._units = units
        self._storage = storage
        self.region = region
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self._partials = PartialFiles(storage, "voicemail")
        # What else a new message sets going (its task, its e-mail), once it is stored.
        self.on_new: Callable[[Voicemail], Awaitable[None]] | None = None

    async def announce(
        self, pbx: str, message: MessageLeft, announced: Announced | None, *, fetch: bool = False
    ) -> tuple[Voicemail, bool, UploadState | None]:
        """Keep the message (once, whatever the number of announcements); ``True`` when it is
        new. With the audio announced: how many of its bytes the hub already holds. With
        ``fetch``, the hub fetches the audio from the PBX itself (:class:`VoicemailFetcher`)."""
        async with self._units() as unit:
            rows = unit.voicemails
            found = await rows.find(pbx, message.reference)
            created = False
            if found is None:
                match = await lookup(unit.directory, message.caller_number, self.region)
                contact_id = match.contact.id if match.contact is not None else None
                found, created = await rows.add(
                    pbx=pbx,
                    mailbox=message.mailbox,
                    reference=message.reference,
                    caller_number=message.caller_number,
                    caller_name=message.caller_name,
                    contact_id=contact_id,
                    received_at=message.received_at,
                    duration_seconds=message.duration_seconds,
                    pbx_call_id=message.pbx_call_id,
                    audio_reason=FETCHING if fetch else WAITING_FOR_AGENT,
                    fetch_at=datetime.now(UTC) if fetch else None,
                )
            pending = found.audio_status is AudioStatus.PENDING
            too_large = ""
            if announced is not None and pending and announced.size > self.max_bytes:
                too_large = f"the file has {announced.size} bytes, over the hub's cap of {self.max_bytes}"
                await rows.mark_failed(found.id, too_large)
        if created:
            log.info("voicemail %s left in mailbox %s on %s", found.id, found.mailbox, pbx)
            if self.on_new is not None:
                try:
                    await self.on_new(found)
                except Exception:  # an event's follow-up: logged, the message stands
                    log.exception("voicemail %s (%s): its task or e-mail failed", found.id, pbx)
        # Raised once the unit has committed: the voicemail stays, its audio failed with why.
        if too_large:
            raise UploadTooLarge(too_large)
        if announced is None:
            return found, created, None
        if found.audio_status is AudioStatus.READY and found.sha256 == announced.sha256:
            return found, created, UploadState(found.id, "ready", announced.size, self.chunk_bytes)
        if found.audio_status is not AudioStatus.PENDING:
            raise _no_upload(found)
        offset = await self._partials.start(found.id, announced)
        return found, created, UploadState(found.id, "uploading", offset, self.chunk_bytes)

    async def _voicemail(self, pbx: str, voicemail_id: int) -> Voicemail:
        async with self._units() as unit:
            found = await unit.voicemails.get(voicemail_id)
        if found is None or found.pbx != pbx:
            raise NotFound(f"no voicemail {voicemail_id} of PBX {pbx}")
        return found

    async def write(
        self, pbx: str, voicemail_id: int, announced: Announced, offset: int, data: bytes, chunk_sha256: str
    ) -> int:
        voicemail = await self._voicemail(pbx, voicemail_id)
        if voicemail.audio_status is not AudioStatus.PENDING:
            raise NotFound(
                f"voicemail {voicemail_id}'s audio is {voicemail.audio_status.value}; it takes no upload"
            )
        return await self._partials.append(voicemail_id, announced, offset, data, chunk_sha256)

    async def complete(self, pbx: str, voicemail_id: int, announced: Announced) -> Voicemail:
        voicemail = await self._voicemail(pbx, voicemail_id)
        if voicemail.audio_status is AudioStatus.READY and voicemail.sha256 == announced.sha256:
            return voicemail
        if voicemail.audio_status is not AudioStatus.PENDING:
            raise NotFound(
                f"voicemail {voicemail_id}'s audio is {voicemail.audio_status.value}; it takes no upload"
            )
        async with self._partials.lock(voicemail_id):
            partial, found = await self._partials.verified(
                voicemail_id, announced, f"voicemail {voicemail_id} (PBX {pbx})"
            )
            name = voicemail.reference.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".wav"
            key = storage_key(voicemail, name)
            await self._storage.put(key, partial)
        async with self._units() as unit:
            await unit.voicemails.mark_ready(
                voicemail_id,
                storage_key=key,
                size_bytes=found.size,
                sha256=found.sha256,
                content_type=content_type_for(name),
            )
            ready = await unit.voicemails.get(voicemail_id)
        assert ready is not None
        self._partials.forget(voicemail_id)
        log.info("voicemail %s (%s) audio uploaded: %d bytes", voicemail_id, pbx, found.size)
        return ready

    async def refuse(self, pbx: str, reference: str, reason: str) -> None:
        async with self._units() as unit:
            found = await unit.voicemails.find(pbx, reference)
            if found is None:
                raise NotFound(f"no voicemail {reference!r} on PBX {pbx}")
            await unit.voicemails.mark_failed(found.id, f"the agent did not send it: {reason}"[:500])
        log.warning("voicemail %s (PBX %s): audio refused by its agent: %s", found.id, pbx, reason)


class VoicemailFetcher(DueFetcher):
    """Fetches the audio of voicemails whose PBX keeps it (Yeastar) as the recording fetcher
    does recordings: due rows are claimed (two workers never fetch one message), fetched from
    the PBX's source, checked and stored, or retried with capped back-off, or failed with the
    reason when retrying cannot help. The rows wait in the database: a restart loses nothing."""

    task_name = "voicemail-fetcher"
    fetches = "voicemails"

    def __init__(
        self,
        units: VoicemailUnits,
        storage: RecordingStorage,
        source_for: VoicemailSourceFor,
        *,
        max_bytes: int,
        policy: FetchPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._units = units
        self._storage = storage
        self._source_for = source_for
        self.max_bytes = max_bytes
        self.policy = policy or FetchPolicy()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wake = asyncio.Event()
        # Fetched, each time one is stored (the transcription worker looks then).
        self.on_ready: Callable[[], None] | None = None

    async def next_due_at(self) -> datetime | None:
        async with self._units() as unit:
            return await unit.voicemails.next_due_at()

    async def run_once(self) -> int:
        """Fetch what is due now (one batch); returns how many voicemails were tried."""
        now = self._clock()
        async with self._units() as unit:
            due = await unit.voicemails.due(now, self.policy.batch)
        tried = 0
        for voicemail, attempts in due:
            async with self._units() as unit:
                hold = timedelta(seconds=self.policy.claim_seconds)
                claimed = await unit.voicemails.claim(voicemail.id, now, hold)
            if claimed:
                tried += 1
                await self.fetch(voicemail, attempts)
        return tried

    async def fetch(self, voicemail: Voicemail, attempts: int) -> None:
        try:
            source = await self._source_for(voicemail.pbx)
        except Exception as exc:
            source = f"could not read the phone system's settings ({type(exc).__name__})"
        if isinstance(source, str):
            async with self._units() as unit:
                later = self._clock() + timedelta(seconds=self.policy.no_source_delay)
                await unit.voicemails.release(voicemail.id, source, later)
            return
        self._storage.scratch.mkdir(parents=True, exist_ok=True)
        part = self._storage.scratch / f"voicemail-{voicemail.id}-{secrets.token_hex(6)}.part"
        try:
            try:
                async with self._units() as unit:
                    taken = await unit.voicemails.taken_message_ids(voicemail.pbx, voicemail.mailbox)
                async with asyncio.timeout(self.policy.fetch_timeout):
                    fetched = await source.fetch(voicemail, taken, part)
                found = await asyncio.to_thread(digest, part)
                if found.size == 0:
                    raise RecordingNotReady("the phone system sent an empty file")
                if found.size > self.max_bytes:
                    raise RecordingUnavailable(
                        f"the file has {found.size} bytes, over the hub's cap of {self.max_bytes}"
                    )
                key = storage_key(voicemail, fetched.name)
                await self._storage.put(key, part)
            except RecordingUnavailable as exc:
                await self._failed(voicemail, exc.message)
                return
            except (RecordingNotReady, PbxError, CallbridgeError) as exc:
                await self._retry(voicemail, attempts, exc.message)
                return
            except TimeoutError:
                await self._retry(
                    voicemail, attempts, f"the download took longer than {self.policy.fetch_timeout:.0f} s"
                )
                return
            except OSError as exc:
                await self._retry(voicemail, attempts, f"could not store the file ({type(exc).__name__})")
                return
            async with self._units() as unit:
                await unit.voicemails.mark_ready(
                    voicemail.id,
                    storage_key=key,
                    size_bytes=found.size,
                    sha256=found.sha256,
                    content_type=content_type_for(fetched.name),
                    pbx_message_id=fetched.message_id,
                    duration_seconds=fetched.duration_seconds or None,
                    caller_name=fetched.caller_name,
                )
            log.info(
                "voicemail %s (%s) audio fetched: message %s, %d bytes",
                voicemail.id,
                voicemail.pbx,
                fetched.message_id,
                found.size,
            )
            if self.on_ready is not None:
                self.on_ready()
        finally:
            part.unlink(missing_ok=True)

    async def _retry(self, voicemail: Voicemail, attempts: int, reason: str) -> None:
        attempts += 1
        if attempts >= self.policy.max_attempts:
            await self._failed(voicemail, f"gave up after {attempts} attempts: {reason}")
            return
        delay = retry_delay(attempts, base=self.policy.base_delay, cap=self.policy.max_delay)
        log.info(
            "voicemail %s (%s) not fetched (%s); retry in %.0f s", voicemail.id, voicemail.pbx, reason, delay
        )
        async with self._units() as unit:
            await unit.voicemails.mark_retry(voicemail.id, reason, self._clock() + timedelta(seconds=delay))

    async def _failed(self, voicemail: Voicemail, reason: str) -> None:
        log.warning("voicemail %s (%s): audio failed: %s", voicemail.id, voicemail.pbx, reason)
        async with self._units() as unit:
            await unit.voicemails.mark_failed(voicemail.id, reason)


def pbx_delete_refusal(record: PbxRecord | None) -> str:
    """Why a voicemail of this PBX cannot be deleted at the PBX from callbridge; "" when it can
    (an Asterisk served by ``callbridge agent``: the agent deletes the message's files)."""
    if record is None:
        return "its phone system was removed"
    if record.kind is PbxKind.ASTERISK:
        if record.config.get("agent"):
            return ""
        return "only an Asterisk served by callbridge agent can delete a message at the phone system"
    return (
        f"{record.kind.value} phone systems have no documented API call that deletes a voicemail "
        "message; delete it on the phone system, or here without at_pbx"
    )


def _no_upload(voicemail: Voicemail) -> NotFound:
    return NotFound(f"voicemail {voicemail.id}'s audio is {voicemail.audio_status.value}; it takes no upload")


def voicemail_mail(voicemail: Voicemail, contact_name: str, region: str, link: str = "") -> tuple[str, str]:
    """(subject, body) of the e-mail a new voicemail sends to its mailbox's user (opt-in)."""
    number = voicemail.caller_number
    caller = format_for_region(number, region) if number else "an unknown caller"
    who = ", ".join(x for x in dict.fromkeys([contact_name, voicemail.caller_name]) if x)
    minutes, seconds = divmod(voicemail.duration_seconds, 60)
    length = f"{minutes}:{seconds:02d}"
    subject = f"callbridge: voicemail from {caller}" + (f", {who}" if who else "") + f" ({length})"
    lines = [
        f"A new voicemail in mailbox {voicemail.mailbox}:",
        "",
        f"  From:   {caller}" + (f" ({who})" if who else ""),
        f"  Left:   {voicemail.received_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"  Length: {length}",
    ]
    if link:
        lines += ["", f"Listen: {link}"]
    return subject, "\n".join(lines) + "\n"
