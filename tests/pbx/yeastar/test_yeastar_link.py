"""YeastarLink end to end: signed webhooks and WebSocket events from the simulator, commands."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callbridge.domain.errors import AuthenticationFailed, InvalidInput
from callbridge.domain.events import (
    CallEnded,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Event,
    TransferKind,
)
from callbridge.pbx.yeastar.link import YeastarConfig, YeastarLink
from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator
from callbridge.pbx.yeastar.websocket import YeastarSubscription
from callbridge.services.ports import Originate, PbxLink


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[list[Event]], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self.events):
                self.changed.clear()
                await self.changed.wait()

    def of(self, call_id: str) -> list[Event]:
        return [e for e in self.events if getattr(e, "call_id", None) == call_id]


async def answered_live_call(sim: YeastarSimulator, sink: Sink) -> str:
    """Wait until the simulator holds an answered call and the link has seen the answer."""
    async with asyncio.timeout(5):
        while True:  # polls the simulator's state: it offers no event to await
            for call_id, call in sim.calls.items():
                answered = any(m.status == "ANSWER" for m in call.members.values())
                if answered and any(type(e).__name__ == "CallAnswered" for e in sink.of(call_id)):
                    return call_id
            await asyncio.sleep(0.01)


def ended_call(call_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(isinstance(e, CallEnded) and e.call_id == call_id for e in events)


@contextlib.asynccontextmanager
async def serve(handler: Callable[[Request], Awaitable[Response]]) -> AsyncIterator[str]:
    """A stand-in for the web route, on an ephemeral port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/hook", handler, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        server.should_exit = True
        await task
        sock.close()


def link_for(sim: YeastarSimulator, sink: Sink, events: str = "webhook") -> YeastarLink:
    config = YeastarConfig(
        name="pbx1",
        base_url=sim.base_url,
        client_id=sim.config.client_id,
        client_secret=sim.config.client_secret,
        webhook_secret=sim.config.webhook_secret,
        events=events,  # type: ignore[arg-type]
        serial=sim.config.sn,
        heartbeat_interval=0.2,
        tick_interval=0.1,
    )
    return YeastarLink(config, sink)


@pytest.fixture
async def webhook_setup() -> AsyncIterator[tuple[YeastarSimulator, YeastarLink, Sink, list[int]]]:
    sink = Sink()
    statuses: list[int] = []
    holder: dict[str, YeastarLink] = {}

    async def route(request: Request) -> Response:
        body = await request.body()
        try:
            await holder["link"].handle_webhook(body, request.headers.get("x-signature"))
        except AuthenticationFailed:
            statuses.append(401)
            return Response(status_code=401)
        except InvalidInput:
            statuses.append(400)
            return Response(status_code=400)
        statuses.append(200)
        return Response(status_code=200)

    async with serve(route) as url:
        config = SimulatorConfig(webhook_url=url, webhook_duplicates=True, access_ttl=1)
        async with YeastarSimulator(config) as sim:
            link = holder["link"] = link_for(sim, sink)
            runner = asyncio.create_task(link.run())
            try:
                yield sim, link, sink, statuses
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner


async def test_link_satisfies_the_port() -> None:
    link = YeastarLink(YeastarConfig("p", "http://127.0.0.1:9", "id", "secret"), Sink())
    assert isinstance(link, PbxLink)
    assert "secret" not in repr(link.config)
    await link.client.aclose()


async def test_signed_webhooks_with_duplicates_log_each_call_once(
    webhook_setup: tuple[YeastarSimulator, YeastarLink, Sink, list[int]],
) -> None:
    sim, link, sink, statuses = webhook_setup
    call_id = await sim.run_scenario("inbound_answered")
    await sink.wait_for(ended_call(call_id))
    await sim.drain()
    events = sink.of(call_id)
    assert [type(e).__name__ for e in events].count("CallEnded") == 1
    start = next(e for e in events if isinstance(e, CallStarted))
    assert start.direction is Direction.INBOUND and start.from_number == "+14155550100"
    assert link.duplicates > 0  # every webhook came twice
    assert set(statuses) == {200}
    status = link.status()
    assert status.connected and status.last_event_at is not None
    assert status.extra["last_event_type"] == "30012" and status.extra["token"] == "valid"


