"""Under load: requests take their database connection in the order they came (no request is
overtaken while it waits), and the token lookup costs one statement."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import event
from tests.conftest import api_token

from callbridge.hub import Hub
from callbridge.store.db import POSTGRES_POOL, SQLITE_POOL, FairGate


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_request_waiting_for_a_connection_is_not_overtaken_by_a_newcomer(hub: Hub) -> None:
    db = hub.db
    pool_size, max_overflow = SQLITE_POOL if db.is_sqlite else POSTGRES_POOL
    capacity = pool_size + max_overflow
    order: list[str] = []
    entered: set[str] = set()
    ready: list[int] = []
    newcomers: list[asyncio.Task[None]] = []

    async def hold(release: asyncio.Event) -> None:
        async with db.request_unit() as repos:
            await repos.users.get_by_name("admin")  # a connection is taken
            ready.append(1)
            await release.wait()

    async def take(name: str) -> None:
        async with db.request_unit() as repos:
            entered.add(name)
            await repos.users.get_by_name("admin")
            order.append(name)

    def newcomer_arrives(*_: object) -> None:
        # A request arrives the moment a connection is given back, before the waiter runs again.
        if not newcomers:
            newcomers.append(asyncio.get_running_loop().create_task(take("newcomer")))

    releases = [asyncio.Event() for _ in range(capacity)]  # every connection of the pool
    holders = [asyncio.create_task(hold(release)) for release in releases]
    for _ in range(500):
        if len(ready) >= min(capacity, db.request_gate.size):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    waiter = asyncio.create_task(take("waited"))
    await _settle()
    assert order == []  # every place is taken: it waits
    event.listen(db.engine.sync_engine, "checkin", newcomer_arrives)
    try:
        # Give places back one at a time until the waiter has one; then let it finish.
        for release, holder in zip(releases, holders, strict=True):
            release.set()
            await holder
            await _settle()
            if "waited" in entered:
                break
        await asyncio.wait({waiter}, timeout=3)
        for release in releases:
            release.set()
        await asyncio.wait_for(asyncio.gather(*holders, waiter), 10)
        await asyncio.wait_for(asyncio.gather(*newcomers), 10)
    finally:
        event.remove(db.engine.sync_engine, "checkin", newcomer_arrives)
    assert order == ["waited", "newcomer"]


async def test_the_gate_serves_waiters_first_in_first_out() -> None:
    gate = FairGate(1, timeout=5)
    order: list[int] = []

    async def one(n: int) -> None:
        async with gate.held():
            order.append(n)
            await asyncio.sleep(0)

    await asyncio.gather(*(one(n) for n in range(20)))
    assert order == list(range(20))


async def test_a_request_that_waits_too_long_is_told_to_retry(
    hub: Hub, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await api_token(hub, "admin")
    monkeypatch.setattr(hub.db, "request_gate", FairGate(1, timeout=0.2))
    release = asyncio.Event()

    async def hold() -> None:
        async with hub.db.request_unit():
            await release.wait()

    holder = asyncio.create_task(hold())
    await _settle()
    answer = await client.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})
    release.set()
    await holder
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "database_unavailable"
    again = await client.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})
    assert again.status_code == 200


async def test_an_api_request_asks_the_database_two_statements(hub: Hub, client: httpx.AsyncClient) -> None:
    """The token and its user in one statement, the page of calls in another; then, while the
    token is trusted (TOKEN_CACHE_SECONDS), the page alone."""
    token = await api_token(hub, "admin")
    seen: list[str] = []

    mine = asyncio.current_task()  # the requests run in this task (ASGI transport)

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        # Only the request's: the hub's own loops (fetchers, pushers) read on their own schedule.
        if statement.lstrip().upper().startswith("SELECT") and asyncio.current_task() is mine:
            seen.append(statement)

    await client.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})  # warm caches
    hub.token_cache.clear()
    event.listen(hub.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        answer = await client.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})
        first = list(seen)
        seen.clear()
        again = await client.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})
    finally:
        event.remove(hub.db.engine.sync_engine, "before_cursor_execute", count)
    assert answer.status_code == 200 and again.status_code == 200
    assert len(first) == 2, first
    assert len(seen) == 1 and "FROM calls" in seen[0], seen
