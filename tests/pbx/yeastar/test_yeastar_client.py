"""The OpenAPI client against the simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from callbridge.domain.errors import PbxRejected, PbxUnavailable
from callbridge.pbx.yeastar.client import (
    YeastarApiError,
    YeastarAuthFailed,
    YeastarClient,
    YeastarIpBlocked,
)
from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator


@pytest.fixture
async def sim() -> AsyncIterator[YeastarSimulator]:
    async with YeastarSimulator(SimulatorConfig(step_delay=0)) as simulator:
        yield simulator


def make_client(sim: YeastarSimulator, **kwargs: object) -> YeastarClient:
    return YeastarClient(sim.base_url, sim.config.client_id, sim.config.client_secret, timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def test_login_is_lazy_shared_and_sends_user_agent(sim: YeastarSimulator) -> None:
    async with make_client(sim, user_agent="callbridge-test") as client:
        assert client.token_status().state == "none"
        pages = await asyncio.gather(*(client.list_extensions() for _ in range(20)))
        assert all(p.total == 4 for p in pages)
        assert sim.login_count == 1  # twenty concurrent calls, one login
        assert client.token_status().state == "valid"
        assert all(r.user_agent == "callbridge-test" for r in sim.requests)
        assert all(r.has_token for r in sim.requests if r.path == "extension/list")
    assert sim.live_tokens() == 0  # aclose revoked the token: a slot of the 8 is free again


async def test_expired_token_is_refreshed_and_the_call_retried_once(sim: YeastarSimulator) -> None:
    async with make_client(sim) as client:
        await client.list_extensions()
        sim.expire_access_tokens()  # the PBX forgot us (restart, clock skew, ...)
        page = await client.list_extensions()
        assert page.total == 4
        assert client.refreshes == 1 and client.logins == 1
        sim.fail_next("extension/list", 10004, "TOKEN EXPIRED", times=2)
        with pytest.raises(YeastarApiError) as info:
            await client.list_extensions()  # retried once, then the error surfaces
        assert info.value.errcode == 10004


async def test_refresh_refused_falls_back_to_login(sim: YeastarSimulator) -> None:
    async with make_client(sim) as client:
        await client.list_extensions()
        sim.expire_access_tokens()
        sim.fail_next("refresh_token", 10004, "TOKEN EXPIRED")
        assert (await client.list_extensions()).total == 4
        assert client.logins == 2


async def test_short_lived_tokens_are_renewed_before_expiry() -> None:
    sim = YeastarSimulator(SimulatorConfig(access_ttl=1, step_delay=0))
    async with sim, make_client(sim) as client:
        for _ in range(6):
            await client.list_extensions()
            await asyncio.sleep(0.3)
        assert client.refreshes >= 1
        assert sim.live_tokens() <= 2


async def test_ip_blocked_stops_all_requests(sim: YeastarSimulator) -> None:
    async with make_client(sim) as client:
        await client.list_extensions()
        sim.block_ip()
        with pytest.raises(YeastarIpBlocked, match="Blocked IPs"):
            await client.list_extensions()
        before = len(sim.requests)
        with pytest.raises(YeastarIpBlocked):
            await client.dial("1005", "+14155550199")
        assert len(sim.requests) == before  # nothing more was sent to the PBX
        assert client.token_status().state == "blocked"
        sim.blocked = False
        client.reset_block()
        assert (await client.list_extensions()).total == 4


async def test_bad_credentials_stop_before_the_pbx_blocks_us(sim: YeastarSimulator) -> None:
    async with YeastarClient(sim.base_url, "wrong", "wrong", max_auth_failures=3) as client:
        for _ in range(3):
            with pytest.raises(YeastarAuthFailed):
                await client.list_extensions()
        logins = sum(1 for r in sim.requests if r.path == "get_token")
        with pytest.raises(YeastarAuthFailed, match="paused"):
            await client.list_extensions()
        assert sum(1 for r in sim.requests if r.path == "get_token") == logins == 3
        assert not sim.blocked  # the simulator blocks at 5, like the PBX


async def test_token_limit_is_respected() -> None:
    async with YeastarSimulator(SimulatorConfig(step_delay=0)) as sim:
        clients = [make_client(sim) for _ in range(9)]
        for client in clients[:8]:
            await client.list_extensions()
        with pytest.raises(YeastarApiError) as info:  # the 9th application session
            await clients[8].list_extensions()
        assert info.value.errcode == 60002
        for client in clients:
            await client.aclose()
    sim = YeastarSimulator(SimulatorConfig(step_delay=0))
    async with sim, make_client(sim, token_limit=2) as client:
        for _ in range(2):
            sim.expire_access_tokens()
            sim.fail_next("refresh_token", 10004)
            await client.list_extensions()
        sim.expire_access_tokens()
        sim.fail_next("refresh_token", 10004)
        with pytest.raises(PbxRejected, match="allows 2"):
            await client.list_extensions()


async def test_pbx_fidelity_user_agent_bearer_and_method(sim: YeastarSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as raw:
        raw.headers.pop("User-Agent")
        r = await raw.post("/openapi/v1.0/get_token", json={"username": "x", "password": "y"})
        assert r.status_code == 200 and r.json()["errcode"] == 40002
        raw.headers["User-Agent"] = "t"
        r = await raw.get("/openapi/v1.0/extension/list", headers={"Authorization": "Bearer abc"})
        assert r.json()["errcode"] == 10004
        r = await raw.post("/openapi/v1.0/extension/list", json={})
        assert r.json()["errcode"] == 10001
        r = await raw.post("/openapi/v1.0/call/answer", json={})
        assert r.json()["errcode"] == 10001  # there is no answer API


async def test_call_control_round_trip(sim: YeastarSimulator) -> None:
    async with make_client(sim) as client:
        dialled = await client.dial("1005", "+14155550199", auto_answer=True)
        assert dialled.call_id
        await sim.drain()
        assert sim.cdrs[-1]["call_id"] == dialled.call_id and sim.cdrs[-1]["status"] == "ANSWERED"
        task = sim.start_scenario("inbound_answered", hold_open=True)
        for _ in range(100):
            calls = await client.query_calls()
            if calls and any(m.status.value == "ANSWER" for m in calls[0].members):
                break
            await asyncio.sleep(0.01)
        [call] = calls
        trunk = next(m for m in call.members if m.is_trunk)
        await client.hold(next(m.channel_id for m in call.members if not m.is_trunk))
        result = await client.hangup(trunk.channel_id)
        assert result.call_id == call.call_id
        await task
        assert await client.query_calls() == ()
        assert sim.cdrs[-1]["status"] == "ANSWERED"
        link = await client.recording_link(file=sim.cdrs[-1]["recording"])
        assert "access_token=" in link.url and "access_token" not in repr(link)
        async with httpx.AsyncClient() as http:
            audio = await http.get(link.url)
        assert audio.content.startswith(b"RIFF")
        cdr = await client.list_cdr()
        assert cdr.total == 2 and cdr.records[0].uid == call.call_id
        with pytest.raises(YeastarApiError) as info:
            await client.hangup("PJSIP/none-0000")
        assert info.value.errcode == 60001


async def test_network_errors_become_pbx_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with YeastarClient(f"http://127.0.0.1:{port}", "id", "secret", timeout=1.0) as client:
        with pytest.raises(PbxUnavailable) as info:
            await client.list_extensions()
        assert info.value.__cause__ is not None


async def test_tokens_never_reach_the_logs(sim: YeastarSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with make_client(sim) as client:
        await client.list_extensions()
        token = client._tokens.access
        assert token
        assert token not in caplog.text
        assert sim.config.client_secret not in caplog.text
