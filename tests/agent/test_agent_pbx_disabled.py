"""Disabling or removing an agent's PBX closes the agent's link at once and refuses it until the
PBX is enabled again; then the agent comes back by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.test_agent_link import SECRET, _config, _run, _stop, eventually

from callbridge.agent.runner import Agent
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.agents import AgentLink


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET) as s:
        yield s


async def test_disabling_the_pbx_cuts_and_refuses_its_agent_until_enabled(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    token = await add_agent_pbx(served.hub)
    agent = Agent(_config(served.url, token, sim, tmp_path))
    task = await _run(agent)
    try:
        await eventually(lambda: agent.hub_connected, what="agent up")
        link = served.hub.supervisor().links["office"]
        assert isinstance(link, AgentLink) and link.connected

        off = await served.api.patch("/api/v1/pbxes/office", json={"enabled": False})
        assert off.status_code == 200, off.text
        await eventually(lambda: not agent.hub_connected, what="agent cut")
        # It keeps trying (its refused back-off starts at 0.3 s) and keeps being refused.
        await asyncio.sleep(1.2)
        assert not agent.hub_connected

        on = await served.api.patch("/api/v1/pbxes/office", json={"enabled": True})
        assert on.status_code == 200, on.text
        await eventually(lambda: agent.hub_connected, what="agent back")

        gone = await served.api.delete("/api/v1/pbxes/office")
        assert gone.status_code == 204
        await eventually(lambda: not agent.hub_connected, what="agent cut after removal")
    finally:
        await _stop(task)
