"""A hub served for real (uvicorn on loopback, in this event loop) so agents can dial in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from tests.agent.procs import free_port

from callbridge.domain.pbx import PbxKind
from callbridge.hub import Hub
from callbridge.services.agents import issue_token
from callbridge.services.pbxes import AsteriskSettings, add_pbx
from callbridge.web.app import create_app


@dataclass
class Served:
    hub: Hub
    url: str
    api: httpx.AsyncClient  # signed in as admin with an API token


@pytest.fixture
async def served(hub: Hub) -> AsyncIterator[Served]:
    async with serve(hub) as found:
        yield found


@contextlib.asynccontextmanager
async def serve(hub: Hub, **options: Any) -> AsyncIterator[Served]:
    """``hub`` behind uvicorn on a free loopback port, with an admin API client; ``options``
    go to ``uvicorn.Config`` (such as ``callbridge serve``'s own, ``uvicorn_options``)."""
    app = create_app(hub=hub)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", **options
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    async with hub.db.unit() as repos:
        accounts = hub.accounts(repos)
        _, secret = await accounts.create_token(await accounts.get_user("admin"), "tests")
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {secret}"}) as api:
        yield Served(hub, url, api)
    server.should_exit = True
    await task


async def add_agent_pbx(hub: Hub, name: str = "office") -> str:
    async with hub.db.unit() as repos:
        await add_pbx(repos.pbxes, name, PbxKind.ASTERISK, AsteriskSettings(trunks=("trunk*",), agent=True))
        return await issue_token(repos.agents, name)
