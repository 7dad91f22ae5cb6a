"""A protocol-faithful AMI server for tests, benchmarks and the demo.

It speaks AMI 11.0.0 (Asterisk 22) over real TCP: the banner, plain and MD5 logins that fail
the way Asterisk fails (a delay, ``Authentication failed``, then the socket closes), the actions
callbridge uses, and scripted calls whose event sequences follow the real captures in
``captures/asterisk`` (channel snapshot fields, DialBegin/DialState/DialEnd, bridges,
HangupRequest on the side that hung up, CEL LINKEDID_END last).

Drive it from code::

    async with AmiSimulator(secret="s3cret") as sim:
        call = await sim.start_call("inbound", caller="+15551230000", did="5551000", extension="1001")
        await call.hangup("caller")
        await sim.place_call("inbound_missed", ring=0)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import re
import secrets
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbridge.pbx.asterisk.codec import AmiDecoder, Message, encode_message

log = logging.getLogger(__name__)

AMI_VERSION = "11.0.0"
Pairs = list[tuple[str, str]]

_STATE = {"Down": "0", "Ring": "4", "Ringing": "5", "Up": "6", "Busy": "7"}
# Originate first-leg outcome → (OriginateResponse Reason, whether a channel exists).
_PHONE_OUTCOMES = {"answer": "4", "busy": "5", "noanswer": "3", "reject": "8", "unregistered": "0"}


@dataclass
class SimChannel:
    name: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    context: str
    exten: str
    state: str = "Down"
    connected_num: str = "<unknown>"
    connected_name: str = "<unknown>"
    bridge: str = ""
    created: float = field(default_factory=time.time)
    recording: str = ""  # MIXMONITOR_FILENAME while MixMonitor runs on this channel

    def snapshot(self, prefix: str = "") -> Pairs:
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", _STATE.get(self.state, "0")),
            (prefix + "ChannelStateDesc", self.state),
            (prefix + "CallerIDNum", self.caller_num),
            (prefix + "CallerIDName", self.caller_name),
            (prefix + "ConnectedLineNum", self.connected_num),
            (prefix + "ConnectedLineName", self.connected_name),
            (prefix + "Language", "en"),
            (prefix + "AccountCode", ""),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", "1"),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]


@dataclass
class SimMember:
    interface: str
    name: str
    status: str = "1"  # AST_DEVICE_NOT_INUSE
    paused: bool = False
    reason: str = ""
    calls_taken: int = 0


class _Session:
    def __init__(self, sim: AmiSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.events_on = True
        self.challenge = ""
        self.includes: list[re.Pattern[str]] = []
        self.excludes: list[re.Pattern[str]] = []
        self._decisions: dict[str, bool] = {}
        self._filter_version = (0, 0)

    def wants(self, name: str) -> bool:
        if not self.authenticated or not self.events_on:
            return False
        # Filters are only ever added: a decision holds while their number is unchanged.
        version = (len(self.includes), len(self.excludes))
        if version != self._filter_version:
            self._filter_version = version
            self._decisions.clear()
        decision = self._decisions.get(name)
        if decision is None:
            text = f"Event: {name}"
            if self.includes and not any(p.search(text) for p in self.includes):
                decision = False
            else:
                decision = not any(p.search(text) for p in self.excludes)
            self._decisions[name] = decision
        return decision

    def send(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(pairs))

    def respond(self, action_id: str, response: str, message: str = "", extra: Pairs | None = None) -> None:
        pairs: Pairs = [("Response", response)]
        if action_id:
            pairs.append(("ActionID", action_id))
        pairs += extra or []
        if message:
            pairs.append(("Message", message))
        self.send(pairs)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class SimCall:
    """A call in progress inside the simulator; ``hangup`` ends it like a real phone would."""

    def __init__(self, sim: AmiSimulator, channels: list[SimChannel], bridge: str = "") -> None:
        self.sim = sim
        self.channels = channels
        self.bridge = bridge

    @property
    def linkedid(self) -> str:
        return self.channels[0].linkedid

    async def hangup(self, side: str = "caller") -> None:
        """``side``: caller | callee | system (Asterisk-initiated)."""
        await self.sim._end(self, side)

    def stop_recording(self) -> None:
        """``StopMixMonitor`` on the recorded channel: Asterisk closes the file and reports
        ``MixMonitorStop`` (a hang-up closes the file too, without that event)."""
        for ch in self.channels:
            if ch.recording and ch.uniqueid in self.sim.channels:
                ch.recording = ""
                self.sim.emit("MixMonitorStop", ch.snapshot())


class AmiSimulator:
    def __init__(
        self,
        *,
        username: str = "hub",
        secret: str = "secret",  # noqa: S107 - a test double's default, never a real credential
        host: str = "127.0.0.1",
        port: int = 0,
        auth_failure_delay: float = 1.0,
        timestamps: bool = False,
        cel: bool = False,
        trunk: str = "trunk",
        system_name: str = "",
        direction_variable: str = "",
        virtual_time: bool = False,
    ) -> None:
        self.username = username
        self.secret = secret
        self.host = host
        self.port = port
        self.auth_failure_delay = auth_failure_delay
        self.timestamps = timestamps
        self.cel = cel
        self.trunk = trunk
        self.system_name = system_name
        # When set (e.g. CALLBRIDGE_DIRECTION), scripted calls run Set(__<name>=inbound|outbound|
        # internal) first, as the dialplan in docs/asterisk.md does.
        self.direction_variable = direction_variable
        # Where MixMonitor writes a relative file name (astspooldir/monitor).
        self.monitor_dir = "/var/spool/asterisk/monitor"
        # app_voicemail's spool (astspooldir/voicemail): <context>/<mailbox>/INBOX/msgNNNN.*
        self.voicemail_dir = "/var/spool/asterisk/voicemail"
        # Behaviour of phones for Originate and scripted calls: ext → answer|busy|noanswer|…
        self.phones: dict[str, str] = {}
        # Actions the simulator reads but never answers (to test client timeouts).
        self.silent_actions: set[str] = set()
        # Actions this AMI user may not run (answered "Permission denied", as for missing perms).
        self.denied_actions: set[str] = set()
        self.actions: list[Message] = []
        self.logins = 0
        self.channels: dict[str, SimChannel] = {}
        self.calls: dict[str, SimCall] = {}
        self._sessions: list[_Session] = []
        self._server: asyncio.Server | None = None
        self._seq = itertools.count()
        self._chan_seq = itertools.count()
        self._bridge_seq = itertools.count()
        self._epoch = int(time.time())
        self._tasks: set[asyncio.Task[None]] = set()
        # Clear it to keep originated phones ringing (e.g. to cut the link meanwhile).
        self.originate_gate = asyncio.Event()
        self.originate_gate.set()
        # Scripted pauses advance a clock instead of sleeping (with ``timestamps``, the events'
        # Timestamp headers and queue_log lines are dated by it): minutes of waiting in a test
        # that takes milliseconds.
        self.virtual_time = virtual_time
        self._skew = 0.0
        # A virtual clock stands still between pauses, on a whole second (as queue_log dates).
        self._base = float(int(time.time())) if virtual_time else 0.0
        # app_queue: queue → interface → member; Asterisk's queue_log lines as written; and the
        # ChanSpy originates received (supervisor listen / whisper / barge), as checked.
        self.queues: dict[str, dict[str, SimMember]] = {}
        self.queue_log: list[str] = []
        self.spies: list[dict[str, str]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AmiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        """Cut every AMI session at once, like a network failure or an Asterisk restart."""
        for session in list(self._sessions):
            transport = session.writer.transport
            transport.abort()
        self._sessions.clear()

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.append(session)
        writer.write(f"Asterisk Call Manager/{AMI_VERSION}\r\n".encode())
        decoder = AmiDecoder(expect_banner=False, max_line_bytes=1024)
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                for record in decoder.feed(data):
                    if isinstance(record, Message):
                        await self._handle(session, record)
                    else:
                        session.respond("", "Error", "Failed to parse message: line too long")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            session.close()

    async def _handle(self, s: _Session, msg: Message) -> None:
        self.actions.append(msg)
        action = msg.get("Action").lower()
        aid = msg.get("ActionID")
        if not action:
            s.respond(aid, "Error", "Missing action in request")
            return
        if action in {a.lower() for a in self.silent_actions}:
            return
        if action in {a.lower() for a in self.denied_actions} or (
            not s.authenticated and action not in ("login", "challenge", "logoff")
        ):
            s.respond(aid, "Error", "Permission denied")
            return
        handler = getattr(self, f"_action_{action}", None)
        if handler is None:
            s.respond(
                aid,
                "Error",
                f"Invalid/unknown command: {msg.get('Action')}. "
                "Use Action: ListCommands to show available commands.",
            )
            return
        await handler(s, msg, aid)

    async def _action_challenge(self, s: _Session, msg: Message, aid: str) -> None:
        if msg.get("AuthType").lower() != "md5":
            s.respond(aid, "Error", "Must specify AuthType")
            return
        s.challenge = str(secrets.randbelow(10**9))
        s.respond(aid, "Success", extra=[("Challenge", s.challenge)])

    async def _action_login(self, s: _Session, msg: Message, aid: str) -> None:
        if s.authenticated:
            s.respond(aid, "Success", "Already authenticated")
            return
        ok = msg.get("Username") == self.username
        if msg.get("AuthType").lower() == "md5":
            expected = hashlib.md5((s.challenge + self.secret).encode(), usedforsecurity=False).hexdigest()
            ok = ok and bool(s.challenge) and secrets.compare_digest(msg.get("Key").lower(), expected)
        else:
            ok = ok and secrets.compare_digest(msg.get("Secret").encode(), self.secret.encode())
        if not ok:
            await asyncio.sleep(self.auth_failure_delay)
            s.respond(aid, "Error", "Authentication failed")
            with contextlib.suppress(ConnectionError):
                await s.writer.drain()
            s.close()
            return
        self.logins += 1
        s.authenticated = True
        events = msg.get("Events", "on").lower()
        s.events_on = events != "off"
        s.respond(aid, "Success", "Authentication accepted")
        self._emit_to(s, "FullyBooted", [("Uptime", "1"), ("LastReload", "1"), ("Status", "Fully Booted")])

    async def _action_logoff(self, s: _Session, msg: Message, aid: str) -> None:
        s.respond(aid, "Goodbye", "Thanks for all the fish.")
        with contextlib.suppress(ConnectionError):
            await s.writer.drain()
        s.close()

    async def _action_ping(self, s: _Session, msg: Message, aid: str) -> None:
        s.respond(aid, "Success", extra=[("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])

    async def _action_events(self, s: _Session, msg: Message, aid: str) -> None:
        s.events_on = msg.get("EventMask", "on").lower() != "off"
        s.respond(aid, "Success", extra=[("Events", "On" if s.events_on else "Off")])

    async def _action_filter(self, s: _Session, msg: Message, aid: str) -> None:
        text = msg.get("Filter")
        try:
            if text.startswith("!"):
                s.excludes.append(re.compile(text[1:]))
            else:
                s.includes.append(re.compile(text))
        except re.error:
            s.respond(aid, "Error", "Filter Not Added")
            return
        s.respond(aid, "Success", "Filter Added Successfully")

    async def _action_command(self, s: _Session, msg: Message, aid: str) -> None:
        command = msg.get("Command")
        if command.startswith(("module load", "module unload", "restart gracefully")):
            s.respond(aid, "Error", "Command blacklisted")
            return
        lines = [f"Asterisk 22.10.1 built by sim ({command})"] if "version" in command else ["ok"]
        s.send(
            [("Response", "Success"), ("ActionID", aid), ("Message", "Command output follows")]
            + [("Output", line) for line in lines]
        )

    async def _action_coreshowchannels(self, s: _Session, msg: Message, aid: str) -> None:
        s.send(
            [
                ("Response", "Success"),
                ("ActionID", aid),
                ("EventList", "start"),
                ("Message", "Channels will follow"),
            ]
        )
        live = list(self.channels.values())
        for ch in live:
            duration = int(time.time() - ch.created)
            s.send(
                [
                    ("Event", "CoreShowChannel"),
                    ("ActionID", aid),
                    *ch.snapshot(),
                    ("Application", "Dial"),
                    ("ApplicationData", ""),
                    ("Duration", f"{duration // 3600:02d}:{duration // 60 % 60:02d}:{duration % 60:02d}"),
                    ("BridgeId", ch.bridge),
                ]
            )
        s.send(
            [
                ("Event", "CoreShowChannelsComplete"),
                ("ActionID", aid),
                ("EventList", "Complete"),
                ("ListItems", str(len(live))),
            ]
        )

    async def _action_hangup(self, s: _Session, msg: Message, aid: str) -> None:
        name = msg.get("Channel")
        ch = next((c for c in self.channels.values() if c.name == name), None)
        if ch is None:
            s.respond(aid, "Error", "No such channel")
            return
        s.respond(aid, "Success", "Channel Hungup")
        call = self.calls.get(ch.linkedid)
        if call is not None:
            self._spawn(self._end(call, "system"))

    async def _action_redirect(self, s: _Session, msg: Message, aid: str) -> None:
        name = msg.get("Channel")
        ch = next((c for c in self.channels.values() if c.name == name), None)
        if ch is None:
            s.respond(aid, "Error", f"Channel does not exist: {name}")
            return
        if not msg.get("Exten") or not msg.get("Context"):
            s.respond(
                aid, "Error", "Exten not specified" if not msg.get("Exten") else "Context not specified"
            )
            return
        s.respond(aid, "Success", "Redirect successful")
        call = self.calls.get(ch.linkedid)
        if call is not None:
            self._spawn(self._redirect(call, ch, msg.get("Exten"), msg.get("Context")))

    async def _action_originate(self, s: _Session, msg: Message, aid: str) -> None:
        channel = msg.get("Channel")
        if not channel:
            s.respond(aid, "Error", "Channel not specified")
            return
        if "/" not in channel:
            s.respond(aid, "Error", "Invalid channel")
            return
        if msg.get("Exten") and not (msg.get("Context") and msg.get("Priority")):
            s.respond(aid, "Error", "Originate with 'Exten' requires 'Context' and 'Priority'")
            return
        if msg.get("Application").lower() == "chanspy":
            self._spy(s, msg, aid)
            return
        if msg.get("Async").lower() in ("true", "yes", "1"):
            s.respond(aid, "Success", "Originate successfully queued")
            self._spawn(self._originate(msg, aid, s, sync=False))
        else:
            # Synchronous: the session is blocked until the first leg is answered or fails.
            await self._originate(msg, aid, s, sync=True)

    def _spy(self, s: _Session, msg: Message, aid: str) -> None:
        """Originate(Channel=<supervisor phone>, Application=ChanSpy, Data=<channel>,<options>):
        checked as Asterisk would run it: the spied channel must exist; options q (quiet) with
        w (whisper) or B (barge) or neither (listen)."""
        target, _, options = msg.get("Data").partition(",")
        if not any(c.name == target for c in self.channels.values()):
            s.respond(aid, "Error", "Originate failed")
            return
        if options not in ("q", "qw", "qB"):
            s.respond(aid, "Error", f"Unexpected ChanSpy options {options!r}")
            return
        self.spies.append({"supervisor": msg.get("Channel"), "channel": target, "options": options})
        s.respond(aid, "Success", "Originate successfully queued")

    # -- events --------------------------------------------------------------------------------

    def _event_pairs(self, name: str, body: Sequence[tuple[str, str]], privilege: str) -> Pairs:
        pairs: Pairs = [("Event", name), ("Privilege", f"{privilege},all")]
        if self.timestamps:
            pairs.append(("Timestamp", f"{self.now():.6f}"))
        if self.system_name:
            pairs.append(("SystemName", self.system_name))
        pairs += body
        return pairs

    def _emit_to(
        self, s: _Session, name: str, body: Sequence[tuple[str, str]], privilege: str = "system"
    ) -> None:
        if s.wants(name):
            s.send(self._event_pairs(name, body, privilege))

    def emit(self, name: str, body: Sequence[tuple[str, str]], privilege: str = "call") -> None:
        """Broadcast one event to every logged-in session that wants it."""
        if not self._sessions:
            return
        raw = encode_message(self._event_pairs(name, body, privilege))
        for s in self._sessions:
            if s.wants(name) and not s.writer.is_closing():
                s.writer.write(raw)

    def _new_channel(
        self,
        endpoint: str,
        linkedid: str,
        num: str,
        name: str,
        ctx: str,
        exten: str,
        *,
        uniqueid: str = "",
        state: str = "Down",
    ) -> SimChannel:
        seq = next(self._chan_seq)
        uid = uniqueid or f"{self._epoch}.{seq}"
        ch = SimChannel(
            name=f"{endpoint}-{seq:08x}",
            uniqueid=uid,
            linkedid=linkedid or uid,
            caller_num=num,
            caller_name=name,
            context=ctx,
            exten=exten,
            state=state,
        )
        self.channels[uid] = ch
        self.emit("Newchannel", ch.snapshot())
        if self.cel:
            self._cel("CHAN_START", ch)
        return ch

    def _mark_direction(self, ch: SimChannel, direction: str) -> None:
        if self.direction_variable:
            self.emit(
                "VarSet",
                [*ch.snapshot(), ("Variable", f"__{self.direction_variable}"), ("Value", direction)],
                privilege="dialplan",
            )

    def _cel(self, name: str, ch: SimChannel) -> None:
        self.emit(
            "CEL",
            [
                ("EventName", name),
                ("Channel", ch.name),
                ("EventTime", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.now()))),
                ("UniqueID", ch.uniqueid),
                ("LinkedID", ch.linkedid),
            ],
        )

    def _state(self, ch: SimChannel, state: str) -> None:
        ch.state = state
        self.emit("Newstate", ch.snapshot())

    def _dial_begin(self, caller: SimChannel | None, dest: SimChannel, dialstring: str) -> None:
        body = (caller.snapshot() if caller else []) + dest.snapshot("Dest") + [("DialString", dialstring)]
        self.emit("DialBegin", body)

    def _dial_end(self, caller: SimChannel | None, dest: SimChannel, status: str) -> None:
        body = (caller.snapshot() if caller else []) + dest.snapshot("Dest") + [("DialStatus", status)]
        self.emit("DialEnd", body)

    def _dial_state(self, caller: SimChannel | None, dest: SimChannel, status: str) -> None:
        body = (caller.snapshot() if caller else []) + dest.snapshot("Dest") + [("DialStatus", status)]
        self.emit("DialState", body)

    def _bridge(self, a: SimChannel, b: SimChannel) -> str:
        bridge = f"b{next(self._bridge_seq):07d}-sim"
        common = [
            ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"),
        ]
        self.emit("BridgeCreate", [("BridgeUniqueid", bridge), *common, ("BridgeNumChannels", "0")])
        for n, ch in enumerate((a, b), start=1):
            ch.bridge = bridge
            self.emit(
                "BridgeEnter",
                [("BridgeUniqueid", bridge), *common, ("BridgeNumChannels", str(n)), *ch.snapshot()],
            )
        return bridge

    def _unbridge(self, chans: Sequence[SimChannel]) -> None:
        left = len([c for c in chans if c.bridge])
        for ch in chans:
            if not ch.bridge:
                continue
            left -= 1
            self.emit(
                "BridgeLeave",
                [
                    ("BridgeUniqueid", ch.bridge),
                    ("BridgeType", "basic"),
                    ("BridgeNumChannels", str(left)),
                    *ch.snapshot(),
                ],
            )
            ch.bridge = ""

    def _hangup(
        self, ch: SimChannel, cause: str, text: str, *, request: bool = False, soft: bool = False
    ) -> None:
        if request:
            self.emit("HangupRequest", [*ch.snapshot(), ("Cause", cause)])
        if soft:
            self.emit("SoftHangupRequest", [*ch.snapshot(), ("Cause", cause)])
        self.channels.pop(ch.uniqueid, None)
        self.emit("Hangup", [*ch.snapshot(), ("Cause", cause), ("Cause-txt", text)])
        if self.cel:
            self._cel("HANGUP", ch)
            self._cel("CHAN_END", ch)

    def _linkedid_end(self, ch: SimChannel) -> None:
        if self.cel:
            self._cel("LINKEDID_END", ch)

    def now(self) -> float:
        return (self._base if self.virtual_time else time.time()) + self._skew

    async def _pause(self, seconds: float) -> None:
        if self.virtual_time:
            self._skew += seconds
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    # -- scripted calls ------------------------------------------------------------------------

    def _phone(self, ext: str) -> SimChannel:
        return SimChannel(f"PJSIP/{ext}", "", "", ext, f"Ext {ext}", "internal", "s")

    async def start_call(
        self,
        scenario: str = "inbound",
        *,
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        extension: str = "1001",
        number: str = "+14155550100",
        ring: float = 0.0,
        variables: dict[str, str] | None = None,
        record: str = "",
    ) -> SimCall:
        """Begin a call and stop when it is talking (or ended, for calls that never connect).

        Scenarios: ``inbound`` (trunk → extension), ``outbound`` (extension → trunk),
        ``internal`` (extension → extension ``number``).

        ``record``: the dialplan runs ``MixMonitor(<record>,b)`` on the calling channel before
        it dials (``${UNIQUEID}`` in the name is the channel's unique id): Asterisk sets
        ``MIXMONITOR_FILENAME`` to the absolute path (a relative name is taken from
        :attr:`monitor_dir`) and reports ``MixMonitorStart``. The file itself is the test's to
        write.
        """
        if scenario == "inbound":
            a = self._new_channel(
                f"PJSIP/{self.trunk}", "", caller, caller_name, "from-trunk", did, state="Ring"
            )
            b_endpoint, b_num, b_name, b_ctx = f"PJSIP/{extension}", extension, f"Ext {extension}", "internal"
            dialstring = extension
        elif scenario == "outbound":
            a = self._new_channel(
                f"PJSIP/{extension}", "", extension, f"Ext {extension}", "internal", number, state="Ring"
            )
            b_endpoint, b_num, b_name, b_ctx = f"PJSIP/{self.trunk}", number, "<unknown>", "from-trunk"
            dialstring = f"{number}@{self.trunk}"
        elif scenario == "internal":
            a = self._new_channel(
                f"PJSIP/{extension}", "", extension, f"Ext {extension}", "internal", number, state="Ring"
            )
            b_endpoint, b_num, b_name, b_ctx = f"PJSIP/{number}", number, f"Ext {number}", "internal"
            dialstring = number
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
        self._mark_direction(a, scenario)
        for key, value in (variables or {}).items():
            self.emit("VarSet", [*a.snapshot(), ("Variable", key), ("Value", value)], privilege="dialplan")
        if record:
            self.start_recording(a, record)
        b = self._new_channel(b_endpoint, a.linkedid, b_num, b_name, b_ctx, "s")
        call = SimCall(self, [a, b])
        self.calls[a.linkedid] = call
        self._dial_begin(a, b, dialstring)
        self._state(b, "Ringing")
        self._dial_state(a, b, "RINGING")
        await self._pause(ring)
        self._state(b, "Up")
        self._dial_end(a, b, "ANSWER")
        self._state(a, "Up")
        call.bridge = self._bridge(b, a)
        return call

    def recording_path(self, ch: SimChannel, name: str) -> str:
        """Where MixMonitor writes ``name`` for channel ``ch``."""
        name = name.replace("${UNIQUEID}", ch.uniqueid)
        return name if name.startswith("/") else f"{self.monitor_dir.rstrip('/')}/{name}"

    def start_recording(self, ch: SimChannel, name: str) -> str:
        """MixMonitor on ``ch``: the VarSet of MIXMONITOR_FILENAME, then MixMonitorStart (which
        carries only the channel snapshot, as in Asterisk ≥ 16.17); returns the file's path."""
        path = self.recording_path(ch, name)
        ch.recording = path
        self.emit(
            "VarSet",
            [*ch.snapshot(), ("Variable", "MIXMONITOR_FILENAME"), ("Value", path)],
            privilege="dialplan",
        )
        self.emit("MixMonitorStart", ch.snapshot())
        return path

    async def place_call(
        self,
        scenario: str = "inbound_answered",
        *,
        ring: float = 0.0,
        talk: float = 0.0,
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        extension: str = "1001",
        number: str = "+14155550100",
        target: str = "1002",
        members: str = "1001,1002",
        record: str = "",
    ) -> str:
        """Run a whole call. Scenarios: inbound_answered, inbound_missed, inbound_busy,
        outbound_answered, internal_answered, queue_abandoned, blind_transfer (the phone sends
        a SIP REFER: Asterisk reports ``BlindTransfer``), redirected (a CRM or a receptionist's
        console moves the caller with the AMI ``Redirect`` action: no transfer event).
        Returns the call's linkedid."""
        party: dict[str, Any] = {
            "caller": caller,
            "caller_name": caller_name,
            "did": did,
            "extension": extension,
        }
        if scenario in ("inbound_answered", "outbound_answered", "internal_answered"):
            call = await self.start_call(
                scenario.split("_")[0], ring=ring, number=number, record=record, **party
            )
            await self._pause(talk)
            await call.hangup("callee" if scenario == "inbound_answered" else "caller")
            return call.linkedid
        if scenario in ("inbound_missed", "inbound_busy"):
            return await self._inbound_unanswered(busy=scenario == "inbound_busy", ring=ring, **party)
        if scenario == "queue_abandoned":
            return await self._queue_abandoned(
                ring=ring, caller=caller, caller_name=caller_name, did=did, members=members
            )
        if scenario == "blind_transfer":
            call = await self.start_call("inbound", ring=ring, **party)
            await self._pause(talk)
            trunk, phone = call.channels
            self.emit(
                "BlindTransfer",
                [
                    ("Result", "Success"),
                    *phone.snapshot("Transferer"),
                    *trunk.snapshot("Transferee"),
                    ("IsExternal", "No"),
                    ("Context", "internal"),
                    ("Extension", target),
                ],
            )
            # The phone hangs up once its REFER is accepted; the caller is moved on.
            self.emit("HangupRequest", [*phone.snapshot(), ("Cause", "16")])
            await self._redirect(call, trunk, target)
            await self._pause(talk)
            await call.hangup("caller")
            return call.linkedid
        if scenario == "redirected":
            call = await self.start_call("inbound", ring=ring, **party)
            await self._pause(talk)
            await self._redirect(call, call.channels[0], target)
            await self._pause(talk)
            await call.hangup("caller")
            return call.linkedid
        raise ValueError(f"unknown scenario {scenario!r}")

    async def _inbound_unanswered(
        self,
        *,
        busy: bool,
        ring: float,
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        extension: str = "1001",
    ) -> str:
        a = self._new_channel(f"PJSIP/{self.trunk}", "", caller, caller_name, "from-trunk", did, state="Ring")
        self._mark_direction(a, "inbound")
        b = self._new_channel(
            f"PJSIP/{extension}", a.linkedid, extension, f"Ext {extension}", "internal", "s"
        )
        self._dial_begin(a, b, extension)
        if busy:
            self.emit("HangupRequest", [*b.snapshot(), ("Cause", "17"), ("TechCause", "486")])
            self._dial_end(a, b, "BUSY")
            self.emit("SoftHangupRequest", [*a.snapshot(), ("Cause", "16")])
            self._hangup(b, "17", "User busy")
            self._hangup(a, "17", "User busy")
        else:
            self._state(b, "Ringing")
            self._dial_state(a, b, "RINGING")
            await self._pause(ring)
            self.emit("HangupRequest", [*a.snapshot(), ("Cause", "127"), ("TechCause", "487")])
            self._dial_end(a, b, "CANCEL")
            self._hangup(b, "127", "Interworking, unspecified")
            self._hangup(a, "127", "Interworking, unspecified")
        self._linkedid_end(a)
        return a.linkedid

    async def leave_voicemail(
        self,
        audio: bytes,
        *,
        mailbox: str = "7001",
        context: str = "default",
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        ring: float = 0.0,
        duration: int = 0,
    ) -> tuple[str, Path]:
        """An inbound call to extension ``mailbox`` that nobody answers goes to its voicemail:
        the phone rings and is cancelled, VoiceMail() answers the caller (the caller's channel
        goes Up), the caller speaks and hangs up; app_voicemail then files ``msgNNNN.txt`` (its
        metadata) and ``msgNNNN.wav`` (``audio``) into ``<voicemail_dir>/<context>/<mailbox>/INBOX``
        and raises ``MessageWaiting`` with the caller's channel. Returns (linkedid, the .txt)."""
        a = self._new_channel(f"PJSIP/{self.trunk}", "", caller, caller_name, "from-trunk", did, state="Ring")
        self._mark_direction(a, "inbound")
        b = self._new_channel(f"PJSIP/{mailbox}", a.linkedid, mailbox, f"Ext {mailbox}", "internal", "s")
        self._dial_begin(a, b, mailbox)
        self._state(b, "Ringing")
        self._dial_state(a, b, "RINGING")
        await self._pause(ring)
        self._dial_end(a, b, "NOANSWER")
        self._hangup(b, "16", "Normal Clearing")
        self._state(a, "Up")  # VoiceMail() answers the caller
        inbox = Path(self.voicemail_dir) / context / mailbox / "INBOX"
        inbox.mkdir(parents=True, exist_ok=True)
        taken = {p.stem for p in inbox.glob("msg*.txt")}
        number = next(n for n in itertools.count() if f"msg{n:04d}" not in taken)
        origtime = int(self.now())
        stamp = time.strftime("%a %b %d %I:%M:%S %p UTC %Y", time.gmtime(origtime))
        txt = inbox / f"msg{number:04d}.txt"
        # As app_voicemail writes them: the audio first, then the metadata (both are moved into
        # INBOX once the caller has finished).
        (inbox / f"msg{number:04d}.wav").write_bytes(audio)
        txt.write_text(
            ";\n; Message Information file\n;\n[message]\n"
            f"origmailbox={mailbox}\ncontext=macro-vm\nmacrocontext=ext-local\nexten=s-NOANSWER\n"
            f"rdnis={mailbox}\npriority=2\ncallerchan={a.name}\n"
            f'callerid="{caller_name}" <{caller}>\n'
            f"origdate={stamp}\norigtime={origtime}\ncategory=\n"
            f"msg_id={origtime}-{number:08d}\nflag=\nduration={duration}\n"
        )
        new = len(list(inbox.glob("msg*.txt")))
        self.emit(
            "MessageWaiting",
            [
                *a.snapshot(),
                ("Mailbox", f"{mailbox}@{context}"),
                ("Waiting", "1"),
                ("New", str(new)),
                ("Old", "0"),
            ],
        )
        self._hangup(a, "16", "Normal Clearing")
        self._linkedid_end(a)
        return a.linkedid, txt

    async def _queue_abandoned(
        self,
        *,
        ring: float,
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        members: str = "1001,1002",
    ) -> str:
        a = self._new_channel(f"PJSIP/{self.trunk}", "", caller, caller_name, "from-trunk", did, state="Ring")
        self._mark_direction(a, "inbound")
        self._state(a, "Up")
        self.emit(
            "QueueCallerJoin",
            [*a.snapshot(), ("Queue", "sales"), ("Position", "1"), ("Count", "1")],
            privilege="agent",
        )
        pairs = []
        for ext in members.split(","):
            l1 = self._new_channel(f"Local/{ext}@from-queue", a.linkedid, ext, "", "from-queue", ext)
            l1.name = l1.name + ";1"
            l2 = self._new_channel(f"Local/{ext}@from-queue", a.linkedid, ext, "", "from-queue", ext)
            l2.name = l1.name[:-2] + ";2"
            phone = self._new_channel(f"PJSIP/{ext}", a.linkedid, ext, f"Ext {ext}", "internal", "s")
            self.emit(
                "AgentCalled",
                a.snapshot()
                + l1.snapshot("Dest")
                + [
                    ("Queue", "sales"),
                    ("Interface", f"Local/{ext}@from-queue/n"),
                    ("MemberName", f"Ext {ext}"),
                ],
                privilege="agent",
            )
            self._dial_begin(a, l1, f"Local/{ext}@from-queue/n")
            self._dial_begin(l2, phone, ext)
            self._state(phone, "Ringing")
            pairs.append((l1, l2, phone))
        await self._pause(ring)
        self.emit("HangupRequest", [*a.snapshot(), ("Cause", "16")])
        for l1, l2, phone in pairs:
            self._dial_end(l2, phone, "CANCEL")
            self._dial_end(a, l1, "CANCEL")
            self._hangup(phone, "26", "Answered elsewhere")
            self._hangup(l2, "26", "Answered elsewhere")
            self._hangup(l1, "26", "Answered elsewhere")
        self.emit(
            "QueueCallerAbandon",
            [
                *a.snapshot(),
                ("Queue", "sales"),
                ("Position", "1"),
                ("OriginalPosition", "1"),
                ("HoldTime", str(int(ring))),
            ],
            privilege="agent",
        )
        self.emit(
            "QueueCallerLeave",
            [*a.snapshot(), ("Queue", "sales"), ("Position", "1"), ("Count", "0")],
            privilege="agent",
        )
        self._hangup(a, "16", "Normal Clearing")
        self._linkedid_end(a)
        return a.linkedid

    # -- app_queue -------------------------------------------------------------------------------

    def add_queue_member(self, queue: str, ext: str, *, dynamic: bool = False) -> SimMember:
        """A member ``PJSIP/<ext>`` (its member name is its interface, Asterisk's default when
        queues.conf names none). ``dynamic``: added now (QueueMemberAdded, ADDMEMBER)."""
        interface = f"PJSIP/{ext}"
        member = self.queues.setdefault(queue, {}).setdefault(interface, SimMember(interface, interface))
        if dynamic:
            self.emit("QueueMemberAdded", self._member_pairs(queue, member), privilege="agent")
            self._log_queue("NONE", queue, interface, "ADDMEMBER", "")
        return member

    def remove_queue_member(self, queue: str, ext: str) -> None:
        member = self.queues.get(queue, {}).pop(f"PJSIP/{ext}", None)
        if member is not None:
            self.emit("QueueMemberRemoved", self._member_pairs(queue, member), privilege="agent")
            self._log_queue("NONE", queue, member.interface, "REMOVEMEMBER", "")

    def pause_member(self, queue: str, ext: str, paused: bool, reason: str = "") -> bool:
        """What ``QueuePause`` (or PauseQueueMember) does to one member; False when unknown."""
        member = self.queues.get(queue, {}).get(f"PJSIP/{ext}")
        if member is None:
            return False
        member.paused, member.reason = paused, reason if paused else ""
        self.emit("QueueMemberPause", self._member_pairs(queue, member), privilege="agent")
        self._log_queue("NONE", queue, member.interface, "PAUSE" if paused else "UNPAUSE", reason)
        return True

    def _member_pairs(self, queue: str, m: SimMember) -> Pairs:
        return [
            ("Queue", queue),
            ("MemberName", m.name),
            ("Interface", m.interface),
            ("StateInterface", m.interface),
            ("Membership", "static"),
            ("Penalty", "0"),
            ("CallsTaken", str(m.calls_taken)),
            ("LastCall", "0"),
            ("LastPause", "0"),
            ("LoginTime", str(int(self.now()))),
            ("InCall", "1" if m.status == "2" else "0"),
            ("Status", m.status),
            ("Paused", "1" if m.paused else "0"),
            ("PausedReason", m.reason),
            ("Ringinuse", "0"),
            ("Wrapuptime", "0"),
        ]

    def _member_status(self, queue: str, m: SimMember, status: str) -> None:
        m.status = status
        self.emit("QueueMemberStatus", self._member_pairs(queue, m), privilege="agent")

    def _log_queue(self, callid: str, queue: str, agent: str, event: str, *data: str) -> None:
        """One line of Asterisk's queue_log: ``epoch|callid|queue|agent|EVENT|data1|…``."""
        self.queue_log.append("|".join((str(int(self.now())), callid, queue, agent, event, *data)))

    async def queue_call(
        self,
        queue: str = "sales",
        outcome: str = "answered",
        *,
        wait: float = 0.0,
        talk: float = 0.0,
        answer_by: str = "",
        missed: Sequence[str] = (),
        miss_ring: float = 15.0,
        caller: str = "+15551230000",
        caller_name: str = "Carrier",
        did: str = "5551000",
        hangup_by: str = "caller",
    ) -> str:
        """One caller through app_queue ``queue`` (members: :meth:`add_queue_member`).

        ``outcome``: answered (by ``answer_by`` after ``wait`` seconds; each of ``missed`` rang
        ``miss_ring`` seconds first without answering), abandoned (the caller hangs up after
        ``wait``), timeout (Queue() gives up after ``wait``), full or joinempty (refused at the
        door). Events follow ``reference/asterisk_ami.md`` §2.7; the queue_log lines are those
        app_queue writes for the same call. Returns the linkedid."""
        members = self.queues.setdefault(queue, {})
        a = self._new_channel(f"PJSIP/{self.trunk}", "", caller, caller_name, "from-trunk", did, state="Ring")
        self._mark_direction(a, "inbound")
        self._state(a, "Up")
        uid = a.uniqueid
        self.emit(
            "Newexten",
            [*a.snapshot(), ("Extension", did), ("Application", "Queue"), ("AppData", f"{queue},,,,60")],
            privilege="dialplan",
        )
        if outcome in ("full", "joinempty"):
            status = "FULL" if outcome == "full" else "JOINEMPTY"
            self._log_queue(uid, queue, "NONE", status, "1", "1", "0")
            self.emit(
                "VarSet",
                [*a.snapshot(), ("Variable", "QUEUESTATUS"), ("Value", status)],
                privilege="dialplan",
            )
            self._hangup(a, "16", "Normal Clearing", soft=True)
            self._linkedid_end(a)
            return a.linkedid
        self.emit(
            "QueueCallerJoin",
            [*a.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "1")],
            privilege="agent",
        )
        self._log_queue(uid, queue, "NONE", "ENTERQUEUE", "", caller, "1")
        spent = 0.0
        for ext in missed:
            member = members.get(f"PJSIP/{ext}") or self.add_queue_member(queue, ext)
            phone = self._ring_member(a, queue, member, ext)
            await self._pause(miss_ring)
            spent += miss_ring
            self.emit(
                "AgentRingNoAnswer",
                [
                    *a.snapshot(),
                    *phone.snapshot("Dest"),
                    ("Queue", queue),
                    ("Interface", member.interface),
                    ("MemberName", member.name),
                    ("RingTime", str(int(miss_ring * 1000))),
                ],
                privilege="agent",
            )
            self._log_queue(uid, queue, member.interface, "RINGNOANSWER", str(int(miss_ring * 1000)))
            self._dial_end(a, phone, "NOANSWER")
            self._hangup(phone, "26", "Answered elsewhere")
            self._member_status(queue, member, "1")
        if outcome == "answered":
            ext = answer_by or next(iter(members), "PJSIP/1001").split("/", 1)[1]
            member = members.get(f"PJSIP/{ext}") or self.add_queue_member(queue, ext)
            phone = self._ring_member(a, queue, member, ext)
            ring = max(0.0, wait - spent)
            await self._pause(ring)
            self._state(phone, "Up")
            self._dial_end(a, phone, "ANSWER")
            hold = int(wait)
            self.emit(
                "QueueCallerLeave",
                [*a.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "0")],
                privilege="agent",
            )
            self.emit(
                "AgentConnect",
                [
                    *a.snapshot(),
                    *phone.snapshot("Dest"),
                    ("Queue", queue),
                    ("Interface", member.interface),
                    ("MemberName", member.name),
                    ("HoldTime", str(hold)),
                    ("RingTime", str(int(ring))),
                ],
                privilege="agent",
            )
            self._log_queue(
                uid, queue, member.interface, "CONNECT", str(hold), phone.uniqueid, str(int(ring))
            )
            member.calls_taken += 1
            self._member_status(queue, member, "2")
            call = SimCall(self, [a, phone])
            call.bridge = self._bridge(phone, a)
            await self._pause(talk)
            first, other = (a, phone) if hangup_by == "caller" else (phone, a)
            self.emit("HangupRequest", [*first.snapshot(), ("Cause", "16")])
            reason = "caller" if hangup_by == "caller" else "agent"
            self.emit(
                "AgentComplete",
                [
                    *a.snapshot(),
                    *phone.snapshot("Dest"),
                    ("Queue", queue),
                    ("Interface", member.interface),
                    ("MemberName", member.name),
                    ("HoldTime", str(hold)),
                    ("TalkTime", str(int(talk))),
                    ("Reason", reason),
                ],
                privilege="agent",
            )
            self._log_queue(
                uid,
                queue,
                member.interface,
                "COMPLETECALLER" if reason == "caller" else "COMPLETEAGENT",
                str(hold),
                str(int(talk)),
                "1",
            )
            self._unbridge([a, phone])
            self._hangup(first, "16", "Normal Clearing")
            self._hangup(other, "16", "Normal Clearing")
            self._member_status(queue, member, "1")
            self._linkedid_end(a)
            return a.linkedid
        ringing = []
        for interface, member in list(members.items()):
            if member.paused:
                continue
            ringing.append((member, self._ring_member(a, queue, member, interface.split("/", 1)[1])))
        await self._pause(max(0.0, wait - spent))
        hold = int(wait)
        if outcome == "abandoned":
            self.emit("HangupRequest", [*a.snapshot(), ("Cause", "16")])
        for member, phone in ringing:
            self._dial_end(a, phone, "CANCEL")
            self._hangup(phone, "26", "Answered elsewhere")
            self._member_status(queue, member, "1")
        if outcome == "abandoned":
            self.emit(
                "QueueCallerAbandon",
                [
                    *a.snapshot(),
                    ("Queue", queue),
                    ("Position", "1"),
                    ("OriginalPosition", "1"),
                    ("HoldTime", str(hold)),
                ],
                privilege="agent",
            )
            self._log_queue(uid, queue, "NONE", "ABANDON", "1", "1", str(hold))
            self.emit(
                "QueueCallerLeave",
                [*a.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "0")],
                privilege="agent",
            )
            self._hangup(a, "16", "Normal Clearing")
        elif outcome == "timeout":
            self.emit(
                "QueueCallerLeave",
                [*a.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "0")],
                privilege="agent",
            )
            self._log_queue(uid, queue, "NONE", "EXITWITHTIMEOUT", "1", "1", str(hold))
            self.emit(
                "VarSet",
                [*a.snapshot(), ("Variable", "QUEUESTATUS"), ("Value", "TIMEOUT")],
                privilege="dialplan",
            )
            self._hangup(a, "16", "Normal Clearing", soft=True)
        else:
            raise ValueError(f"unknown queue outcome {outcome!r}")
        self._linkedid_end(a)
        return a.linkedid

    def queue_join(self, queue: str = "sales", caller: str = "+15551230000") -> SimChannel:
        """A caller enters ``queue`` and stays there (until :meth:`queue_abandon`)."""
        a = self._new_channel(
            f"PJSIP/{self.trunk}", "", caller, "Carrier", "from-trunk", "5551000", state="Ring"
        )
        self._state(a, "Up")
        count = 1 + sum(1 for c in self.channels.values() if c.exten == "5551000" and c is not a)
        self.emit(
            "QueueCallerJoin",
            [*a.snapshot(), ("Queue", queue), ("Position", str(count)), ("Count", str(count))],
            privilege="agent",
        )
        self._log_queue(a.uniqueid, queue, "NONE", "ENTERQUEUE", "", caller, str(count))
        return a

    def queue_abandon(self, a: SimChannel, queue: str = "sales", held: int = 0) -> None:
        self.emit("HangupRequest", [*a.snapshot(), ("Cause", "16")])
        self.emit(
            "QueueCallerAbandon",
            [
                *a.snapshot(),
                ("Queue", queue),
                ("Position", "1"),
                ("OriginalPosition", "1"),
                ("HoldTime", str(held)),
            ],
            privilege="agent",
        )
        self._log_queue(a.uniqueid, queue, "NONE", "ABANDON", "1", "1", str(held))
        self.emit(
            "QueueCallerLeave",
            [*a.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "0")],
            privilege="agent",
        )
        self._hangup(a, "16", "Normal Clearing")
        self._linkedid_end(a)

    def _ring_member(self, a: SimChannel, queue: str, member: SimMember, ext: str) -> SimChannel:
        phone = self._new_channel(f"PJSIP/{ext}", a.linkedid, ext, f"Ext {ext}", "internal", "s")
        self.emit(
            "AgentCalled",
            [
                *a.snapshot(),
                *phone.snapshot("Dest"),
                ("Queue", queue),
                ("Interface", member.interface),
                ("MemberName", member.name),
            ],
            privilege="agent",
        )
        self._dial_begin(a, phone, ext)
        self._state(phone, "Ringing")
        self._member_status(queue, member, "6")
        return phone

    async def _action_queuestatus(self, s: _Session, msg: Message, aid: str) -> None:
        wanted = msg.get("Queue")
        s.send(
            [
                ("Response", "Success"),
                ("ActionID", aid),
                ("EventList", "start"),
                ("Message", "Queue status will follow"),
            ]
        )
        count = 0
        for queue, members in self.queues.items():
            if wanted and queue != wanted:
                continue
            s.send(
                [
                    ("Event", "QueueParams"),
                    ("ActionID", aid),
                    ("Queue", queue),
                    ("Max", "0"),
                    ("Strategy", "ringall"),
                    ("Calls", "0"),
                    ("Holdtime", "0"),
                    ("TalkTime", "0"),
                    ("Completed", "0"),
                    ("Abandoned", "0"),
                    ("ServiceLevel", "60"),
                    ("ServicelevelPerf", "0.0"),
                    ("Weight", "0"),
                ]
            )
            count += 1
            for m in members.values():
                pairs = dict(self._member_pairs(queue, m))
                s.send(
                    [
                        ("Event", "QueueMember"),
                        ("ActionID", aid),
                        ("Queue", queue),
                        ("Name", m.name),
                        ("Location", m.interface),
                        ("StateInterface", m.interface),
                        ("Membership", "static"),
                        ("Penalty", "0"),
                        ("CallsTaken", str(m.calls_taken)),
                        ("LastCall", "0"),
                        ("LastPause", "0"),
                        ("LoginTime", pairs["LoginTime"]),
                        ("InCall", pairs["InCall"]),
                        ("Status", m.status),
                        ("Paused", pairs["Paused"]),
                        ("PausedReason", m.reason),
                        ("Wrapuptime", "0"),
                    ]
                )
                count += 1
        s.send(
            [
                ("Event", "QueueStatusComplete"),
                ("ActionID", aid),
                ("EventList", "Complete"),
                ("ListItems", str(count)),
            ]
        )

    async def _action_queuesummary(self, s: _Session, msg: Message, aid: str) -> None:
        s.send(
            [
                ("Response", "Success"),
                ("ActionID", aid),
                ("EventList", "start"),
                ("Message", "Queue summary will follow"),
            ]
        )
        for queue, members in self.queues.items():
            available = sum(1 for m in members.values() if not m.paused and m.status == "1")
            s.send(
                [
                    ("Event", "QueueSummary"),
                    ("ActionID", aid),
                    ("Queue", queue),
                    ("LoggedIn", str(len(members))),
                    ("Available", str(available)),
                    ("Callers", "0"),
                    ("HoldTime", "0"),
                    ("TalkTime", "0"),
                    ("LongestHoldTime", "0"),
                ]
            )
        s.send(
            [
                ("Event", "QueueSummaryComplete"),
                ("ActionID", aid),
                ("EventList", "Complete"),
                ("ListItems", str(len(self.queues))),
            ]
        )

    async def _action_queuepause(self, s: _Session, msg: Message, aid: str) -> None:
        interface = msg.get("Interface")
        paused = msg.get("Paused").lower()
        if not interface:
            s.respond(aid, "Error", "Need 'Interface' parameter")
            return
        if paused not in ("true", "false", "yes", "no", "1", "0"):
            s.respond(aid, "Error", "Need 'Paused' parameter")
            return
        queue = msg.get("Queue")
        ext = interface.split("/", 1)[-1]
        names = [queue] if queue else [q for q, m in self.queues.items() if interface in m]
        done = [
            q for q in names if self.pause_member(q, ext, paused in ("true", "yes", "1"), msg.get("Reason"))
        ]
        if not done:
            s.respond(aid, "Error", "Interface not found")
            return
        s.respond(
            aid,
            "Success",
            "Interface paused successfully"
            if paused in ("true", "yes", "1")
            else "Interface unpaused successfully",
        )

    async def _end(self, call: SimCall, side: str) -> None:
        if self.calls.pop(call.linkedid, None) is None:
            return
        live = [c for c in call.channels if c.uniqueid in self.channels]
        if not live:
            return
        first = live[0] if side == "caller" else live[-1]
        if side == "system":
            for ch in live:
                self.emit("SoftHangupRequest", [*ch.snapshot(), ("Cause", "16")])
        else:
            self.emit("HangupRequest", [*first.snapshot(), ("Cause", "16")])
        self._unbridge(live)
        for ch in [first] + [c for c in live if c is not first]:
            self._hangup(ch, "16", "Normal Clearing")
        self._linkedid_end(call.channels[0])

    async def _redirect(
        self, call: SimCall, moved: SimChannel, exten: str, context: str = "internal"
    ) -> None:
        """``moved`` is sent to ``context,exten,1`` (AMI ``Redirect``, or a blind transfer's
        after-bridge goto), as Asterisk 13.2+ does it (testsuite ``manager/redirect/single/
        bridge``): the async goto pulls ``moved`` out of the bridge first; the two-party basic
        bridge then dissolves and the channel it was bridged with, which has no dialplan of its
        own, is hung up (no HangupRequest: nobody asked); ``moved`` runs the dialplan at its new
        place, which dials ``exten`` (a new channel of the same linkedid) and bridges anew."""
        peers = [c for c in call.channels if c is not moved and c.uniqueid in self.channels]
        self._unbridge([moved, *peers])
        for peer in peers:
            self._hangup(peer, "16", "Normal Clearing")
        moved.context, moved.exten = context, exten
        self.emit(
            "Newexten",
            [
                *moved.snapshot(),
                ("Extension", exten),
                ("Application", "Dial"),
                ("AppData", f"PJSIP/{exten},20"),
            ],
            privilege="dialplan",
        )
        target = self._new_channel(f"PJSIP/{exten}", moved.linkedid, exten, f"Ext {exten}", "internal", "s")
        call.channels = [moved, target]
        self._dial_begin(moved, target, exten)
        self._state(target, "Ringing")
        if self.phones.get(exten, "answer") == "answer":
            self._state(target, "Up")
            self._dial_end(moved, target, "ANSWER")
            call.bridge = self._bridge(target, moved)
        else:
            self._dial_end(moved, target, "NOANSWER")
            self._hangup(target, "19", "User alerting, no answer")

    async def _originate(self, msg: Message, aid: str, s: _Session, *, sync: bool) -> None:
        endpoint = msg.get("Channel")
        ext = endpoint.split("/", 1)[1]
        outcome = self.phones.get(ext, "answer")
        reason = _PHONE_OUTCOMES.get(outcome, "0")
        cid_num = _callerid_number(msg.get("CallerID")) or "<unknown>"
        cid_name = _callerid_name(msg.get("CallerID"))
        uid = msg.get("ChannelId")
        exten = msg.get("Exten")
        first: SimChannel | None = None
        if outcome != "unregistered":
            first = self._new_channel(
                endpoint, "", cid_num, cid_name, msg.get("Context"), exten, uniqueid=uid
            )
            for item in msg.get_all("Variable"):
                key, _, value = item.partition("=")
                self.emit(
                    "VarSet",
                    [*first.snapshot(), ("Variable", key.lstrip("_")), ("Value", value)],
                    privilege="dialplan",
                )
            self._dial_begin(None, first, ext)
            self._state(first, "Ringing")
            self._dial_state(None, first, "RINGING")
            await self.originate_gate.wait()
            if outcome == "answer":
                self._state(first, "Up")
                self._dial_end(None, first, "ANSWER")
            else:
                status = {"busy": "BUSY", "noanswer": "NOANSWER", "reject": "CONGESTION"}[outcome]
                self._dial_end(None, first, status)
                cause = {
                    "busy": ("17", "User busy"),
                    "noanswer": ("19", "User alerting, no answer"),
                    "reject": ("21", "Call Rejected"),
                }[outcome]
                self._hangup(first, *cause)
                self._linkedid_end(first)
        ok = outcome == "answer"
        if sync:
            s.respond(
                aid,
                "Success" if ok else "Error",
                "Originate successfully queued" if ok else "Originate failed",
            )
        self.emit(
            "OriginateResponse",
            [
                ("ActionID", aid),
                ("Response", "Success" if ok else "Failure"),
                ("Channel", first.name if first else endpoint),
                ("Context", msg.get("Context")),
                ("Exten", exten),
                ("Application", ""),
                ("Data", ""),
                ("Reason", reason),
                ("Uniqueid", first.uniqueid if first else (uid or "<unknown>")),
                ("CallerIDNum", cid_num),
                ("CallerIDName", cid_name or "<unknown>"),
            ],
        )
        if not ok or first is None:
            return
        # The answered first leg runs the dialplan: dial the number out through the trunk.
        first.context = msg.get("Context")
        trunk = self._new_channel(
            f"PJSIP/{self.trunk}", first.linkedid, exten, "<unknown>", "from-trunk", "s"
        )
        call = SimCall(self, [first, trunk])
        self.calls[first.linkedid] = call
        self._dial_begin(first, trunk, f"{exten}@{self.trunk}")
        self._dial_state(first, trunk, "PROGRESS")
        self._state(trunk, "Up")
        self._dial_end(first, trunk, "ANSWER")
        call.bridge = self._bridge(trunk, first)


def _callerid_number(callerid: str) -> str:
    match = re.search(r"<([^>]*)>", callerid)
    return match.group(1) if match else callerid.strip()


def _callerid_name(callerid: str) -> str:
    match = re.match(r'\s*"([^"]*)"', callerid)
    return match.group(1) if match else ""