async def test_forged_webhook_is_rejected_by_the_route(
    webhook_setup: tuple[YeastarSimulator, YeastarLink, Sink, list[int]],
) -> None:
    sim, link, sink, statuses = webhook_setup
    sim.config.webhook_secret = "forged-forged-forged-forged-1234"
    sim.config.webhook_retries = 1
    await sim.run_scenario("internal")
    await sim.drain()
    assert statuses and set(statuses) == {401}
    assert sink.events == [] and link.messages == 0


async def test_click_to_call_through_the_link_and_token_expiry_mid_call(
    webhook_setup: tuple[YeastarSimulator, YeastarLink, Sink, list[int]],
) -> None:
    sim, link, sink, _ = webhook_setup
    call_id = await link.originate(Originate(extension="1005", number="+1 415 555 0199"))
    await sink.wait_for(ended_call(call_id))
    end = next(e for e in sink.of(call_id) if isinstance(e, CallEnded))
    assert end.disposition is Disposition.ANSWERED and end.answered_by == ""  # the customer answered

    # A held-open inbound call; the 1-second token dies while it is up; hangup still works.
    task = sim.start_scenario("inbound_answered", hold_open=True)
    live = await answered_live_call(sim, sink)
    await asyncio.sleep(1.3)
    sim.expire_access_tokens()
    await link.hangup(live)
    await task
    await sink.wait_for(ended_call(live))
    end = next(e for e in sink.of(live) if isinstance(e, CallEnded))
    assert end.disposition is Disposition.ANSWERED and end.answered_by == "2002"


async def test_failed_click_to_call_is_not_the_customers_outcome(
    webhook_setup: tuple[YeastarSimulator, YeastarLink, Sink, list[int]],
) -> None:
    sim, link, sink, _ = webhook_setup
    sim.next_dial_outcome = "agent_no_answer"
    call_id = await link.originate(Originate(extension="1005", number="+14155550199"))
    await sink.wait_for(ended_call(call_id))
    start = next(e for e in sink.of(call_id) if isinstance(e, CallStarted))
    end = next(e for e in sink.of(call_id) if isinstance(e, CallEnded))
    assert start.to_number == "+14155550199"
    assert end.disposition is Disposition.FAILED  # not MISSED: the customer never rang


async def test_redirect_is_a_blind_transfer_of_the_caller(
    webhook_setup: tuple[YeastarSimulator, YeastarLink, Sink, list[int]],
) -> None:
    sim, link, sink, _ = webhook_setup
    task = sim.start_scenario("inbound_answered", hold_open=True)
    call_id = await answered_live_call(sim, sink)
    await link.redirect(call_id, "2005")
    await task
    await sink.wait_for(ended_call(call_id))
    transfer = next(e for e in sink.of(call_id) if isinstance(e, CallTransferred))
    assert (transfer.transfer, transfer.from_extension, transfer.to) == (TransferKind.BLIND, "2002", "2005")


async def test_websocket_mode_survives_token_expiry() -> None:
    sink = Sink()
    async with YeastarSimulator(SimulatorConfig(access_ttl=1, ws_idle_timeout=0.5)) as sim:
        link = link_for(sim, sink, events="websocket")
        runner = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(5):
                while not link.status().connected:  # noqa: ASYNC110 (status is a snapshot API)
                    await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)  # token died (10004 frame), idle timeout passed twice
            first = await sim.run_scenario("outbound")
            await sink.wait_for(ended_call(first))
            assert link._subscription is not None and link._subscription.connects >= 2
            second = await sim.run_scenario("inbound_missed")
            await sink.wait_for(ended_call(second))
            end = next(e for e in sink.of(second) if isinstance(e, CallEnded))
            assert end.disposition is Disposition.MISSED
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_empty_topic_list_is_never_sent() -> None:
    link = YeastarLink(YeastarConfig("p", "http://127.0.0.1:9", "id", "secret"), Sink())

    async def ignore(_: object) -> None:
        return None

    with pytest.raises(ValueError, match="topic"):
        YeastarSubscription(link.client, [], ignore)
    await link.client.aclose()
