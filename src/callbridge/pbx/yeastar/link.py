"""``YeastarLink``: one Yeastar P-Series PBX as a :class:`callbridge.services.ports.PbxLink`.

Events come in by signed webhook (the web route calls :meth:`YeastarLink.handle_webhook`) or
by WebSocket subscription (``run()`` holds it). Either way each message is de-duplicated, fed
to the per-PBX :class:`~.mapping.YeastarMapper`, and the resulting normalized events go to the
:data:`~callbridge.services.ports.EventSink` in order. Commands go out through the OpenAPI
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from callbridge.domain.errors import PbxRejected
from callbridge.domain.events import Event, TransferKind
from callbridge.pbx.yeastar.client import (
    DEFAULT_USER_AGENT,
    CdrRecord,
    RecordingLink,
    YeastarAuthFailed,
    YeastarClient,
    YeastarIpBlocked,
)
from callbridge.pbx.yeastar.inbox import InboxStore, WebhookInbox
from callbridge.pbx.yeastar.mapping import MapperSettings, YeastarMapper, pick_far_party
from callbridge.pbx.yeastar.payloads import DEFAULT_TOPICS, Member, MemberKind
from callbridge.pbx.yeastar.webhooks import (
    DEFAULT_MAX_BYTES,
    DuplicateFilter,
    Envelope,
    WebhookMalformed,
    YeastarMessage,
    message_of,
    read_json_envelopes,
    verify_webhook,
)
from callbridge.pbx.yeastar.websocket import YeastarSubscription
from callbridge.services.calllog import IngestFailed
from callbridge.services.ports import EventSink, LinkStatus, Originate

log = logging.getLogger(__name__)

# The inbox consumer shares the event loop with the webhook route: it hands the loop back every
# few rows, so an ack never waits for a whole batch to be mapped (~0.1 ms a row).
YIELD_EVERY = 10
COALESCE_SECONDS = 0.02  # an event reaches the call log (and the screen pop) at most this much later
# Acks first. Persist first, process after: while webhooks pour in faster than BURST_RATE (a large
# PBX peaks at a few dozen a second), the consumer keeps to about INGEST_SHARE of the event loop
# and the PBX gets the rest, so it is never kept waiting into its timeout (and a retry, which
# only adds load). The backlog stays safe in the inbox and is processed as the burst allows, and
# at full speed once it is over. Below BURST_RATE nothing waits.
BURST_RATE = 500.0  # webhooks/s
INGEST_SHARE = 0.1
PACE_MAX = 1.0  # seconds; the longest the consumer pauses at a time
RATE_WINDOW = 0.1  # seconds
# While the call log refuses writes (database down), a drained batch is offered again after this
# long, doubling up to the maximum; its webhooks stay in the inbox meanwhile.
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 30.0
PARSED_KEPT = 256  # acknowledged webhooks whose parsed form waits in memory for the consumer,
PARSED_KEPT_BYTES = 8 * 1024 * 1024  # and their bodies' size at most


@dataclass
class YeastarConfig:
    """Plain settings for one PBX (the app's Settings builds these; secrets stay out of repr)."""

    name: str
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    webhook_secret: str = field(default="", repr=False)
    events: Literal["webhook", "websocket"] = "webhook"
    default_region: str = "US"
    timezone: str = "UTC"  # the PBX's: CDR start times are its local time
    queues: tuple[tuple[str, str], ...] = ()  # the PBX's queue numbers and their names
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 10.0
    topics: tuple[int, ...] = DEFAULT_TOPICS
    serial: str = ""  # the PBX's SN; when set, webhooks from another PBX are refused
    heartbeat_interval: float = 30.0
    tick_interval: float = 2.0
    webhook_max_bytes: int = DEFAULT_MAX_BYTES


def body_key(body: bytes) -> str:
    """A webhook body's key for duplicate detection: its hash (a PBX retry is the same bytes)."""
    return "b" + hashlib.sha256(body).hexdigest()[:40]


class YeastarLink:
    def __init__(
        self,
        config: YeastarConfig,
        sink: EventSink,
        *,
        client: YeastarClient | None = None,
        mapper_settings: MapperSettings | None = None,
        inbox: InboxStore | None = None,
        batch_sink: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._sink = sink
        # Where the hub takes several events at once (one transaction); else one by one.
        self._batch_sink = batch_sink
        self._owns_client = client is None
        self.client = client or YeastarClient(
            config.base_url,
            config.client_id,
            config.client_secret,
            user_agent=config.user_agent,
            timeout=config.timeout,
        )
        settings = mapper_settings or MapperSettings(
            default_region=config.default_region, pbx_timezone=config.timezone, queues=config.queues
        )
        self.mapper = YeastarMapper(config.name, settings)
        self._dupes = DuplicateFilter()
        # With an inbox, webhooks are acknowledged once stored and processed by run().
        self.inbox = WebhookInbox(config.name, inbox) if inbox is not None else None
        self._stored_keys = DuplicateFilter()  # retries of what the inbox holds already
        # What the ack parsed, for the consumer to take instead of parsing the stored body again.
        self._parsed: dict[bytes, list[Envelope]] = {}
        self._parsed_bytes = 0
        self.malformed = 0  # stored webhooks whose payload lacked what the driver needs
        self.webhooks_received = 0  # requests at the webhook endpoint, for pacing the consumer
        self._window_start = 0.0  # the rate of those requests, counted in windows of RATE_WINDOW
        self._window_count = 0
        self._window_rate = 0.0
        self.paced_seconds = 0.0  # how long the consumer stood back for bursts of webhooks
        self.inbox_processed = 0
        self.store_failures = 0
        self._lock = asyncio.Lock()  # one ordered stream into the mapper and the sink
        self._subscription: YeastarSubscription | None = None
        self._running = False
        self._fatal = ""
        self.last_event_at: datetime | None = None
        self.last_event_type = 0
        self.messages = 0
        self.duplicates = 0

    # ----------------------------------------------------------------- status
    def status(self) -> LinkStatus:
        token = self.client.token_status()
        if self.config.events == "websocket":
            connected = self._subscription is not None and self._subscription.connected
        else:
            connected = self._running and token.state == "valid"
        detail = self._fatal or (
            "IP blocked by the PBX"
            if token.state == "blocked"
            else f"{self.config.events}; token {token.state}"
        )
        extra = {
            "events": self.config.events,
            "token": token.state,
            "token_expires_in": f"{token.access_expires_in:.0f}"
            if token.access_expires_in is not None
            else "",
            "logins": str(token.logins),
            "messages": str(self.messages),
            "duplicates": str(self.duplicates),
            "last_event_type": str(self.last_event_type or ""),
        }
        return LinkStatus(connected=connected, detail=detail, last_event_at=self.last_event_at, extra=extra)

    # ----------------------------------------------------------------- lifetime
    async def run(self) -> None:
        """Keep the token fresh, close abandoned calls and, in WebSocket mode, stay subscribed.
        Raises on a blocked IP or refused credentials (no retry can fix those)."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._keep_token())
                group.create_task(self._tick_loop())
                if self.inbox is not None:
                    group.create_task(self._process_inbox(self.inbox))
                if self.config.events == "websocket":
                    self._subscription = YeastarSubscription(
                        self.client,
                        self.config.topics,
                        self.handle_message,
                        user_agent=self.config.user_agent,
                        heartbeat_interval=self.config.heartbeat_interval,
                    )
                    group.create_task(self._subscription.run())
        except* (YeastarIpBlocked, YeastarAuthFailed) as group_exc:
            first = group_exc.exceptions[0]
            self._fatal = str(first)
            raise first from None
        finally:
            self._running = False
            if self.inbox is not None:
                await asyncio.shield(self.inbox.aclose())
            if self._owns_client:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.client.aclose())

    async def _keep_token(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.client.access_token()
                delay = 1.0
                status = self.client.token_status()
                left = status.access_expires_in or 60.0
                # Wake a little before the client's own renewal margin kicks in.
                await asyncio.sleep(max(1.0, min(60.0, left / 4)))
            except (YeastarIpBlocked, YeastarAuthFailed):
                raise
            except PbxRejected as exc:
                log.warning("yeastar %s: token renewal refused: %s", self.name, exc)
            except Exception as exc:  # keep the link alive: the next try may work
                log.warning("yeastar %s: token renewal failed: %s", self.name, type(exc).__name__)
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            async with self._lock:
                await self._deliver(self.mapper.tick())

    # ----------------------------------------------------------------- events in
    async def handle_webhook(self, raw_body: bytes, signature: str | None) -> int:
        """Verify, parse and ingest one webhook request; returns the number of new events.

        Raises the :mod:`.webhooks` errors (``WebhookTooLarge``, ``WebhookSignatureInvalid``,
        ``WebhookMalformed``) for the web layer to map to 4xx."""
        if self.inbox is not None:
            self._count_webhook()
        envelopes = verify_webhook(
            raw_body,
            signature,
            self.config.webhook_secret,
            self.config.webhook_max_bytes,
            expected_sn=self.config.serial or None,
        )
        if self.inbox is None:
            return await self.handle_webhook_messages([message_of(envelope) for envelope in envelopes])
        # Persist first, process after: the ack checked what it must (size, signature, envelopes)
        # and stores the body; the payloads are read by the consumer.
        # A PBX's retry is the same request again, byte for byte; a replay that differs in its
        # bytes only is caught by the consumer, which compares decoded content.
        stored_key = body_key(raw_body)
        if stored_key in self._stored_keys:
            self.duplicates += len(envelopes)
            return 0  # a retry of a stored body: already safe, nothing to write
        await self.inbox.persist(raw_body)
        self._stored_keys.seen(stored_key)
        while self._parsed and (
            len(self._parsed) >= PARSED_KEPT or self._parsed_bytes + len(raw_body) > PARSED_KEPT_BYTES
        ):  # the consumer is far behind: it parses the oldest itself
            oldest = next(iter(self._parsed))
            self._parsed_bytes -= len(oldest)
            del self._parsed[oldest]
        if raw_body not in self._parsed:
            self._parsed[raw_body] = envelopes
            self._parsed_bytes += len(raw_body)
        return len(envelopes)

    async def _process_inbox(self, inbox: WebhookInbox, batch: int = 200) -> None:
        """The one ordered consumer of this PBX's inbox; also drains what a crash left behind."""
        while True:
            inbox.stored.clear()  # before reading, so a commit after the read wakes us again
            rows = await inbox.store.pending(self.name, batch)
            if not rows:
                await inbox.stored.wait()
                # Let a burst's next webhooks join this batch: one ingest transaction for several
                # webhooks costs far less CPU than one each, CPU the acks share.
                await asyncio.sleep(COALESCE_SECONDS)
                continue
            events: list[Event] = []
            since = self._pace_mark()
            parsed: list[tuple[str, list[YeastarMessage]]] = []
            for n, row in enumerate(rows, start=1):
                if n % YIELD_EVERY == 0:
                    since = await self._pace(since)  # let the acks waiting on the event loop go first
                envelopes = self._parsed.pop(row.body, None)
                if envelopes is not None:
                    self._parsed_bytes -= len(row.body)
                try:
                    if envelopes is None:  # stored by an earlier run, or long ago
                        envelopes = read_json_envelopes(row.body)  # verified when it was stored
                    messages = [message_of(envelope) for envelope in envelopes]
                except WebhookMalformed as exc:
                    self.malformed += 1
                    log.error("yeastar %s: stored webhook %d dropped: %s", self.name, row.id, exc.message)
                    messages = []
                parsed.append((body_key(row.body), messages))
            # Durable duplicate detection: what was processed before (a PBX retry after a crash,
            # a replay after a restart) is known by its body's hash or its decoded event's key,
            # whatever this process remembers.
            wanted = [key for body, messages in parsed for key in (body, *(m.dedupe_key for m in messages))]
            known = await inbox.store.seen(self.name, wanted)
            new_keys: list[str] = []
            for n, (row, (body, messages)) in enumerate(zip(rows, parsed, strict=True), start=1):
                if n % YIELD_EVERY == 0:
                    since = await self._pace(since)
                if body in known:
                    self.duplicates += len(messages)
                    log.info("yeastar %s: stored webhook %d dropped: processed before", self.name, row.id)
                    continue
                new_keys.append(body)
                known.add(body)
                for message in messages:
                    if message.dedupe_key in known:
                        self.duplicates += 1
                        continue
                    known.add(message.dedupe_key)
                    new_keys.append(message.dedupe_key)
                    events += await self._map_message(message, row.received_at)
            # The whole batch of stored webhooks goes to the hub at once (one transaction for
            # many events) before the rows are marked done (and their keys remembered); while
            # the call log cannot store it, the rows stay and the same events are offered again
            # (they are idempotent).
            await self._deliver_until_stored(events)
            await inbox.store.done(self.name, [row.id for row in rows], new_keys)
            self.inbox_processed += len(rows)
            await self._pace(since)

    def _pace_mark(self) -> float:
        return asyncio.get_running_loop().time()

    async def _pace(self, started: float) -> float:
        """Yield the event loop; during a burst of webhooks, for long enough that the work done
        since ``started`` stays about INGEST_SHARE of the time. Returns the next mark."""
        now = asyncio.get_running_loop().time()
        spent = now - started
        pause = 0.0
        if spent > 0 and self.webhook_rate() >= BURST_RATE:
            pause = min(spent * (1 - INGEST_SHARE) / INGEST_SHARE, PACE_MAX)
        await asyncio.sleep(pause)
        mark = self._pace_mark()
        if pause:
            self.paced_seconds += mark - now  # counted once served, as it really lasted
        return mark

    def _count_webhook(self) -> None:
        self.webhooks_received += 1
        now = asyncio.get_running_loop().time()
        if now - self._window_start >= RATE_WINDOW:
            self._window_rate = self._window_count / (now - self._window_start)
            self._window_start, self._window_count = now, 0
        self._window_count += 1

    def webhook_rate(self) -> float:
        """Webhook requests per second, over the last RATE_WINDOW or two."""
        elapsed = asyncio.get_running_loop().time() - self._window_start
        current = self._window_count / max(elapsed, RATE_WINDOW)
        return current if elapsed >= RATE_WINDOW else max(current, self._window_rate)

    async def handle_webhook_messages(self, messages: Iterable[YeastarMessage]) -> int:
        count = 0
        for message in messages:
            count += await self.handle_message(message)
        return count

    async def handle_message(self, message: YeastarMessage, received_at: datetime | None = None) -> int:
        """Ingest one verified envelope (webhook or WebSocket). Idempotent. ``received_at``
        stamps the events (a stored webhook keeps the time it arrived, not the time it is read)."""
        return await self._deliver(await self._map_message(message, received_at))

    async def _map_message(self, message: YeastarMessage, received_at: datetime | None) -> list[Event]:
        async with self._lock:
            if self._dupes.seen(message.dedupe_key):
                self.duplicates += 1
                log.debug("yeastar %s: duplicate event %s dropped", self.name, message.type)
                return []
            self.messages += 1
            self.last_event_at = received_at or datetime.now(UTC)
            self.last_event_type = message.type
            if message.payload is None:
                return []
            try:
                return list(self.mapper.feed(message.payload, received_at))
            except Exception:  # an event we cannot map must not stop the stream
                log.exception("yeastar %s: could not map event %s", self.name, message.type)
                return []

    async def _deliver_until_stored(self, events: Sequence[Event]) -> None:
        delay = STORE_RETRY_FIRST
        while True:
            try:
                await self._deliver(events, retry=True)
                return
            except IngestFailed as exc:
                self.store_failures += 1
                log.warning(
                    "yeastar %s: the call log could not store %d events (%s); their webhooks stay in "
                    "the inbox and are offered again in %.0f s",
                    self.name,
                    len(events),
                    exc.message,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX)

    async def _deliver(self, events: Sequence[Event], *, retry: bool = False) -> int:
        if not events:
            return 0
        try:
            if self._batch_sink is not None:
                await self._batch_sink(events)
            else:
                for event in events:
                    await self._sink(event)
        except IngestFailed:
            if retry:
                raise  # the database refused the batch: the caller keeps its webhooks and retries
            log.exception("yeastar %s: the call log could not store %d events", self.name, len(events))
        except Exception:
            first = events[0]
            log.exception(
                "yeastar %s: sink failed for %d events (first: %s of call %s)",
                self.name,
                len(events),
                first.kind,
                getattr(first, "call_id", "-"),
            )
        return len(events)

    # ----------------------------------------------------------------- commands
    async def originate(self, request: Originate) -> str:
        number = "".join(request.number.split())
        if not request.extension or not number:
            raise PbxRejected("click-to-call needs an extension and a number")
        result = await self.client.dial(request.extension, number, auto_answer=request.auto_answer)
        if not result.call_id:
            raise PbxRejected("the PBX accepted the call but returned no call id")
        async with self._lock:
            await self._deliver(self.mapper.note_originated(result.call_id, request.extension, number))
        log.info("yeastar %s: dialled from %s, call %s", self.name, request.extension, result.call_id)
        return result.call_id

    async def _members(self, call_id: str) -> tuple[Member, ...]:
        members = self.mapper.members(call_id)
        if any(m.status.value != "BYE" for m in members):
            return members
        # Not seen (hub restarted, events lost): ask the PBX.
        for info in await self.client.query_calls(call_id=call_id):
            if info.call_id == call_id:
                return info.members
        return ()

    async def _far_party(self, call_id: str) -> str:
        channel = pick_far_party(await self._members(call_id))
        if channel is None:
            raise PbxRejected(f"call {call_id} is not in progress")
        return channel

    async def _extension_channel(self, call_id: str, extension: str) -> str:
        for m in await self._members(call_id):
            if m.kind is MemberKind.EXTENSION and m.number == extension and m.status.value != "BYE":
                return m.channel_id
        raise PbxRejected(f"extension {extension} is not on call {call_id}")

    async def hangup(self, call_id: str) -> None:
        await self.client.hangup(await self._far_party(call_id))

    async def redirect(self, call_id: str, destination: str) -> None:
        """Blind transfer of the external party (or the caller, for internal calls)."""
        channel = await self._far_party(call_id)
        self.mapper.note_transfer(call_id, TransferKind.BLIND)
        await self.client.transfer_blind(channel, destination)

    async def transfer_attended(self, call_id: str, extension: str, destination: str) -> None:
        """Start an attended transfer from ``extension``'s leg; finish with the client's
        ``transfer_attended_operate(channel, "complete")``."""
        channel = await self._extension_channel(call_id, extension)
        self.mapper.note_transfer(call_id, TransferKind.ATTENDED)
        await self.client.transfer_attended(channel, destination)

    async def hold(self, call_id: str, extension: str) -> None:
        await self.client.hold(await self._extension_channel(call_id, extension))

    async def unhold(self, call_id: str, extension: str) -> None:
        await self.client.unhold(await self._extension_channel(call_id, extension))

    async def accept_inbound(self, call_id: str) -> None:
        """Route a held (30016) inbound call now. Not an "answer": Yeastar has no answer API."""
        await self.client.accept_inbound(await self._far_party(call_id))

    async def refuse_inbound(self, call_id: str) -> None:
        await self.client.refuse_inbound(await self._far_party(call_id))

    async def recording_link(self, file: str) -> RecordingLink:
        return await self.client.recording_link(file=file)

    async def recent_cdr(self, pages: int = 1, page_size: int = 100) -> list[CdrRecord]:
        """Newest CDRs first, for back-filling calls missed while the hub was down."""
        out: list[CdrRecord] = []
        for page in range(1, pages + 1):
            result = await self.client.list_cdr(page, page_size)
            out.extend(result.records)
            if len(result.records) < page_size:
                break
        return out


__all__ = ["YeastarConfig", "YeastarLink"]
