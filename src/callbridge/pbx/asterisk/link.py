"""``AsteriskLink``: the PbxLink the hub (or the agent) runs for one Asterisk.

It wires the AMI client (socket, login, reconnect), the call tracker (AMI → normalized events)
and the actions (click-to-call, hang up, transfer), and feeds an :data:`EventSink` in order.
The socket reader only runs the tracker (synchronous, microseconds per event) and queues the
results; a separate task awaits the sink, so a slow sink never stalls the AMI socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from callbridge.domain.errors import PbxRejected, PbxUnavailable
from callbridge.domain.events import Event
from callbridge.pbx.asterisk import actions
from callbridge.pbx.asterisk.client import AmiClient, ClientSettings
from callbridge.pbx.asterisk.codec import Message
from callbridge.pbx.asterisk.tracker import CallTracker, TrackerConfig
from callbridge.services.ports import EventSink, LinkStatus, Originate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    """Everything the hub's settings say about one Asterisk."""

    name: str
    host: str
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)
    trunk_patterns: tuple[str, ...] = ("trunk*",)
    default_region: str = "US"
    direction_variable: str = "CALLBRIDGE_DIRECTION"
    auth: str = "md5"
    originate_context: str = "from-internal"
    redirect_context: str = "from-internal"
    channel_tech: str = "PJSIP"
    pbx_timezone: str = "UTC"
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stale_call_seconds: float = 4 * 3600.0
    sweep_interval: float = 5.0
    event_names: frozenset[str] | None = None


