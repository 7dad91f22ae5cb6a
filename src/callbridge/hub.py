"""The hub's composition root: builds the long-lived parts once from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from callbridge.bus import Bus, LocalBus
from callbridge.config import Settings
from callbridge.connectors import ConnectorHub
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    Direction,
    Event,
    PresenceChanged,
    QueueEvent,
    QueueMemberChanged,
    RecordingAvailable,
    VoicemailLeft,
)
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.domain.recordings import PurgeCandidate, RecordingStatus, parse_recordings_url
from callbridge.domain.tasks import Task, TaskStatus
from callbridge.domain.transcripts import TranscribeRules
from callbridge.domain.voicemails import Voicemail
from callbridge.media.s3 import S3Storage
from callbridge.media.storage import LocalStorage
from callbridge.media.transcode import Transcoder
from callbridge.services.accounts import Accounts, LoginPolicy, TokenCache, TokenUses
from callbridge.services.calllog import (
    CALL_TOPIC,
    BatchedCalls,
    CachedExtensions,
    CallStore,
    ExtensionUsers,
    Ingested,
    IngestFailed,
    ingest,
)
from callbridge.services.dialing import LinkCommands
from callbridge.services.directory import BulkContactFinder, CachedFinder, ContactFinder, number_key
from callbridge.services.lease import LinkLeases
from callbridge.services.links import LinkSupervisor
from callbridge.services.live import (
    PRESENCE_TOPIC,
    Desk,
    DeskReads,
    MemoryBoard,
    PresenceBoard,
    RecentCall,
)
from callbridge.services.mail import MailStore, MailWorker, SmtpConfig, SmtpSender
from callbridge.services.pbxes import yeastar_queues
from callbridge.services.pipeline import BatchingSink
from callbridge.services.ports import EventSink, LinkStatus, PbxLink
from callbridge.services.queues import WALLBOARD_TOPIC, QueueBoard
from callbridge.services.recording_uploads import AgentUploads, UploadRows
from callbridge.services.recordings import RecordingFetcher, RecordingRows, RecordingSource, RecordingStorage
from callbridge.services.retention import (
    AgentCaller,
    PbxCopyDeleter,
    PbxCopyRows,
    PurgeStore,
    RetentionWorker,
    purge,
)
from callbridge.services.tasks import FollowUpRules, FollowUps, FollowUpStore
from callbridge.services.transcription import (
    Heard,
    Summarizer,
    TranscriptionUnavailable,
    TranscriptionWorker,
    TranscriptRows,
    VoicemailTranscriptRows,
    WhisperTranscriber,
    transcribe_recording,
)
from callbridge.services.voicemails import (
    WAITING_FOR_AGENT,
    MessageLeft,
    VoicemailFetcher,
    Voicemails,
    VoicemailSource,
    voicemail_mail,
)
from callbridge.store.calls import CALL_LOG_TABLES
from callbridge.store.db import Database, lost_a_race
from callbridge.store.desk import DeskRepo
from callbridge.store.directory import FastDirectory
from callbridge.store.inbox import SqlInbox, SqliteInbox
from callbridge.store.migrate import upgrade
from callbridge.store.repos import Repos
from callbridge.store.secrets import SecretBox, load_or_create_key

log = logging.getLogger(__name__)

Payload = dict[str, Any]
# Transactions side by side for one batch on PostgreSQL (SQLite has one writer anyway).
INGEST_LANES = 4
# Calls a lane should have before a batch is split into one more transaction.
LANE_MIN_CALLS = 150
# Events ingested by this process before the call log's planner statistics are refreshed
# (then again each time the count doubles). A new call log has none until autovacuum's next
# round, and without them PostgreSQL reads every row of the PBX's calls, and every stored
# event, for each batch (the unique indexes look useless to it): the cost grows with the log.
ANALYZE_FIRST = 1000
TOKEN_FLUSH_DELAY = 1.0  # seconds between a token use and its (batched) write


class _DeskStore:
    """The live desk's store within one unit of work, sharing ingest's extension lookups."""

    def __init__(self, inner: DeskRepo, extensions: ExtensionUsers) -> None:
        self._inner = inner
        self.users_for = extensions.users_for

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _EarlyDeskStore:
    """What an early pop reads: point queries, and the contact's last calls when there is one."""

    def __init__(self, fast: FastDirectory, db: Database) -> None:
        self.contact = fast.contact
        self.user_label = fast.user_label
        self.colleague = fast.colleague
        self.owed = fast.owed  # a point read: no session, no transaction beside ingest's
        self.external_links = fast.external_links
        self._db = db

    async def recent_calls(
        self, contact_id: int, limit: int, viewers: Sequence[int]
    ) -> Mapping[int, list[RecentCall]]:
        async with self._db.unit() as repos:
            return await DeskRepo(repos).recent_calls(contact_id, limit, viewers)

    async def call_ended(self, pbx: str, call_id: str) -> bool:
        async with self._db.unit() as repos:
            return await DeskRepo(repos).call_ended(pbx, call_id)


class _MailStore:
    """The mail worker's reads and writes within one unit of work."""

    def __init__(self, repos: Repos) -> None:
        mail = repos.mail
        self.enqueue = mail.enqueue
        self.due = mail.due
        self.next_due = mail.next_due
        self.mark_sent = mail.mark_sent
        self.mark_failed = mail.mark_failed
        self.digest_users = mail.digest_users
        self.missed_calls = mail.missed_calls
        self._tasks = repos.tasks

    async def open_tasks(self, user_id: int, today: datetime) -> list[Task]:
        found, _ = await self._tasks.search(
            status=TaskStatus.OPEN, assignee_id=user_id, any_assignee=False, limit=200, today=today
        )
        return found


def smtp_config(settings: Settings) -> SmtpConfig:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=password,
        timeout=settings.smtp_timeout_seconds,
    )


def summarizer_for(settings: Settings) -> Summarizer | None:
    """The summary endpoint the user configured, or none (the default)."""
    if not settings.summary_url:
        return None
    key = settings.summary_api_key.get_secret_value() if settings.summary_api_key else ""
    return Summarizer(settings.summary_url, settings.summary_model, key)


