"""AMI client, actions and AsteriskLink against the simulator over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from callbridge.domain.errors import PbxRejected, PbxTimeout, PbxUnavailable
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Event,
    HangupSide,
)
from callbridge.pbx.asterisk.client import AmiClient, ClientSettings
from callbridge.pbx.asterisk.link import AsteriskConfig, AsteriskLink
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.ports import Originate, PbxLink

SECRET = "s3cr3t-for-tests"


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(username="hub", secret=SECRET, auth_failure_delay=0.05) as server:
        yield server


def settings(sim: AmiSimulator, **kw: object) -> ClientSettings:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": sim.port,
        "username": "hub",
        "secret": SECRET,
        "connect_timeout": 2.0,
        "action_timeout": 2.0,
        "login_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    base.update(kw)
    return ClientSettings(**base)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    """Wait for a condition the simulator and the link reach asynchronously (or fail)."""
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# -- login --------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["md5", "plain"])
async def test_login_succeeds_and_ping_answers(sim: AmiSimulator, auth: str) -> None:
    client = AmiClient(settings(sim, auth=auth))
    await client.connect()
    try:
        assert client.version == "11.0.0"
        reply = await client.send_action("Ping")
        assert reply.get("Ping") == "Pong"
        login = next(m for m in sim.actions if m.get("Action") == "Login")
        # MD5 never puts the secret on the wire.
        assert ("Secret" in login) is (auth == "plain")
    finally:
        await client.close()


@pytest.mark.parametrize("auth", ["md5", "plain"])
async def test_wrong_secret_is_rejected_clearly_and_not_retried(sim: AmiSimulator, auth: str) -> None:
    client = AmiClient(settings(sim, auth=auth, secret="wrong"))
    with pytest.raises(PbxRejected, match="refused: Authentication failed"):
        await asyncio.wait_for(client.run(), timeout=3.0)
    logins = [m for m in sim.actions if m.get("Action") == "Login"]
    assert len(logins) == 1  # no reconnect storm
    assert not client.connected


async def test_wrong_username_is_rejected(sim: AmiSimulator) -> None:
    client = AmiClient(settings(sim, username="nobody"))
    with pytest.raises(PbxRejected):
        await client.connect()


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AmiClient(ClientSettings(host="127.0.0.1", port=port, connect_timeout=1.0))
    with pytest.raises(PbxUnavailable) as info:
        await client.connect()
    assert isinstance(info.value.__cause__, OSError)


async def test_silent_server_times_out_on_banner() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AmiClient(ClientSettings(host="127.0.0.1", port=port, connect_timeout=0.2))
        with pytest.raises(PbxTimeout):
            await client.connect()
    finally:
        server.close()
        await server.wait_closed()


# -- actions ------------------------------------------------------------------------------------


async def test_action_timeout_raises_pbx_timeout_and_link_survives(sim: AmiSimulator) -> None:
    sim.silent_actions.add("Command")
    client = AmiClient(settings(sim))
    await client.connect()
    try:
        with pytest.raises(PbxTimeout):
            await client.send_action("Command", {"Command": "core show version"}, deadline=0.2)
        assert (await client.send_action("Ping")).get("Ping") == "Pong"
        assert client.pending_count() == 0
    finally:
        await client.close()


async def test_concurrent_actions_get_their_own_responses(sim: AmiSimulator) -> None:
    client = AmiClient(settings(sim))
    await client.connect()
    try:
        replies = await asyncio.gather(
            *(client.send_action("Command", {"Command": f"core show version {i}"}) for i in range(20))
        )
        for i, reply in enumerate(replies):
            assert reply.get_all("Output") == [f"Asterisk 22.10.1 built by sim (core show version {i})"]
        ids = [m.get("ActionID") for m in sim.actions if m.get("Action") == "Command"]
        assert len(set(ids)) == 20
    finally:
        await client.close()


async def test_event_list_is_gathered_into_one_result(sim: AmiSimulator) -> None:
    client = AmiClient(settings(sim))
    await client.connect()
    try:
        await sim.start_call("inbound")
        response, items = await client.send_list_action("CoreShowChannels")
        assert response.get("EventList") == "start"
        assert [m.get("Event") for m in items] == ["CoreShowChannel", "CoreShowChannel"]
        assert {m.get("Linkedid") for m in items} == {items[0].get("Uniqueid")}
    finally:
        await client.close()


async def test_event_name_filter_drops_other_events(sim: AmiSimulator) -> None:
    seen: list[str] = []
    client = AmiClient(
        settings(sim, event_names=frozenset({"Hangup"})),
        on_event=lambda m, _at: seen.append(m.get("Event")),
    )
    await client.connect()
    try:
        await sim.place_call("inbound_answered")
        await wait_until(lambda: len(seen) >= 2)
        assert set(seen) == {"Hangup"}
    finally:
        await client.close()


async def test_dead_link_is_detected_by_ping(sim: AmiSimulator) -> None:
    client = AmiClient(settings(sim, ping_interval=0.05, ping_timeout=0.1))
    await client.connect()
    sim.silent_actions.add("Ping")  # a half-open link: the socket is up, nobody answers
    await asyncio.wait_for(client.wait_closed(), timeout=2.0)
    assert not client.connected
    await client.close()


# -- link: tracker + reconnect + originate ------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def running_link(sim: AmiSimulator, **kw: object) -> AsyncIterator[tuple[AsteriskLink, Collector]]:
    sink = Collector()
    config = AsteriskConfig(
        name="pbx1",
        host="127.0.0.1",
        port=sim.port,
        username="hub",
        secret=SECRET,
        trunk_patterns=("trunk",),
        backoff_initial=0.05,
        backoff_max=0.2,
        action_timeout=2.0,
        **kw,  # type: ignore[arg-type]
    )
    link = AsteriskLink(config, sink)
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.status().connected)
        await wait_until(lambda: any(m.get("Action") == "CoreShowChannels" for m in sim.actions))
        yield link, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_link_is_a_pbx_link_and_logs_calls(sim: AmiSimulator) -> None:
    async with running_link(sim) as (link, sink):
        assert isinstance(link, PbxLink)
        await sim.place_call("inbound_answered", caller="+14155550123", extension="1002")
        await sim.place_call("inbound_busy")
        await sim.place_call("queue_abandoned")
        await sim.place_call("outbound_answered", extension="1003", number="+442071838750")
        await wait_until(lambda: len(sink.of(CallEnded)) == 4)
        started = sink.of(CallStarted)
        ended = sink.of(CallEnded)
        assert [(e.direction, e.from_number, e.to_number) for e in started] == [  # type: ignore[attr-defined]
            (Direction.INBOUND, "+14155550123", "5551000"),
            (Direction.INBOUND, "+15551230000", "5551000"),
            (Direction.INBOUND, "+15551230000", "5551000"),
            (Direction.OUTBOUND, "1003", "+442071838750"),
        ]
        assert [(e.disposition, e.answered_by) for e in ended] == [  # type: ignore[attr-defined]
            (Disposition.ANSWERED, "1002"),
            (Disposition.BUSY, ""),
            (Disposition.ABANDONED, ""),
            (Disposition.ANSWERED, ""),  # the outside party answered 1003's call
        ]
        assert [e.placed_by for e in started] == ["", "", "", "1003"]  # type: ignore[attr-defined]
        assert link.status().extra["live_calls"] == "0"


async def test_direction_variable_wins_over_trunk_guess(sim: AmiSimulator) -> None:
    async with running_link(sim) as (_link, sink):
        call = await sim.start_call(
            "internal", extension="1001", number="1002", variables={"__CALLBRIDGE_DIRECTION": "outbound"}
        )
        await call.hangup("caller")
        await wait_until(lambda: len(sink.of(CallEnded)) == 1)
        (started,) = sink.of(CallStarted)
        assert started.direction is Direction.OUTBOUND  # type: ignore[attr-defined]


async def test_blind_transfer_keeps_one_call(sim: AmiSimulator) -> None:
    async with running_link(sim) as (_link, sink):
        await sim.place_call("blind_transfer", extension="1001", target="1002")
        await wait_until(lambda: len(sink.of(CallEnded)) == 1)
        (transfer,) = sink.of(CallTransferred)
        assert (transfer.from_extension, transfer.to) == ("1001", "1002")  # type: ignore[attr-defined]
        assert [e.extension for e in sink.of(CallRinging)] == ["1001", "1002"]  # type: ignore[attr-defined]
        (ended,) = sink.of(CallEnded)
        assert ended.answered_by == "1001"  # type: ignore[attr-defined]
        assert len({e.call_id for e in sink.events if hasattr(e, "call_id")}) == 1  # type: ignore[attr-defined]


async def test_dropped_link_reconnects_and_reconciles(sim: AmiSimulator) -> None:
    async with running_link(sim) as (link, sink):
        ended_in_gap = await sim.start_call("inbound", caller="+14155550001", extension="1001")
        await wait_until(lambda: len(sink.of(CallAnswered)) == 1)
        connections = link.client.connections
        sim.drop_connections()
        # While we are away: the first call ends (its events are lost) and a new one starts.
        await ended_in_gap.hangup("caller")
        born_in_gap = await sim.start_call("inbound", caller="+14155550002", extension="1002")
        await wait_until(lambda: link.client.connections == connections + 1 and link.status().connected)
        await wait_until(lambda: len(sink.of(CallEnded)) == 1 and len(sink.of(CallStarted)) == 2)
        (ended,) = sink.of(CallEnded)
        assert ended.call_id == ended_in_gap.linkedid  # type: ignore[attr-defined]
        assert ended.disposition is Disposition.ANSWERED  # type: ignore[attr-defined]
        assert ended.hangup_side is HangupSide.UNKNOWN  # type: ignore[attr-defined]
        rebuilt = sink.of(CallStarted)[1]
        assert rebuilt.call_id == born_in_gap.linkedid  # type: ignore[attr-defined]
        assert rebuilt.from_number == "+14155550002"  # type: ignore[attr-defined]
        assert [e.extension for e in sink.of(CallAnswered)] == ["1001", "1002"]  # type: ignore[attr-defined]
        # Events after the reconnect belong to the rebuilt call.
        await born_in_gap.hangup("callee")
        await wait_until(lambda: len(sink.of(CallEnded)) == 2)
        assert sink.of(CallEnded)[1].call_id == born_in_gap.linkedid  # type: ignore[attr-defined]


async def test_originate_success_returns_call_id_and_tracks_click_to_call(sim: AmiSimulator) -> None:
    async with running_link(sim) as (link, sink):
        call_id = await link.originate(Originate(extension="1001", number="(415) 555-0100", caller_id="ACME"))
        originate = next(m for m in sim.actions if m.get("Action") == "Originate")
        assert originate.get("Async") == "true"
        assert originate.get("Channel") == "PJSIP/1001"
        assert originate.get("Exten") == "4155550100"
        assert originate.get("CallerID") == '"ACME" <4155550100>'
        assert originate.get("ChannelId") == call_id
        await wait_until(lambda: len(sink.of(CallAnswered)) == 1)
        (started,) = sink.of(CallStarted)
        assert started.call_id == call_id  # type: ignore[attr-defined]
        assert (started.direction, started.from_number, started.to_number) == (  # type: ignore[attr-defined]
            Direction.OUTBOUND,
            "1001",
            "+14155550100",
        )
        await link.hangup(call_id)
        await wait_until(lambda: len(sink.of(CallEnded)) == 1)
        assert sink.of(CallEnded)[0].disposition is Disposition.ANSWERED  # type: ignore[attr-defined]
        with pytest.raises(PbxRejected, match="already ended"):
            await link.hangup(call_id)


@pytest.mark.parametrize(
    ("behaviour", "words"),
    [
        ("unregistered", "not registered"),
        ("busy", "is busy"),
        ("noanswer", "did not answer"),
        ("reject", "rejected"),
    ],
)
async def test_originate_failures_use_user_words(sim: AmiSimulator, behaviour: str, words: str) -> None:
    sim.phones["1001"] = behaviour
    async with running_link(sim) as (link, _sink):
        with pytest.raises(PbxRejected, match=words):
            await link.originate(Originate(extension="1001", number="+14155550100"))


async def test_originate_auto_answer_adds_headers(sim: AmiSimulator) -> None:
    async with running_link(sim) as (link, _sink):
        await link.originate(Originate(extension="1001", number="+14155550100", auto_answer=True))
        originate = next(m for m in sim.actions if m.get("Action") == "Originate")
        assert any("answer-after=0" in v for v in originate.get_all("Variable"))


async def test_originate_is_never_resent_after_reconnect(sim: AmiSimulator) -> None:
    sim.originate_gate.clear()  # the phone keeps ringing: no OriginateResponse yet
    async with running_link(sim) as (link, _sink):
        connections = link.client.connections
        pending = asyncio.create_task(link.originate(Originate(extension="1001", number="+14155550100")))
        await wait_until(lambda: any(m.get("Action") == "Originate" for m in sim.actions))
        sim.drop_connections()
        with pytest.raises(PbxUnavailable):
            await asyncio.wait_for(pending, timeout=3.0)
        await wait_until(lambda: link.client.connections == connections + 1)
        await asyncio.sleep(0.1)
        assert [m.get("Action") for m in sim.actions].count("Originate") == 1
        sim.originate_gate.set()


async def test_commands_fail_fast_when_link_is_down(sim: AmiSimulator) -> None:
    link = AsteriskLink(AsteriskConfig(name="pbx1", host="127.0.0.1", port=sim.port), Collector())
    with pytest.raises(PbxUnavailable):
        await link.originate(Originate(extension="1001", number="+14155550100"))
    assert not link.status().connected


async def test_redirect_moves_the_external_party(sim: AmiSimulator) -> None:
    async with running_link(sim) as (link, sink):
        call = await sim.start_call("inbound", extension="1001")
        await wait_until(lambda: len(sink.of(CallAnswered)) == 1)
        await link.redirect(call.linkedid, "1002")
        redirect = next(m for m in sim.actions if m.get("Action") == "Redirect")
        assert redirect.get("Channel").startswith("PJSIP/trunk-")
        assert redirect.get("Exten") == "1002"
        await wait_until(lambda: len(sink.of(CallRinging)) == 2)
        assert sink.of(CallRinging)[1].extension == "1002"  # type: ignore[attr-defined]
