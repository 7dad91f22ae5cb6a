"""Fault injection, nothing lost: simulator AMI → `callbridge agent` → real `callbridge serve` hub.

The hub is SIGKILLed and restarted, the WebSocket is cut, the agent is SIGKILLed and restarted;
every call placed must be in the call log exactly once, and closed.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import pytest
from tests.agent.procs import AgentProcess, HubProcess, TcpProxy, call_counts

from callbridge.pbx.asterisk.simulator import AmiSimulator

SCENARIOS = ("inbound_answered", "inbound_missed", "outbound_answered", "inbound_busy")
SECRET = "agent-ami-secret"


async def _place(sim: AmiSimulator, count: int, start: int, per_tick: int = 10) -> None:
    """Place ``count`` whole calls, ``per_tick`` at a time (each call's events in one burst)."""
    kinds = itertools.cycle(SCENARIOS)
    for i in range(count):
        n = start + i
        await sim.place_call(next(kinds), caller=f"+1555{n:07d}", extension=f"{1000 + n % 50}")
        if i % per_tick == per_tick - 1:
            await asyncio.sleep(0.01)


async def _wait_for_calls(database_url: str, expected: int, limit: float) -> tuple[int, int, int, int]:
    deadline = time.monotonic() + limit
    counts = (0, 0, 0, 0)
    while time.monotonic() < deadline:
        counts = await call_counts(database_url)
        if counts[0] >= expected and counts[2] == 0:
            # Give a late duplicate the chance to show itself before judging.
            await asyncio.sleep(0.5)
            return await call_counts(database_url)
        await asyncio.sleep(0.2)
    return counts


def _logs(counts: tuple[int, ...], agent: AgentProcess, hub: HubProcess) -> str:
    """What a failure shows: the counts, then the ends of the agent's and the hub's logs."""
    return (
        f"counts {counts}\n--- agent log ---\n{agent.log_text()[-2000:]}\n"
        f"--- hub log ---\n{hub.log_text()[-2000:]}"
    )


async def _wait_agent_connected(agent: AgentProcess, times: int, limit: float = 20) -> None:
    """Until the agent's ``times``-th start is connected to the hub and logged in to AMI."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = agent.log_text()
        if text.count("connected to the hub as the agent") >= times and text.count("logged in as") >= times:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("agent did not connect:\n" + agent.log_text()[-3000:])


async def _outbox_settled(agent: AgentProcess) -> int:
    """Wait until the agent has read every AMI event sent so far (its outbox stops growing).

    Events Asterisk sent but the agent had not read when it died are gone (AMI keeps no
    history); what the test checks is that nothing the agent *wrote* is ever lost."""
    path = agent.workdir / "outbox.sqlite3"
    last, stable_since = -1, time.monotonic()
    while True:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        seq = int(row[0]) if row else 0
        if seq != last:
            last, stable_since = seq, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            return seq
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    sim = AmiSimulator(secret=SECRET, auth_failure_delay=0.1)
    await sim.start()
    hub = HubProcess(tmp_path / "hub", database_url)
    token = hub.add_agent_pbx("office")
    await hub.astart()
    proxy = TcpProxy(hub.port)
    await proxy.start()
    agent = AgentProcess(tmp_path / "agent", f"http://127.0.0.1:{proxy.port}", token, sim.port, SECRET)
    agent.start()
    try:
        yield sim, hub, proxy, agent
    finally:
        agent.stop()
        await proxy.stop()
        hub.stop()
        await sim.stop()


async def test_1000_calls_survive_hub_kills_and_link_cuts(rig, database_url: str) -> None:  # type: ignore[no-untyped-def]
    sim, hub, proxy, agent = rig
    await _wait_agent_connected(agent, 1)
    placing = asyncio.create_task(_place(sim, 1000, 0))

    async def chaos() -> None:
        for _ in range(3):
            await asyncio.sleep(0.4)
            hub.kill()
            await asyncio.sleep(0.3)
            await hub.astart()
            await asyncio.sleep(0.3)
            proxy.cut()
        for _ in range(2):
            await asyncio.sleep(0.2)
            proxy.cut()

    await asyncio.gather(placing, chaos())
    counts = await _wait_for_calls(database_url, 1000, limit=60)
    calls, distinct, still_open, ended_events = counts
    assert hub.starts == 4 and proxy.cuts >= 5
    assert (calls, distinct, still_open) == (1000, 1000, 0), _logs(counts, agent, hub)
    assert ended_events == 1000
    assert "ERROR" not in agent.log_text()
    # Health as `callbridge pbx list` shows it: agent up, AMI up, nothing waiting in the outbox.
    deadline = time.monotonic() + 10
    listing = ""
    while time.monotonic() < deadline and "outbox 0 " not in listing:
        await asyncio.sleep(0.5)
        listing = await asyncio.to_thread(hub.cli, "pbx", "list")
    assert "agent up" in listing and "AMI up" in listing and "outbox 0 " in listing, listing


async def test_agent_killed_mid_stream_and_restarted(rig, database_url: str) -> None:  # type: ignore[no-untyped-def]
    sim, hub, _proxy, agent = rig
    await _wait_agent_connected(agent, 1)
    # Hub away: everything piles up in the outbox, then the agent is killed with it full.
    hub.kill()
    await _place(sim, 400, 0, per_tick=50)
    assert await _outbox_settled(agent) > 0
    agent.kill()
    await hub.astart()
    agent.start()
    await _wait_agent_connected(agent, 2)
    assert "outbox: 0 waiting" not in agent.log_text().split("logged in as")[-1]
    # Killed while sending, with a call in progress that ends while the agent is dead.
    placing = asyncio.create_task(_place(sim, 300, 400, per_tick=50))
    await asyncio.sleep(0.05)
    live = await sim.start_call("inbound", caller="+15559990000", extension="1001")
    await placing
    await _outbox_settled(agent)
    agent.kill()
    await live.hangup("caller")
    agent.start()
    await _wait_agent_connected(agent, 3)
    await _place(sim, 299, 700)
    counts = await _wait_for_calls(database_url, 1000, limit=60)
    calls, distinct, still_open, ended_events = counts
    assert (calls, distinct, still_open) == (1000, 1000, 0), _logs(counts, agent, hub)
    assert ended_events == 1000