class AsteriskLink:
    """Implements :class:`callbridge.services.ports.PbxLink` for Asterisk over AMI."""

    def __init__(self, config: AsteriskConfig, sink: EventSink) -> None:
        self.config = config
        self.name = config.name
        self._sink = sink
        self.tracker = CallTracker(
            TrackerConfig(
                pbx=config.name,
                trunk_patterns=config.trunk_patterns,
                default_region=config.default_region,
                direction_variable=config.direction_variable,
                stale_after=timedelta(seconds=config.stale_call_seconds),
                pbx_timezone=config.pbx_timezone,
            )
        )
        self.client = AmiClient(
            ClientSettings(
                host=config.host,
                port=config.port,
                username=config.username,
                secret=config.secret,
                auth=config.auth,
                connect_timeout=config.connect_timeout,
                action_timeout=config.action_timeout,
                ping_interval=config.ping_interval,
                ping_timeout=config.ping_timeout,
                backoff_initial=config.backoff_initial,
                backoff_max=config.backoff_max,
                # Only what the tracker uses (Asterisk is asked to filter too, when allowed).
                event_names=config.event_names
                if config.event_names is not None
                else self.tracker.event_names,
            ),
            on_event=self._on_ami_event,
            on_connect=self._on_connect,
        )
        self._options = actions.OriginateOptions(
            context=config.originate_context,
            tech=config.channel_tech,
            direction_variable=config.direction_variable,
        )
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._stopped = False

    # -- PbxLink -------------------------------------------------------------------------------

    def status(self) -> LinkStatus:
        c = self.client
        detail = f"AMI {c.version} at {self.config.host}:{self.config.port}" if c.connected else c.last_error
        return LinkStatus(
            connected=c.connected,
            detail=detail or "connecting",
            last_event_at=c.last_event_at,
            extra={"live_calls": str(self.tracker.live_calls), "connections": str(c.connections)},
        )

    async def run(self) -> None:
        forwarder = asyncio.create_task(self._forward(), name=f"asterisk-{self.name}-sink")
        sweeper = asyncio.create_task(self._sweep(), name=f"asterisk-{self.name}-sweep")
        try:
            await self.client.run()
        finally:
            sweeper.cancel()
            # Deliver what was already produced before stopping the forwarder.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.join(), timeout=2.0)
            forwarder.cancel()
            for task in (sweeper, forwarder):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def originate(self, request: Originate) -> str:
        channel_id = actions.new_channel_id()
        self.tracker.expect_originate(channel_id, request.extension, request.number)
        return await actions.originate(self.client, request, self._options, channel_id)

    async def hangup(self, call_id: str) -> None:
        channels = self.tracker.channels_of(call_id)
        if not channels:
            raise PbxRejected("the call has already ended or is not known")
        # Hanging up the first real party ends the conversation; Local halves follow.
        await actions.hangup(self.client, channels[0])

    async def redirect(self, call_id: str, destination: str) -> None:
        channel = self.tracker.external_channel_of(call_id)
        if channel is None:
            raise PbxRejected("the call has already ended or is not known")
        await actions.redirect(self.client, channel, destination, self.config.redirect_context)

    async def queue_pause(self, queue: str, extension: str, paused: bool, reason: str) -> None:
        # Only a member the PBX has reported: its interface is then the one Asterisk knows it by
        # (PJSIP/1001, Local/1001@from-queue/n), and nothing is sent for a mistyped one.
        interface = self.tracker.member_interface(queue, extension)
        if not interface:
            raise PbxRejected(
                f"{extension} is not a member of queue {queue} as far as the PBX has told callbridge"
            )
        await actions.queue_pause(self.client, interface, queue, paused, reason)

    async def spy(self, call_id: str, extension: str, mode: str) -> None:
        channel = self.tracker.spy_target(call_id)
        if channel is None:
            raise PbxRejected("the call has already ended or is not known")
        supervisor = f"{self.config.channel_tech}/{extension}"
        await actions.spy(self.client, supervisor, channel, mode, self.config.originate_context)

    # -- wiring --------------------------------------------------------------------------------

    def _on_ami_event(self, msg: Message, received_at: datetime) -> None:
        for event in self.tracker.feed(msg, received_at):
            self._queue.put_nowait(event)

    async def _on_connect(self) -> None:
        """Rebuild live calls (and close calls that ended while we were away)."""
        try:
            response, items = await self.client.send_list_action("CoreShowChannels")
        except PbxUnavailable as exc:
            log.warning("pbx %s: could not list channels after connect: %s", self.name, exc.message)
            return
        if response.get("Response") != "Success":
            log.warning("pbx %s: CoreShowChannels refused: %s", self.name, response.get("Message"))
            return
        for event in self.tracker.reconcile(items, datetime.now(UTC)):
            self._queue.put_nowait(event)
        log.info("pbx %s: reconciled %d live channels", self.name, len(items))
        await self._queue_snapshot()

    async def _queue_snapshot(self) -> None:
        """Queues at start and after a reconnect: members' states and callers waiting
        (``QueueStatus``), and the queues there are (``QueueSummary``)."""
        found: list[Message] = []
        for action in ("QueueStatus", "QueueSummary"):
            try:
                response, items = await self.client.send_list_action(action)
            except PbxUnavailable as exc:
                log.warning("pbx %s: could not ask %s after connect: %s", self.name, action, exc.message)
                return
            if response.get("Response") != "Success":
                # No app_queue loaded, or the AMI user lacks read=agent: no queues, not an error.
                log.info("pbx %s: %s refused: %s", self.name, action, response.get("Message"))
                continue
            found += items
        for event in self.tracker.queue_snapshot(found, datetime.now(UTC)):
            self._queue.put_nowait(event)
        if self.tracker.queues:
            log.info("pbx %s: %d queues known", self.name, len(self.tracker.queues))

    async def _forward(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._sink(event)
            except Exception:
                # A failing handler must not stop the link (events vs commands, CONVENTIONS 5).
                log.exception(
                    "pbx %s: sink failed on %s for %s", self.name, event.kind, getattr(event, "call_id", "")
                )
            finally:
                self._queue.task_done()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            for event in self.tracker.sweep(datetime.now(UTC)):
                self._queue.put_nowait(event)
