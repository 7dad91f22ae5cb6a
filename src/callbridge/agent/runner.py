"""``callbridge agent``: the AMI link beside Asterisk, the outbox, and the WebSocket to the hub.

Three things run side by side and never wait for each other:

* the AMI link (the same :class:`AsteriskLink` and call tracker the hub runs when it connects to
  AMI itself), whose normalized events, and raw events picked by the events map, go into the
  outbox — a local write, so a slow or absent hub never stalls the AMI socket;
* the hub link, which sends outbox rows in order with a bounded window of unacknowledged rows,
  deletes rows only when the hub acknowledges them (after its commit), carries out actions the
  hub sends and applies the settings it pushes;
* a status report (AMI up?, outbox depth and age) every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

import callbridge
from callbridge.agent.config import AgentConfig
from callbridge.agent.outbox import Outbox, Row
from callbridge.agent.uploads import Uploader, delete_copy
from callbridge.agent.voicemail import VoicemailSender, delete_message
from callbridge.domain.errors import CallbridgeError, InvalidInput, PbxRejected, PbxUnavailable
from callbridge.domain.events import CallEnded, Disposition, Event, HangupSide
from callbridge.pbx.asterisk.codec import Message
from callbridge.pbx.asterisk.link import AsteriskConfig, AsteriskLink
from callbridge.services.agents import (
    AGENT_FRAME_BYTES,
    CLOSE_REPLACED,
    CLOSE_TOKEN_REFUSED,
    MAX_ITEM_BYTES,
    PROTOCOL_VERSION,
    RAW_MAX_NAME,
    EventsMap,
    clip_headers,
    parse_rules,
)
from callbridge.services.ports import EventSink, Originate

log = logging.getLogger(__name__)

# The agent does not know its PBX's name in the hub; the hub stamps it on every event it takes.
PBX_PLACEHOLDER = "agent"
# AMI security events the guard reads (reference/asterisk_ami.md §3).
GUARD_EVENTS = frozenset(
    {
        "ChallengeResponseFailed",
        "InvalidAccountID",
        "InvalidPassword",
        "FailedACL",
        "SuccessfulAuth",
        "ChallengeSent",
    }
)
# app_voicemail says a mailbox changed: the agent takes its new messages (agent/voicemail.py).
VOICEMAIL_EVENTS = frozenset({"MessageWaiting"})


# Most events written to the outbox in one commit by the AMI link's forwarder.
FORWARD_BATCH = 1000
# Seconds between checkpoints of the outbox's write-ahead log (done in a thread).
CHECKPOINT_INTERVAL = 1.0
# Rows the hub rejected, logged one by one per reject frame; the rest are counted in one line.
MAX_REJECT_LINES = 10


class TokenRefused(Exception):
    """The hub refused the agent token (forged, revoked, rotated)."""


class AgentAmiLink(AsteriskLink):
    """The hub's AsteriskLink with two additions the agent needs: raw events for the events map
    and the security guard, and closing calls that ended while the agent was not running."""

    def __init__(self, config: AsteriskConfig, sink: EventSink, agent: Agent) -> None:
        super().__init__(config, sink)
        self._agent = agent
        self._reconciled_once = False
        self.want_events(frozenset())

    def want_events(self, extra: frozenset[str]) -> frozenset[str]:
        """Receive the tracker's events, the guard's and ``extra`` (the events map's names);
        returns the names that were not wanted before."""
        wanted = self.tracker.event_names | GUARD_EVENTS | VOICEMAIL_EVENTS | extra
        before = self.client.settings.event_names or frozenset()
        self.client.settings = replace(self.client.settings, event_names=wanted)
        return wanted - before

    async def widen_server_filter(self, names: frozenset[str]) -> None:
        """Asterisk filters for us on this session: let the new names through too."""
        if not names or not self.client.server_filtered or not self.client.connected:
            return
        pattern = "Event: (" + "|".join(sorted(names)) + ")"
        try:
            reply = await self.client.send_action("Filter", {"Operation": "Add", "Filter": pattern})
            if reply.get("Response") == "Success":
                return
            problem = reply.get("Message") or "refused"
        except PbxUnavailable as exc:
            problem = exc.message
        # A new session installs the whole filter again.
        log.warning("could not widen the AMI event filter (%s); reconnecting to AMI", problem)
        await self.client.close()

    def _on_ami_event(self, msg: Message, received_at: datetime) -> None:
        self._agent.on_raw(msg, received_at)
        super()._on_ami_event(msg, received_at)

    async def _forward(self) -> None:
        """Like the hub's forwarder, but each burst of queued events (one socket read carries
        many) goes into the outbox in one commit instead of one commit per event."""
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < FORWARD_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                self._agent.store_events(batch)
            except Exception:
                log.exception(
                    "outbox: could not store %d event(s) at once; storing them one by one", len(batch)
                )
                for event in batch:
                    try:
                        self._agent.store_events([event])
                    except Exception:
                        # A failing handler must not stop the link (events vs commands, CONVENTIONS 5).
                        log.exception(
                            "outbox: could not store %s for %s", event.kind, getattr(event, "call_id", "")
                        )
            finally:
                for _ in batch:
                    queue.task_done()
            # Let the socket reader run between bursts (it may have a whole read to hand over).
            await asyncio.sleep(0)

    async def _on_connect(self) -> None:
        await super()._on_connect()
        if not self._reconciled_once:
            self._reconciled_once = True
            for event in self._agent.orphans(self):
                self._queue.put_nowait(event)

    def apply(self, trunks: tuple[str, ...], direction_variable: str) -> None:
        """New trunk patterns / direction variable, effective for the next AMI event."""
        tracker = self.tracker
        if (
            tracker.config.trunk_patterns == trunks
            and tracker.config.direction_variable == direction_variable
        ):
            return
        tracker.config = replace(tracker.config, trunk_patterns=trunks, direction_variable=direction_variable)
        tracker._trunk_cache.clear()
        dv = direction_variable
        tracker._direction_names = {dv, f"_{dv}", f"__{dv}"} if dv else set()


class Agent:
    def __init__(self, config: AgentConfig, *, guard: Any = None) -> None:
        self.config = config
        self.outbox = Outbox(config.outbox, max_rows=config.outbox_max_rows, durable=config.outbox_durable)
        self.events_map = EventsMap()
        self.uploader = Uploader(config, self.outbox)
        self.voicemail = VoicemailSender(config, self.outbox, self.uploader)
        self.guard = guard
        self.guard_enabled = False
        self._bans_sent = ""
        self.settings: dict[str, Any] = {}
        self.ami = AgentAmiLink(
            AsteriskConfig(
                name=PBX_PLACEHOLDER,
                host=config.ami_host,
                port=config.ami_port,
                username=config.ami_username,
                secret=config.ami_secret,
                trunk_patterns=config.trunks or ("trunk*",),
                default_region=config.default_region,
                direction_variable="CALLBRIDGE_DIRECTION",
                action_timeout=config.action_timeout,
            ),
            self._store_event,
            self,
        )
        self.hub_connected = False
        self._background: set[asyncio.Task[None]] = set()
        self.pbx = ""
        self.last_event_at: datetime | None = None
        self._ws: ClientConnection | None = None
        self._sent = 0
        self._wake = asyncio.Event()
        cached = self.outbox.meta("settings")
        if cached:
            with contextlib.suppress(ValueError, CallbridgeError):
                self.apply_settings(json.loads(cached), persist=False)

    # -- AMI side ---------------------------------------------------------------------------------

    async def _store_event(self, event: Event) -> None:
        self.store_events([event])

    def store_events(self, events: list[Event]) -> None:
        """Write normalized events to the outbox, in order, in one commit."""
        self.outbox.append_many([("event", event.to_dict()) for event in events])
        self.last_event_at = events[-1].at

    def on_raw(self, msg: Message, received_at: datetime) -> None:
        name = msg.name
        if name == "MessageWaiting":
            self.voicemail.message_waiting(msg.get("Mailbox") or "", msg.get("Linkedid") or "")
        if self.guard is not None and self.guard_enabled:
            try:
                self.guard.feed(msg, received_at)
            except Exception:
                log.exception("security guard failed on %s", name)
        if self.events_map and self.events_map.wants(name, msg.get):
            headers: dict[str, Any] = {}
            for key, value in msg.items():
                if key in headers:
                    prev = headers[key]
                    headers[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
                else:
                    headers[key] = value
            # Clipped as the hub would (values, header count, size): the outbox and the frames
            # stay bounded whatever Asterisk sends.
            self.outbox.append(
                "raw",
                {
                    "name": name[:RAW_MAX_NAME],
                    "headers": clip_headers(headers),
                    "at": received_at.isoformat(),
                },
            )

    def orphans(self, link: AsteriskLink) -> list[Event]:
        """Calls the outbox saw start whose channels are gone: they ended while we were away."""
        now = datetime.now(UTC)
        out: list[Event] = []
        for call_id, answered_by in self.outbox.open_calls():
            if link.tracker.channels_of(call_id):
                continue
            log.warning("call %s ended while the agent was not running; closing it", call_id)
            out.append(
                CallEnded(
                    pbx=PBX_PLACEHOLDER,
                    at=now,
                    call_id=call_id,
                    disposition=Disposition.ANSWERED if answered_by else Disposition.MISSED,
                    hangup_side=HangupSide.UNKNOWN,
                    answered_by=answered_by,
                )
            )
        return out

    # -- settings from the hub --------------------------------------------------------------------

    def apply_settings(self, settings: dict[str, Any], *, persist: bool = True) -> None:
        rules = parse_rules(settings.get("events_map"))
        trunks = tuple(str(t) for t in settings.get("trunks") or ()) or self.config.trunks or ("trunk*",)
        direction = str(settings.get("direction_variable") or "CALLBRIDGE_DIRECTION")
        self.ami.apply(trunks, direction)
        self.events_map = EventsMap(rules)
        added = self.ami.want_events(frozenset(r.event for r in rules))
        if added:
            with contextlib.suppress(RuntimeError):  # no running loop yet: applied at login
                task = asyncio.get_running_loop().create_task(self.ami.widen_server_filter(added))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        guard = settings.get("guard")
        if isinstance(guard, dict):
            self.guard_enabled = bool(guard.get("enabled"))
            if self.guard is not None:
                try:
                    self.guard.configure(guard_thresholds(guard))
                except (ValueError, TypeError) as exc:
                    log.error("guard settings from the hub not applied: %s", exc)
        self.settings = settings
        if persist:
            self.outbox.set_meta("settings", json.dumps(settings))
        log.info("settings applied: %d trunk pattern(s), %d events map rule(s)", len(trunks), len(rules))

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ami = self.ami.status()
        return {
            "type": "status",
            "ami_up": ami.connected,
            "ami_detail": ami.detail,
            "outbox_depth": self.outbox.depth,
            "outbox_age_seconds": round(self.outbox.oldest_age(), 3),
            "outbox_dropped": self.outbox.dropped,
            "uploads_waiting": self.outbox.upload_count(),
            "live_calls": self.ami.tracker.live_calls,
            "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
        }

    def bans_frame(self, *, force: bool = False) -> dict[str, Any] | None:
        """The guard's current bans, when they changed since last sent (or ``force``)."""
        if self.guard is None:
            return None
        frame = {"type": "bans", "items": self.guard.bans_for_hub()}
        text = json.dumps(frame["items"], sort_keys=True)
        if text == self._bans_sent and not force:
            return None
        self._bans_sent = text
        return frame

    # -- running ----------------------------------------------------------------------------------

    async def start_guard(self) -> None:
        """Build the security guard with the configured firewall backend (unless given or off)."""
        if self.guard is None and self.config.guard_backend != "off":
            from callbridge.agent.firewall import GuardService, make_backend

            self.guard = GuardService(await make_backend(self.config.guard_backend))
            guard = self.settings.get("guard")
            if isinstance(guard, dict):
                with contextlib.suppress(ValueError, TypeError):
                    self.guard.configure(guard_thresholds(guard))
        starter = getattr(self.guard, "start", None)
        if starter is not None:
            try:
                await starter()
            except Exception as exc:
                # Without a firewall the guard still decides and reports; bans are not enforced.
                log.error("security guard: firewall setup failed (%s); bans are not enforced", exc)

    async def run(self) -> None:
        await self.start_guard()
        ami = asyncio.create_task(self._run_ami(), name="agent-ami")
        hub = asyncio.create_task(self._run_hub(), name="agent-hub")
        checkpoints = asyncio.create_task(self._run_checkpoints(), name="agent-outbox-checkpoint")
        uploads = asyncio.create_task(self.uploader.run(), name="agent-uploads")
        voicemail = asyncio.create_task(self.voicemail.run(), name="agent-voicemail")
        try:
            await asyncio.gather(ami, hub, checkpoints, uploads, voicemail)
        finally:
            for task in (ami, hub, checkpoints, uploads, voicemail):
                task.cancel()
            for task in (ami, hub, checkpoints, uploads, voicemail):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            closer = getattr(self.guard, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
            self.outbox.close()

    async def _run_checkpoints(self) -> None:
        """Checkpoint the outbox's write-ahead log in a thread, off the event loop."""
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await asyncio.to_thread(self.outbox.checkpoint)
            except Exception as exc:  # SQLite checkpoints by itself past its bound anyway
                log.warning("outbox checkpoint failed: %s", exc)

    async def _run_ami(self) -> None:
        delay = self.config.backoff_initial
        while True:
            try:
                await self.ami.run()
                delay = self.config.backoff_initial
            except asyncio.CancelledError:
                raise
            except PbxRejected as exc:
                log.error("AMI refused the agent: %s; next try in 300 s", exc.message)
                delay = 300.0
            except Exception as exc:
                log.warning("AMI link stopped (%s); retry in %.1f s", exc, delay)
                delay = min(self.config.backoff_max, delay * 2)
            await asyncio.sleep(delay)

    async def _run_hub(self) -> None:
        failures = 0
        refused = 0
        while True:
            try:
                await self._session()
                failures = 0
                delay = self.config.backoff_initial
            except asyncio.CancelledError:
                raise
            except TokenRefused as exc:
                refused += 1
                delay = min(self.config.refused_backoff_max, self.config.refused_backoff * 2 ** (refused - 1))
                log.error("the hub refused this agent: %s; next try in %.0f s", exc, delay)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI, ValueError) as exc:
                failures += 1
                delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (failures - 1))
                # The hub refused a frame of ours (binary, too big, not JSON, bad seq): a bug, loud.
                refused_frame = (
                    isinstance(exc, ConnectionClosed)
                    and exc.rcvd is not None
                    and (exc.rcvd.code in (1003, 1007, 1008, 1009))
                )
                log.log(
                    logging.ERROR if refused_frame else logging.WARNING,
                    "hub link down (%s); retry in %.1f s",
                    _describe(exc),
                    delay,
                )
            finally:
                self.hub_connected = False
                self._ws = None
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _session(self) -> None:
        cfg = self.config
        try:
            ws = await connect(
                cfg.link_url,
                additional_headers={"Authorization": f"Bearer {cfg.token}"},
                user_agent_header=f"callbridge-agent/{callbridge.__version__}",
                open_timeout=cfg.connect_timeout,
                ping_interval=10,
                ping_timeout=20,
                close_timeout=5,
                max_size=16 * 2**20,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise TokenRefused(f"HTTP {exc.response.status_code}") from exc
            raise
        async with ws:
            try:
                await ws.send(
                    json.dumps(
                        {
                            "type": "hello",
                            "protocol": PROTOCOL_VERSION,
                            "version": callbridge.__version__,
                            "epoch": self.outbox.epoch,
                        }
                    )
                )
                welcome = json.loads(await asyncio.wait_for(ws.recv(), timeout=cfg.connect_timeout))
            except ConnectionClosed as exc:
                _raise_refused(exc)
                raise
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                raise ValueError("the hub did not welcome the agent")
            self.pbx = str(welcome.get("pbx", ""))
            high_water = int(welcome.get("high_water") or 0)
            self.outbox.ack(high_water)
            self.uploader.wake()
            self._sent = max(high_water, self.outbox.acked)
            settings = welcome.get("settings")
            if isinstance(settings, dict):
                self._apply_safely(settings)
            self._ws = ws
            self._bans_sent = ""  # a new connection: tell the hub the whole list again
            self.hub_connected = True
            log.info(
                "connected to the hub as the agent of PBX %s (outbox: %d waiting)",
                self.pbx,
                self.outbox.depth,
            )
            tasks = [
                asyncio.create_task(self._send_loop(ws), name="agent-send"),
                asyncio.create_task(self._status_loop(ws), name="agent-status"),
            ]
            try:
                await self._receive_loop(ws)
            except ConnectionClosed as exc:
                _raise_refused(exc)
                raise
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    def _apply_safely(self, settings: dict[str, Any]) -> None:
        try:
            self.apply_settings(settings)
        except CallbridgeError as exc:
            log.error("settings from the hub not applied: %s", exc.message)

    async def _send_loop(self, ws: ClientConnection) -> None:
        changed = self.outbox.changed()
        cfg = self.config
        while True:
            in_flight = self._sent - self.outbox.acked
            if in_flight > 0 and self.outbox.depth - in_flight < cfg.batch_size:
                # Like Nagle: while a frame is unacknowledged, let a few more rows gather
                # rather than sending one tiny frame per event (each costs the hub a commit).
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), cfg.linger)
                in_flight = self._sent - self.outbox.acked
            rows = (
                self.outbox.read(self._sent, min(cfg.batch_size, cfg.window - in_flight))
                if (in_flight < cfg.window)
                else []
            )
            if not rows:
                changed.clear()
                self._wake.clear()
                # Re-check after clearing, then sleep until a new row or an ack arrives.
                if in_flight < cfg.window and self.outbox.read(self._sent, 1):
                    continue
                waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
                continue
            # At most AGENT_FRAME_BYTES a frame (at least one row): the hub refuses bigger ones.
            parts: list[str] = []
            size = 0
            for row in rows:
                part = f'{{"seq":{row.seq},"t":"{row.kind}","body":{_sendable(row)}}}'
                if parts and size + len(part) > AGENT_FRAME_BYTES:
                    break
                parts.append(part)
                size += len(part) + 1
            await ws.send(f'{{"type":"batch","items":[{",".join(parts)}]}}')
            self._sent = rows[len(parts) - 1].seq

    async def _status_loop(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(json.dumps(self.status()))
            bans = self.bans_frame()
            if bans is not None:
                await ws.send(json.dumps(bans))
            await asyncio.sleep(self.config.status_interval)

    async def _receive_loop(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                msg = json.loads(frame)
            except ValueError:
                log.warning("the hub sent a frame that is not JSON; ignored")
                continue
            if not isinstance(msg, dict):
                continue
            kind = msg.get("type")
            if kind == "ack":
                self.outbox.ack(int(msg.get("seq") or 0))
                self._wake.set()
                self.uploader.wake()  # recordings whose event the hub now has may go
            elif kind == "reject":
                _log_rejects(msg.get("items"))
            elif kind == "settings":
                self._apply_safely(msg.get("settings") or {})
            elif kind == "action":
                task = asyncio.create_task(self._act(ws, msg))
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _act(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        action_id = msg.get("id")
        name = msg.get("name")
        args = msg.get("args") if isinstance(msg.get("args"), dict) else {}
        assert isinstance(args, dict)
        reply: dict[str, Any] = {"type": "result", "id": action_id}
        try:
            value = await self._perform(str(name), args)
            reply.update(ok=True, value=value)
        except CallbridgeError as exc:
            reply.update(ok=False, error={"code": exc.code, "message": exc.message})
        except Exception:
            log.exception("action %s failed", name)
            reply.update(
                ok=False, error={"code": "pbx_error", "message": "the agent could not carry this out"}
            )
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(reply))

    async def _perform(self, name: str, args: dict[str, Any]) -> Any:
        if name == "originate":
            request = Originate(
                extension=str(args.get("extension", "")),
                number=str(args.get("number", "")),
                caller_id=str(args.get("caller_id", "")),
                auto_answer=bool(args.get("auto_answer", False)),
                timeout_seconds=float(args.get("timeout_seconds", 30.0)),
            )
            if not self.ami.client.connected:
                raise PbxUnavailable("the agent is running but Asterisk's AMI is not connected")
            return await self.ami.originate(request)
        if name == "hangup":
            await self.ami.hangup(str(args.get("call_id", "")))
            return None
        if name == "redirect":
            await self.ami.redirect(str(args.get("call_id", "")), str(args.get("destination", "")))
            return None
        if name == "delete_recording":
            # The hub purged a recording this agent uploaded: the PBX's copy goes too.
            return await asyncio.to_thread(
                delete_copy, self.uploader.directory, str(args.get("reference", ""))
            )
        if name == "delete_voicemail":
            # A user deleted a voicemail in the hub and asked for the PBX's copy to go too.
            return await asyncio.to_thread(
                delete_message, self.config.voicemail_dir, str(args.get("reference", ""))
            )
        if name == "unban":
            if self.guard is None:
                raise PbxUnavailable("the security guard is not running on this agent")
            address = str(args.get("address", ""))
            try:
                self.guard.unban(address)
            except ValueError as exc:
                raise InvalidInput(f"{address!r} is not an IP address") from exc
            bans = self.bans_frame(force=True)
            if bans is not None and self._ws is not None:
                await self._ws.send(json.dumps(bans))
            return None
        raise InvalidInput(f"the agent does not know the action {name!r}")


def _sendable(row: Row) -> str:
    """A row's body as sent: as stored, unless it is over MAX_ITEM_BYTES (written by an older
    agent, or a bug): a raw event is clipped again, an event goes without its body, which the
    hub rejects for good (so the row is dropped, with a log line on both sides)."""
    if len(row.body) <= MAX_ITEM_BYTES:
        return row.body
    if row.kind == "raw":
        with contextlib.suppress(ValueError, RecursionError, TypeError):
            body = json.loads(row.body)
            if isinstance(body, dict) and isinstance(body.get("headers"), dict):
                body["headers"] = clip_headers(body["headers"])
                body["name"] = str(body.get("name", ""))[:RAW_MAX_NAME]
                clipped = json.dumps(body, separators=(",", ":"))
                if len(clipped) <= MAX_ITEM_BYTES:
                    log.warning("outbox row seq %d: raw event of %d bytes clipped", row.seq, len(row.body))
                    return clipped
    log.error(
        "outbox row seq %d (%s) is %d bytes, over the %d-byte limit; sent empty for the hub to reject",
        row.seq,
        row.kind,
        len(row.body),
        MAX_ITEM_BYTES,
    )
    return "null"


def _log_rejects(items: Any) -> None:
    """The hub will never take these rows: say so; its ack that follows drops them."""
    if not isinstance(items, list):
        return
    for item in items[:MAX_REJECT_LINES]:
        if isinstance(item, dict):
            log.error(
                "the hub rejected outbox row seq %s for good (%s); it is dropped",
                item.get("seq"),
                str(item.get("reason") or "no reason given")[:200],
            )
    if len(items) > MAX_REJECT_LINES:
        log.error("the hub rejected %d more outbox rows; they are dropped", len(items) - MAX_REJECT_LINES)


def guard_thresholds(guard: dict[str, Any]) -> dict[str, Any]:
    """The hub's guard settings in the guard's own terms (``GuardSettings.from_dict``)."""
    ban = float(guard.get("ban_seconds", 600))
    return {
        "max_failures": int(guard.get("max_failures", 10)),
        "window_seconds": float(guard.get("window_seconds", 600)),
        "ban_time_seconds": ban,
        "max_ban_time_seconds": max(86400.0, ban),
        "allow_list": [str(a) for a in guard.get("allow") or []],
    }


def _raise_refused(exc: ConnectionClosed) -> None:
    rcvd = exc.rcvd
    if rcvd is not None and rcvd.code == CLOSE_TOKEN_REFUSED:
        raise TokenRefused(rcvd.reason or "token refused") from exc
    if rcvd is not None and rcvd.code == CLOSE_REPLACED:
        log.warning("the hub closed this link: %s", rcvd.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        return f"closed by the hub: {exc.rcvd.code} {exc.rcvd.reason}".strip()
    return str(exc) or type(exc).__name__