class _PurgeStore:
    """The retention purge's reads and writes within one unit of work."""

    def __init__(self, repos: Repos) -> None:
        self.rules = repos.retention.rules
        self.purge_candidates = repos.recordings.purge_candidates
        self.mark_purged = repos.recordings.mark_purged


@dataclass
class Hub:
    settings: Settings
    db: Database
    box: SecretBox
    bus: Bus
    login_policy: LoginPolicy
    hasher: PasswordHasher | None = None
    # Long-lived services that later parts attach (live fan-out, …).
    extras: dict[str, Any] = field(default_factory=dict)
    links: LinkSupervisor | None = None
    # Webhook URL key → PBX name, for the PBXs whose links run in this process.
    webhook_keys: dict[str, str] = field(default_factory=dict)
    # Live desk (screen pop, presence): see services/live.py.
    board: PresenceBoard = field(default_factory=MemoryBoard)
    desk: Desk | None = None
    # Follow-up tasks made and closed by calls: see services/tasks.py.
    followups: FollowUps | None = None
    # E-mail through the durable outbox (none when no SMTP server is configured).
    mail: MailWorker | None = None
    commands: LinkCommands | None = None
    leases: LinkLeases | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    _sinks: list[BatchingSink] = field(default_factory=list)
    _fast: FastDirectory | None = None
    # PBX name → fingerprint of the settings its running link was built from.
    _known_pbxes: dict[str, str] = field(default_factory=dict)
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _watcher: asyncio.Task[None] | None = None
    _inbox: SqlInbox | SqliteInbox | None = None  # the webhook inbox every Yeastar link shares
    _ingested: int = 0
    _next_analyze: int = ANALYZE_FIRST
    _analyzer: asyncio.Task[None] | None = None
    token_uses: TokenUses = field(default_factory=TokenUses)
    token_cache: TokenCache = field(default_factory=TokenCache)
    _token_flush: asyncio.Task[None] | None = None
    # Recordings: where their bytes are stored, and the worker that fetches them from the PBXs.
    storage: RecordingStorage | None = None
    fetcher: RecordingFetcher | None = None
    retention: RetentionWorker | None = None
    pbx_copies: PbxCopyDeleter | None = None
    voicemail_pbx_copies: PbxCopyDeleter | None = None
    uploads: AgentUploads | None = None
    voicemails: Voicemails | None = None
    voicemail_fetcher: VoicemailFetcher | None = None
    transcription: TranscriptionWorker | None = None
    # Queues: the live state the wallboard shows (see services/queues.py).
    queue_board: QueueBoard = field(default_factory=QueueBoard)
    _board_changed: bool = False
    _previews: set[asyncio.Task[None]] = field(default_factory=set)
    # ERP connectors: directory sync in, calls out (callbridge/connectors.py).
    connectors: ConnectorHub | None = None

    @classmethod
    def build(cls, settings: Settings, *, hasher: PasswordHasher | None = None) -> Hub:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        explicit = settings.secret_key.get_secret_value() if settings.secret_key else None
        box = SecretBox(load_or_create_key(settings.data_dir, explicit))
        policy = LoginPolicy(
            max_failures=settings.login_max_failures,
            user_max_failures=settings.login_user_max_failures,
            address_max_failures=settings.login_address_max_failures,
            window=_seconds(settings.login_window_seconds),
            first_lock=_seconds(settings.login_first_lock_seconds),
            lockout=_seconds(settings.login_lockout_seconds),
            base_delay=settings.login_delay_seconds,
            session_lifetime=_seconds(settings.session_max_age_seconds),
        )
        board: PresenceBoard = MemoryBoard()
        if settings.redis_url:
            from callbridge.live_redis import RedisBoard

            board = RedisBoard(settings.redis_url)
        hub = cls(
            settings=settings,
            db=Database(settings.effective_database_url, box),
            box=box,
            bus=_make_bus(settings),
            login_policy=policy,
            hasher=hasher,
            board=board,
        )
        hub.queue_board = QueueBoard(time_zone=settings.time_zone)
        hub.desk = Desk(
            board,
            lookups=hub._pop_lookups,
            publish=hub.publish,
            extension_map=hub._extension_map,
            region=settings.default_region,
        )
        hub.followups = FollowUps(
            FollowUpRules(
                min_ring_seconds=settings.followup_min_ring_seconds,
                close_by_anyone=settings.followup_close_by_anyone,
                team=settings.followup_team,
                time_zone=settings.time_zone,
                region=settings.default_region,
            )
        )
        if settings.smtp_host:
            hub.mail = MailWorker(
                hub._mail_units,
                SmtpSender(smtp_config(settings)),
                digest_hour=settings.email_digest_hour,
                default_zone=settings.time_zone,
                region=settings.default_region,
                desk_url=f"{settings.public_url.rstrip('/')}/desk" if settings.public_url else "",
            )
        hub.commands = LinkCommands(hub.bus, hub._local_link, remote=bool(settings.redis_url))
        hub.storage = make_storage(settings)
        transcode = Transcoder(settings.recordings_transcode) if settings.recordings_transcode else None
        hub.fetcher = RecordingFetcher(
            hub._recording_rows, hub.storage, hub.recording_source, transcode=transcode
        )
        hub.pbx_copies = PbxCopyDeleter(hub._pbx_copy_rows, hub._connected_agent)
        hub.voicemail_pbx_copies = PbxCopyDeleter(
            hub._voicemail_copy_rows, hub._connected_agent, action="delete_voicemail", what="voicemail"
        )
        hub.retention = RetentionWorker(
            hub._purge_store,
            hub.storage,
            interval=settings.retention_purge_interval_seconds,
            first_delay=settings.retention_first_purge_seconds,
            on_purged=hub.pbx_copies.wake,
        )
        hub.uploads = AgentUploads(
            hub._upload_rows,
            hub.storage,
            max_bytes=settings.recording_max_bytes,
            # A chunk and its request fit the hub's body limit.
            chunk_bytes=max(64 * 1024, min(1024 * 1024, settings.max_body_bytes - 4096)),
            transcode=transcode,
        )
        hub.voicemails = Voicemails(
            hub.db.unit,
            hub.storage,
            region=settings.default_region,
            max_bytes=settings.recording_max_bytes,
            chunk_bytes=hub.uploads.chunk_bytes,
        )
        hub.voicemails.on_new = hub._voicemail_left
        hub.voicemail_fetcher = VoicemailFetcher(
            hub.db.unit, hub.storage, hub.voicemail_source, max_bytes=settings.recording_max_bytes
        )
        if settings.transcribe:
            hub.transcription = TranscriptionWorker(
                hub._transcript_rows,
                hub.storage,
                WhisperTranscriber(settings.transcribe_model_dir, settings.transcribe_threads),
                TranscribeRules.parse(
                    settings.transcribe_numbers, settings.transcribe_directions, settings.transcribe_pbxes
                ),
                interval=settings.transcribe_interval_seconds,
                summarizer=summarizer_for(settings),
                voicemail_units=hub._voicemail_transcript_rows,
            )
        hub.connectors = ConnectorHub(hub.db, settings)
        return hub

    @asynccontextmanager
    async def _mail_units(self) -> AsyncIterator[MailStore]:
        async with self.db.unit() as repos:
            yield _MailStore(repos)
            await repos.commit()

    # --- recordings ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _recording_rows(self) -> AsyncIterator[RecordingRows]:
        async with self.db.unit() as repos:
            yield repos.recordings

    @asynccontextmanager
    async def _purge_store(self) -> AsyncIterator[PurgeStore]:
        async with self.db.unit() as repos:
            yield _PurgeStore(repos)

    @asynccontextmanager
    async def _transcript_rows(self) -> AsyncIterator[TranscriptRows]:
        async with self.db.unit() as repos:
            yield repos.transcripts

    async def transcribe_call(self, call_id: int) -> tuple[str, str, Heard | None]:
        """Transcribe call ``call_id``'s stored recording now, whatever the rules and the opt-in
        (``callbridge recordings transcribe``); returns (status, reason, heard)."""
        assert self.storage is not None
        async with self.db.unit() as repos:
            found = [r for r in await repos.recordings.for_call(call_id) if r.status is RecordingStatus.READY]
        if not found:
            raise TranscriptionUnavailable(f"call {call_id} has no stored recording")
        transcriber = (
            self.transcription.transcriber
            if self.transcription is not None
            else WhisperTranscriber(self.settings.transcribe_model_dir, self.settings.transcribe_threads)
        )
        status, reason, heard = await transcribe_recording(
            found[0], self.storage, transcriber, self._transcript_rows, summarizer_for(self.settings)
        )
        return status.value, reason, heard

    async def purge_recordings(self, *, dry_run: bool = False) -> list[PurgeCandidate]:
        """What the retention rules purge now (``callbridge recordings purge``; the daily run)."""
        assert self.storage is not None
        found = await purge(self._purge_store, self.storage, at=datetime.now(UTC), dry_run=dry_run)
        if self.pbx_copies is not None and not dry_run and any(c.via_agent for c in found):
            self.pbx_copies.wake()
        return found

    @asynccontextmanager
    async def _pbx_copy_rows(self) -> AsyncIterator[PbxCopyRows]:
        async with self.db.unit() as repos:
            yield repos.recordings

    @asynccontextmanager
    async def _voicemail_transcript_rows(self) -> AsyncIterator[VoicemailTranscriptRows]:
        async with self.db.unit() as repos:
            yield repos.voicemails

    @asynccontextmanager
    async def _voicemail_copy_rows(self) -> AsyncIterator[PbxCopyRows]:
        async with self.db.unit() as repos:
            yield repos.voicemails

    def _connected_agent(self, pbx: str) -> AgentCaller | None:
        from callbridge.services.agents import AgentLink

        link = self._local_link(pbx)
        return link if isinstance(link, AgentLink) and link.connected else None

    @asynccontextmanager
    async def _upload_rows(self) -> AsyncIterator[UploadRows]:
        async with self.db.unit() as repos:
            yield repos.recordings

    async def _voicemail_left(self, voicemail: Voicemail) -> None:
        """A new voicemail: a voicemail task for the mailbox's user (published to their desk
        after the commit), and an e-mail to them when they opted in (through the mail outbox:
        an SMTP server that is down delays it, never this)."""
        messages: list[tuple[str, Payload]] = []
        async with self.db.unit() as repos:
            users = await repos.extensions.users_for(voicemail.pbx, [voicemail.mailbox_number])
            user_id = users.get(voicemail.mailbox_number)
            if self.followups is not None:
                number = number_key(voicemail.caller_number, self.settings.default_region)
                messages = await self.followups.on_voicemail(
                    number, voicemail.contact_id, voicemail.received_at, user_id, self.followup_store(repos)
                )
            mailed = False
            if user_id is not None and self.mail is not None:
                prefs = await repos.mail.prefs(user_id)
                if prefs.email and prefs.new_voicemail:
                    contact = (
                        await repos.directory.find(voicemail.contact_id) if voicemail.contact_id else None
                    )
                    subject, body = voicemail_mail(
                        voicemail,
                        contact.name if contact is not None else "",
                        self.settings.default_region,
                        f"{self.settings.public_url.rstrip('/')}/desk" if self.settings.public_url else "",
                    )
                    key = f"voicemail:{voicemail.id}:{user_id}"
                    mailed = await repos.mail.enqueue(key, prefs.email, subject, body)
        if mailed and self.mail is not None:
            self.mail.wake()
        await self.publish(messages)

    async def recording_source(self, pbx: str) -> RecordingSource | str:
        """Where PBX ``pbx``'s recordings come from in this process, or why nowhere (the reason a
        pending recording shows)."""
        async with self.db.unit() as repos:
            record = await repos.pbxes.find(pbx)
        if record is None:
            return "its phone system was removed"
        if not record.enabled:
            return "its phone system is disabled"
        if record.kind is PbxKind.ASTERISK:
            if record.config.get("agent"):
                return "waiting for the agent on the phone system to upload it"
            directory = str(record.config.get("recordings_dir") or "")
            if not directory:
                return "no recordings directory is set for this phone system (recordings_dir)"
            from callbridge.pbx.asterisk.recordings import DirectoryRecordings

            return DirectoryRecordings(Path(directory))
        link = self._local_link(pbx)
        client = getattr(link, "client", None)
        if client is None:
            return "the link to this phone system is not running in this hub process"
        from callbridge.pbx.yeastar.recordings import YeastarRecordings

        return YeastarRecordings(client)

    async def voicemail_source(self, pbx: str) -> VoicemailSource | str:
        """Where PBX ``pbx``'s voicemail audio comes from when the hub fetches it (Yeastar), or why
        nowhere (the reason a pending voicemail shows)."""
        async with self.db.unit() as repos:
            record = await repos.pbxes.find(pbx)
        if record is None:
            return "its phone system was removed"
        if not record.enabled:
            return "its phone system is disabled"
        if record.kind is not PbxKind.YEASTAR:
            return WAITING_FOR_AGENT
        link = self._local_link(pbx)
        client = getattr(link, "client", None)
        if client is None:
            return "the link to this phone system is not running in this hub process"
        from callbridge.pbx.yeastar.voicemails import YeastarVoicemails

        return YeastarVoicemails(client, str(record.config.get("timezone") or "UTC"))

    async def _voicemails_left(self, events: Sequence[VoicemailLeft]) -> None:
        """A PBX that keeps voicemail itself (Yeastar) said messages were left: each becomes a
        voicemail (once, whatever the number of events), its audio fetched by the hub."""
        if self.voicemails is None:
            return
        kinds: dict[str, PbxKind | None] = {}
        for event in events:
            if event.pbx not in kinds:
                async with self.db.unit() as repos:
                    record = await repos.pbxes.find(event.pbx)
                kinds[event.pbx] = record.kind if record is not None else None
            if kinds[event.pbx] is not PbxKind.YEASTAR:
                # Only a PBX that keeps voicemail itself says so by event (an agent announces
                # Asterisk's messages with their audio): anything else is dropped, logged.
                log.warning(
                    "voicemail event for call %s/%s ignored: not a Yeastar PBX", event.pbx, event.call_id
                )
                continue
            message = MessageLeft(
                mailbox=event.mailbox,
                reference=f"call:{event.call_id}",
                caller_number=event.caller_number,
                caller_name=event.caller_name,
                received_at=event.at,
                duration_seconds=event.duration_seconds,
                pbx_call_id=event.call_id,
            )
            await self.voicemails.announce(event.pbx, message, None, fetch=True)
        if self.voicemail_fetcher is not None:
            self.voicemail_fetcher.wake()

    def start_recordings(self) -> None:
        """Start fetching pending recordings (the lifespan calls this; pending rows from before
        a restart are taken first)."""
        if self.fetcher is not None:
            self.fetcher.start()
        if self.voicemail_fetcher is not None:
            self.voicemail_fetcher.start()
        if self.retention is not None:
            self.retention.start()
        if self.pbx_copies is not None:
            self.pbx_copies.start()
        if self.voicemail_pbx_copies is not None:
            self.voicemail_pbx_copies.start()
        if self.transcription is not None:
            self.transcription.start()
        if self.mail is not None:
            self.mail.start()

    def _token_used(self) -> None:
        if self._token_flush is None or self._token_flush.done():
            self._token_flush = asyncio.create_task(self._flush_token_uses_soon(), name="token-uses")

    async def _flush_token_uses_soon(self) -> None:
        await asyncio.sleep(TOKEN_FLUSH_DELAY)  # gather the uses of a burst into one write
        await self.flush_token_uses()

    async def flush_token_uses(self) -> None:
        """Write the API token uses noted since the last flush (one short transaction)."""
        uses = self.token_uses.take()
        if not uses:
            return
        try:
            async with self.db.unit() as repos:
                await repos.tokens.touch_many(uses)
        except Exception as exc:  # the database is busy or away: keep them for the next flush
            self.token_uses.put_back(uses)
            log.warning("could not record API token use (%s); will retry", type(exc).__name__)

    def _local_link(self, name: str) -> PbxLink | None:
        return self.links.links.get(name) if self.links is not None else None

    def accounts(self, repos: Repos) -> Accounts:
        return Accounts(
            repos.users,
            repos.tokens,
            repos.failures,
            repos.sessions,
            policy=self.login_policy,
            hasher=self.hasher,
            token_uses=self.token_uses,
            token_used=self._token_used,
            token_cache=self.token_cache,
        )

    async def prepare(self) -> str | None:
        """Migrate the schema and create the first admin; returns its password on first start."""
        await upgrade(self.settings.effective_database_url)
        async with self.db.unit() as repos:
            return await self.accounts(repos).ensure_admin()

    # --- events in ---------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> None:
        """Store one event and publish what it changed (after commit)."""
        await self.handle_events([event])

    async def handle_events(self, events: Sequence[Event]) -> None:
        """The sink PBX links feed: store a batch, then publish what it changed (after commit)."""
        await self.publish(await self.ingest_batch(events))

    def preview(self, events: Sequence[Event]) -> None:
        """Show events to the live desk as they arrive, before they are stored: a ringing phone
        pops its user's card without waiting for the call log (see :meth:`Desk.preview`)."""
        if self.desk is not None:
            self.desk.preview(events)
        if self.queue_board.day and self.queue_board.preview(events):
            # The wallboard shows a caller joining or a member's pause at once (a snapshot
            # carries its version: a screen drops one older than what it shows).
            snapshot = self.queue_board.snapshot(datetime.now(UTC))
            task = asyncio.get_running_loop().create_task(self.publish([(WALLBOARD_TOPIC, snapshot)]))
            self._previews.add(task)
            task.add_done_callback(self._previews.discard)

    @property
    def fast_directory(self) -> FastDirectory:
        """Point reads without the ORM's session machinery (dialplan lookups, early pops)."""
        if self._fast is None:
            self._fast = FastDirectory(self.db.url)
        return self._fast

    async def _extension_map(self) -> Mapping[tuple[str, str], int]:
        return await self.fast_directory.extension_map()

    @asynccontextmanager
    async def _pop_lookups(self) -> AsyncIterator[tuple[DeskReads, ContactFinder]]:
        yield _EarlyDeskStore(self.fast_directory, self.db), self.fast_directory

    async def _previewed_handle_events(self, events: Sequence[Event]) -> None:
        self.preview(events)
        await self.handle_events(events)

    async def publish(self, messages: Sequence[tuple[str, Payload]]) -> None:
        for n, (topic, payload) in enumerate(messages, start=1):
            await self.bus.publish(topic, payload)
            if n % 100 == 0:
                await asyncio.sleep(0)  # let subscribers (the live fan-out) keep up with a big batch

    async def ingest_batch(
        self, events: Sequence[Event], *, then: Callable[[Repos], Awaitable[None]] | None = None
    ) -> list[tuple[str, Payload]]:
        """Store a batch of events; returns the messages to publish once the caller may.

        A caller cancelled meanwhile does not stop the batch: it ends, committed or rolled back
        (see :meth:`~callbridge.store.db.Database.finish_anyway`)."""
        # A message left in a mailbox is no call-log event: a voicemail, made once the call's
        # events are stored (the voicemail links to the call by the PBX's call id).
        left = [e for e in events if isinstance(e, VoicemailLeft)]
        if left:
            events = [e for e in events if not isinstance(e, VoicemailLeft)]
        messages = await self.db.finish_anyway(self._ingest_batch(events, then=then))
        if left:
            await self._voicemails_left(left)
        return messages

    async def _ingest_batch(
        self, events: Sequence[Event], *, then: Callable[[Repos], Awaitable[None]] | None = None
    ) -> list[tuple[str, Payload]]:
        """The work of :meth:`ingest_batch`.

        Call events are grouped by call: each call's row, events and link are read once and its
        record written once per batch. On PostgreSQL, calls are spread over a few transactions
        side by side. Raises :class:`IngestFailed` when not one event could be stored (the
        database is the problem): a caller with a durable source must then not acknowledge.

        ``then`` (e.g. moving an agent's high-water mark) runs once every event is stored: in
        the same transaction when the batch takes one, else in one more after the others."""
        messages: list[tuple[str, Payload]] = []
        by_call: dict[tuple[str, str], list[CallEvent]] = {}
        members = [e for e in events if isinstance(e, QueueMemberChanged)]
        if members:
            async with self.db.unit() as repos:
                for member in await repos.queues.add_member_events(members):
                    self._board_changed |= self.queue_board.member_changed(member)
        for event in events:
            if isinstance(event, PresenceChanged):
                if self.desk is not None:
                    messages.append((PRESENCE_TOPIC, await self.desk.presence_changed(event)))
                else:
                    messages.append((PRESENCE_TOPIC, event.to_dict()))
            elif isinstance(event, CallEvent):
                by_call.setdefault((event.pbx, event.call_id), []).append(event)
        if not by_call:
            if then is not None:
                async with self.db.unit() as repos:
                    await then(repos)
            return messages + await self._board_messages()
        # Each lane costs a transaction and its handful of statements whatever its size: a small
        # batch (a steady trickle of calls) goes in one, a big one is spread over a few.
        lanes = 1 if self.db.is_sqlite else max(1, min(INGEST_LANES, len(by_call) // LANE_MIN_CALLS))
        buckets: list[list[CallEvent]] = [[] for _ in range(lanes)]
        for i, group in enumerate(by_call.values()):
            buckets[i % lanes].extend(group)
        if lanes == 1:
            out, done = await self._ingest_lane(buckets[0], then)
            results = [out]
        else:
            # Follow-up tasks are keyed by the caller's number, which calls in different lanes
            # share: done inside the lanes, two lanes lock one number's tasks in opposite orders
            # and PostgreSQL kills one of them as a deadlock. They run after the lanes commit.
            after: list[Ingested] = []
            results = [
                out
                for out, _ in await asyncio.gather(*(self._ingest_lane(b, None, after) for b in buckets if b))
            ]
            results.append(await self._followups_after(after))
            done = then is None
        if not done and then is not None:
            async with self.db.unit() as repos:
                await then(repos)
        self._count_ingested(sum(len(b) for b in buckets))
        if self.connectors is not None:
            self.connectors.wake()  # committed: calls for the ERPs are written now
        if self.fetcher is not None and any(isinstance(e, RecordingAvailable) for b in buckets for e in b):
            self.fetcher.wake()  # committed: the new pending recordings are fetched now
        return messages + [m for lane in results for m in lane] + await self._board_messages()

    # --- queues and the wallboard ---------------------------------------------------------------
    async def seed_queue_board(self, now: datetime | None = None) -> None:
        """Give the wallboard today's figures from the call log (once a day, or on demand)."""
        now = now or datetime.now(UTC)
        board = self.queue_board
        start = board.day_start(now)
        async with self.db.unit() as repos:
            visits = await repos.queues.visits_by_call(start, now + timedelta(minutes=1))
            members = await repos.queues.recent_member_events(now - timedelta(days=1))
            settings = await repos.queues.all_settings()
        board.seed(now, visits, members, settings)

    async def wallboard_snapshot(self) -> Payload:
        now = datetime.now(UTC)
        if self.queue_board.needs_seed(now):
            await self.seed_queue_board(now)
        return self.queue_board.snapshot(now)

    async def _board_messages(self) -> list[tuple[str, Payload]]:
        """The wallboard's new snapshot when the batch changed it (published after commit)."""
        if not self._board_changed:
            return []
        self._board_changed = False
        now = datetime.now(UTC)
        if self.queue_board.needs_seed(now):
            await self.seed_queue_board(now)
        snapshot = self.queue_board.snapshot(now)
        self.queue_board.forget_finished()
        return [(WALLBOARD_TOPIC, snapshot)]

    def _count_ingested(self, count: int) -> None:
        if self.db.is_sqlite:
            return
        self._ingested += count
        if self._ingested >= self._next_analyze and (self._analyzer is None or self._analyzer.done()):
            self._next_analyze = 2 * self._ingested
            self._analyzer = asyncio.create_task(self._analyze(), name="call-log-analyze")

    async def _analyze(self) -> None:
        try:
            await self.db.analyze(*CALL_LOG_TABLES)
        except Exception as exc:  # statistics are an optimisation: never fail ingest for them
            log.warning("could not refresh the call log's planner statistics: %s", type(exc).__name__)

    async def _ingest_one(self, event: CallEvent, tries: int = 3) -> list[tuple[str, Payload]]:
        """One event in its own transaction; tried again when it lost a race (a deadlock)."""
        for attempt in range(1, tries + 1):
            try:
                async with self.db.unit() as repos:
                    return await self._ingest_events(
                        repos, [event], repos.calls, repos.extensions, repos.directory
                    )
            except Exception as exc:
                if attempt == tries or not lost_a_race(exc):
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def _followups_after(self, changed: list[Ingested]) -> list[tuple[str, Payload]]:
        """Follow-up tasks for calls the lanes stored (and committed), one call after another."""
        out: list[tuple[str, Payload]] = []
        if self.followups is None or not changed:
            return out
        async with self.db.unit() as repos:
            for call in changed:
                out += await self._follow_up(call, repos, savepoint=True)
        return out

    async def _follow_up(self, call: Ingested, repos: Repos, *, savepoint: bool) -> list[tuple[str, Payload]]:
        """The follow-up work of one stored call. Should it fail, only the follow-up is lost (and
        logged): with ``savepoint`` it runs in one, so the rest of the transaction stands where
        the database would refuse it after an error (PostgreSQL)."""
        assert self.followups is not None
        try:
            if not savepoint:
                return await self.followups.on_call(call, self.followup_store(repos))
            async with repos.savepoint():
                return await self.followups.on_call(call, self.followup_store(repos))
        except Exception:
            log.exception("follow-up failed for call %s/%s", call.summary.pbx, call.summary.call_id)
            return []

    async def _ingest_lane(
        self,
        events: list[CallEvent],
        then: Callable[[Repos], Awaitable[None]] | None = None,
        followups_after: list[Ingested] | None = None,
    ) -> tuple[list[tuple[str, Payload]], bool]:
        """Store one lane in one transaction (with ``then`` at its end); when that fails, event
        by event. Returns the messages and whether ``then`` was committed with them. With
        ``followups_after``, the calls that need follow-up work are added to it instead."""
        try:
            lane: list[Ingested] = []
            # On SQLite the ERP outbox writes in turn with ingest (see Database.write_turn).
            async with self.db.write_turn(), self.db.unit() as repos:
                stores = await repos.batch_stores()
                calls = BatchedCalls(repos.calls, stores.calls)
                extensions = CachedExtensions(stores.extensions)
                await calls.prefetch(events)
                await extensions.prefetch(itertools.chain(calls.known_events(), events))
                out = await self._ingest_events(
                    repos,
                    events,
                    calls,
                    extensions,
                    stores.directory,
                    None if followups_after is None else lane,
                )
                await calls.flush()
                if then is not None:
                    await then(repos)
            if followups_after is not None:
                followups_after.extend(lane)
            return out, True
        except Exception:
            if len(events) == 1:
                log.exception(
                    "could not store %s of call %s/%s", events[0].kind, events[0].pbx, events[0].call_id
                )
                raise IngestFailed("could not store the event") from None
            log.warning("a batch of %d events failed; storing them one by one", len(events))
        # One by one: an event no retry can store is logged and skipped (CONVENTIONS 5); when
        # every one fails the database itself is the problem.
        out = []
        failed = 0
        for event in events:
            try:
                out += await self._ingest_one(event)
            except Exception as exc:
                failed += 1
                log.error(
                    "could not store %s of call %s/%s: %s",
                    event.kind,
                    event.pbx,
                    event.call_id,
                    type(exc).__name__,
                )
        if failed == len(events):
            raise IngestFailed(f"could not store any of {failed} events")
        return out, False

    async def _ingest_events(
        self,
        repos: Repos,
        events: Sequence[CallEvent],
        calls: CallStore,
        extensions: ExtensionUsers,
        directory: BulkContactFinder,
        followups_after: list[Ingested] | None = None,
    ) -> list[tuple[str, Payload]]:
        out: list[tuple[str, Payload]] = []
        desk_store = _DeskStore(DeskRepo(repos), extensions)
        auto_create = repos.directory if self.settings.auto_create_contacts else None
        # A contact created for an unknown caller must be found by the next event: no cache then.
        finder: ContactFinder = repos.directory
        if auto_create is None:
            finder = cached = CachedFinder(directory)
            await cached.prefetch(
                (n for e in events if isinstance(e, CallStarted) for n in (e.from_number, e.to_number)),
                self.settings.default_region,
            )
        to_erp: set[int] = set()
        for n, event in enumerate(events, start=1):
            if n % 20 == 0:
                # Folding a big batch is pure CPU between queries: hand the event loop back now
                # and then, so requests (webhook acks) are not held for the whole batch.
                await asyncio.sleep(0)
            changed = await ingest(
                event,
                calls,
                finder,
                extensions,
                self.settings.default_region,
                auto_create=auto_create,
            )
            if changed is None:
                continue
            if isinstance(event, RecordingAvailable) and event.recording:
                await repos.recordings.add_pending(changed.id, event.pbx, event.recording)
            if isinstance(event, QueueEvent | CallEnded):
                self._board_changed |= self.queue_board.call_changed(
                    f"{event.pbx}/{event.call_id}",
                    changed.summary.queue_visits,
                    changed.summary.disposition is not None,
                    datetime.now(UTC),
                )
            if self.desk is not None:
                try:
                    out += await self.desk.observe(event, changed, desk_store)
                except Exception:
                    # The pop is a convenience; the call log row must still be saved.
                    log.exception(
                        "live desk failed on %s for call %s/%s", event.kind, event.pbx, event.call_id
                    )
            if self.followups is not None and isinstance(event, CallAnswered | CallEnded):
                if followups_after is not None:
                    followups_after.append(changed)  # after the lanes commit (see ingest_batch)
                else:
                    # In the call's unit of work: a task and its call are stored together.
                    out += await self._follow_up(changed, repos, savepoint=not self.db.is_sqlite)
            out.append((CALL_TOPIC, changed.payload()))
            if changed.summary.direction in (Direction.INBOUND, Direction.OUTBOUND):
                to_erp.add(changed.id)
        if to_erp:
            # In the call's transaction: a call the hub stored is a call the ERPs will get.
            await repos.connectors.enqueue_calls(to_erp)
        return out

    @staticmethod
    def followup_store(repos: Repos) -> FollowUpStore:
        return FollowUpStore(repos.tasks, repos.teams, repos.directory)

    # --- PBX links -----------------------------------------------------------------------------
    def _batching_sink(self) -> EventSink:
        # An AMI stream has no replay: batching loses nothing a per-event sink would keep, and
        # a busy PBX's events share transactions. (Yeastar's link batches its own inbox and
        # hands each drained batch to handle_events before marking it done.)
        sink = BatchingSink(self.handle_events)
        self._sinks.append(sink)

        async def previewed(event: Event) -> None:
            self.preview((event,))
            await sink(event)

        return previewed

    def inbox_store(self) -> SqlInbox | SqliteInbox:
        """Where Yeastar webhooks wait between their ack and their ingest. On SQLite, a file of
        its own beside the database, so acks never wait for ingest's write lock."""
        if self._inbox is None:
            in_db = SqlInbox(self.db)
            file = self.db.sqlite_file
            self._inbox = SqliteInbox(SqliteInbox.beside(file), legacy=in_db) if file else in_db
        return self._inbox

    def link_factories(self) -> dict[PbxKind, Any]:
        region = self.settings.default_region

        def asterisk(record: PbxRecord, secrets: Mapping[str, str], sink: EventSink) -> PbxLink:
            from callbridge.pbx.asterisk.link import AsteriskConfig, AsteriskLink

            cfg = record.config
            return AsteriskLink(
                AsteriskConfig(
                    name=record.name,
                    host=str(cfg.get("host", "")),
                    port=int(cfg.get("port", 5038)),
                    username=str(cfg.get("username", "")),
                    secret=secrets.get("secret", ""),
                    # No patterns given: the driver's documented default (trunk*), not "no trunks".
                    trunk_patterns=tuple(cfg.get("trunks") or ()) or ("trunk*",),
                    default_region=region,
                    direction_variable=str(cfg.get("direction_variable") or "CALLBRIDGE_DIRECTION"),
                ),
                self._batching_sink(),
            )

        def yeastar(record: PbxRecord, secrets: Mapping[str, str], sink: EventSink) -> PbxLink:
            from callbridge.pbx.yeastar.link import YeastarConfig, YeastarLink

            cfg = record.config
            return YeastarLink(
                YeastarConfig(
                    name=record.name,
                    base_url=str(cfg.get("base_url", "")),
                    client_id=str(cfg.get("client_id", "")),
                    client_secret=secrets.get("client_secret", ""),
                    webhook_secret=secrets.get("webhook_secret", ""),
                    events="websocket" if cfg.get("events") == "websocket" else "webhook",
                    default_region=region,
                    timezone=str(cfg.get("timezone") or "UTC"),
                    queues=yeastar_queues(cfg),
                ),
                sink,
                inbox=self.inbox_store(),  # webhooks: persist first, process after
                # Each drained batch of the inbox: one ingest (ringing pops go out first).
                batch_sink=self._previewed_handle_events,
            )

        return {PbxKind.ASTERISK: asterisk, PbxKind.YEASTAR: yeastar}

    async def _record_link_status(self, name: str, status: LinkStatus) -> None:
        async with self.db.unit() as repos:
            await repos.pbxes.record_status(
                name, status.connected, status.detail, status.last_event_at, datetime.now(UTC)
            )

    def supervisor(self) -> LinkSupervisor:
        if self.links is None:
            self.links = LinkSupervisor(
                self.link_factories(), self.handle_event, report=self._record_link_status
            )
        return self.links

    def runs_embedded_link(self, record: PbxRecord) -> bool:
        # An Asterisk served by an agent beside it has no link from the hub.
        return record.enabled and not (record.kind is PbxKind.ASTERISK and record.config.get("agent"))

    async def start_link(self, record: PbxRecord, secrets: Mapping[str, str] | None = None) -> None:
        if not self.runs_embedded_link(record):
            if (
                record.enabled
                and record.kind is PbxKind.ASTERISK
                and record.config.get("agent")
                and not self.settings.redis_url
            ):
                # The agent dials in; until it does, actions fail fast with a clear message.
                # (With several workers only the one holding the agent's socket has its link.)
                from callbridge.services.agents import AgentLink

                self.supervisor().links.setdefault(record.name, AgentLink(record.name))
            return
        if self.settings.redis_url:
            # Several workers may serve: only the holder of the PBX's lease runs its link.
            self._lease_keeper().watch(record.name)
            return
        await self._run_link(record, secrets)

    async def _run_link_named(self, name: str) -> None:
        async with self.db.unit() as repos:
            record = await repos.pbxes.get(name)
        if self.runs_embedded_link(record):
            await self._run_link(record)

    async def _stop_link(self, name: str) -> None:
        if self.links is not None:
            await self.links.stop(name)

    def _lease_keeper(self) -> LinkLeases:
        if self.leases is None:
            from callbridge.live_redis import RedisLock

            self.leases = LinkLeases(
                RedisLock(self.settings.redis_url),
                secrets.token_hex(6),
                self._run_link_named,
                self._stop_link,
                ttl=self.settings.link_lease_seconds,
            )
        return self.leases

    def start_background(self) -> None:
        """Tasks every serving worker runs: answering PBX commands for the links it owns."""
        if self.commands is not None and self.settings.redis_url and not self._background:
            self._background.append(asyncio.create_task(self.commands.run(), name="pbx-commands"))

    async def _run_link(self, record: PbxRecord, secrets: Mapping[str, str] | None = None) -> None:
        if secrets is None:
            async with self.db.unit() as repos:
                secrets = await repos.pbxes.secrets(record.name)
        self.supervisor().start(record, secrets)
        if record.kind is PbxKind.YEASTAR:
            self.webhook_keys[record.webhook_key] = record.name

    async def start_links(self) -> None:
        """Connect to every configured PBX (on start, in the process that serves), then keep
        watching for PBXs added, edited, disabled or removed later (by the API of another worker
        or by `callbridge pbx …` in another process)."""
        await self.refresh_links()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_pbxes(), name="pbx-watch")

    async def refresh_links(self) -> None:
        """Bring this process's links in line with the PBX table: start new and re-enabled PBXs,
        restart edited ones, stop disabled and removed ones."""
        async with self._refreshing:
            # Settings, secrets and fingerprints from one read: a link is never built from a
            # record and secrets of two different moments (an edit committed in between).
            async with self.db.unit() as repos:
                found = await repos.pbxes.links()
            records = {record.name: record for record, _, _ in found}
            secrets = {record.name: values for record, values, _ in found}
            prints = {record.name: digest for record, _, digest in found}
            for name in [n for n in self._known_pbxes if n not in records]:
                del self._known_pbxes[name]
                await self.stop_link(name, "its PBX was removed")
            for name, record in records.items():
                known = self._known_pbxes.get(name)
                if known == prints.get(name):
                    continue
                if known is not None:
                    why = "its PBX was edited" if record.enabled else "its PBX is disabled"
                    await self.stop_link(name, why)
                self._known_pbxes[name] = prints.get(name, "")
                try:
                    await self.start_link(record, secrets[name])
                except Exception:
                    log.exception("could not start the link to PBX %s", name)

    async def stop_link(self, name: str, reason: str) -> None:
        """Stop whatever this process runs for PBX ``name``: its link (or lease on it), its
        webhook URL, and the connection of its agent, which is refused until re-enabled."""
        if self.leases is not None:
            await self.leases.unwatch(name)
        if self.links is not None:
            link = self.links.links.get(name)
            disconnect = getattr(link, "disconnect", None)
            if disconnect is not None:
                with contextlib.suppress(Exception):
                    await disconnect(reason)
            await self.links.stop(name)
        for key in [k for k, owner in self.webhook_keys.items() if owner == name]:
            del self.webhook_keys[key]
        log.info("link of PBX %s stopped: %s", name, reason)

    async def _watch_pbxes(self) -> None:
        while True:
            await asyncio.sleep(self.settings.pbx_watch_seconds)
            try:
                await self.refresh_links()
            except Exception as exc:  # the database may be restarting: try again next round
                log.warning("could not look for changed PBXs: %s", type(exc).__name__)

    def start_connectors(self) -> None:
        """Sync the ERP connectors on their schedule and write calls into them (the lifespan
        calls this; calls left waiting before a restart go first)."""
        if self.connectors is not None and self.settings.start_connectors:
            self.connectors.start()

    async def close(self) -> None:
        if self.mail is not None:
            await self.mail.close()
        if self.connectors is not None:
            await self.connectors.close()
        if self.fetcher is not None:
            await self.fetcher.close()
        if self.voicemail_fetcher is not None:
            await self.voicemail_fetcher.close()
        if self.retention is not None:
            await self.retention.close()
        if self.pbx_copies is not None:
            await self.pbx_copies.close()
        if self.voicemail_pbx_copies is not None:
            await self.voicemail_pbx_copies.close()
        if self.transcription is not None:
            await self.transcription.close()
        if isinstance(self.storage, S3Storage):
            await self.storage.close()
        if self._token_flush is not None:
            self._token_flush.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._token_flush
            self._token_flush = None
        await self.flush_token_uses()
        if self._analyzer is not None:
            self._analyzer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._analyzer
            self._analyzer = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        # Stop the links before giving their leases back, so two never run at once.
        if self.links is not None:
            await self.links.close()
        for sink in self._sinks:
            await sink.close()
        self._sinks.clear()
        if self.desk is not None:
            await self.desk.close()
        if self.leases is not None:
            await self.leases.close()
            closer = getattr(self.leases.lock, "close", None)
            if closer is not None:
                await closer()
        if self._fast is not None:
            await self._fast.close()
            self._fast = None
        await self.board.close()
        await self.bus.close()
        if self._inbox is not None:  # after the links: they commit to it when stopping
            await self._inbox.close()
            self._inbox = None
        await self.db.dispose()


def _seconds(value: int) -> timedelta:
    return timedelta(seconds=value)


def make_storage(settings: Settings) -> RecordingStorage:
    """Where recordings are stored: files under the data dir, or the S3-compatible store that
    ``CALLBRIDGE_RECORDINGS_URL`` names."""
    local = settings.data_dir / "recordings"
    location = parse_recordings_url(settings.recordings_url)
    if location is None:
        return LocalStorage(local)
    secret = settings.recordings_s3_secret_key
    return S3Storage(
        location,
        local / ".incoming",
        endpoint_url=settings.recordings_s3_endpoint or None,
        region=settings.recordings_s3_region or None,
        access_key=settings.recordings_s3_access_key or None,
        secret_key=secret.get_secret_value() if secret else None,
    )


def _make_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        from callbridge.bus_redis import RedisBus

        return RedisBus(settings.redis_url)
    return LocalBus()
