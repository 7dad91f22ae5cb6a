"""Connectors against the ERP simulators on loopback, with a hub on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callbridge.config import Settings
from callbridge.crm.frappe_simulator import FrappeSimulator
from callbridge.crm.odoo_simulator import OdooSimulator
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
)
from callbridge.hub import Hub

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_region="US",
        login_delay_seconds=0,
        start_pbx_links=False,
        start_connectors=False,
        connector_retry_max_seconds=0.2,
        public_url="https://hub.example.com",
    )


@pytest.fixture
async def frappe() -> AsyncIterator[FrappeSimulator]:
    sim = FrappeSimulator()
    sim.add_key("key1", "secret1")
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def odoo() -> AsyncIterator[OdooSimulator]:
    sim = OdooSimulator(version=17, database="acme")
    sim.add_user("bot@acme.test", "odoo-key")
    await sim.start()
    yield sim
    await sim.stop()


def call_events(
    call_id: str,
    number: str,
    *,
    outcome: Disposition = Disposition.ANSWERED,
    extension: str = "100",
    at: datetime = T0,
    direction: Direction = Direction.INBOUND,
) -> list[CallEvent]:
    inbound = direction is Direction.INBOUND
    events: list[CallEvent] = [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=direction,
            from_number=number if inbound else extension,
            to_number=extension if inbound else number,
            placed_by="" if inbound else extension,
        ),
        CallRinging(pbx="main", call_id=call_id, at=at + timedelta(seconds=1), extension=extension),
    ]
    if outcome is Disposition.ANSWERED:
        events.append(
            CallAnswered(pbx="main", call_id=call_id, at=at + timedelta(seconds=5), extension=extension)
        )
    events.append(
        CallEnded(
            pbx="main",
            call_id=call_id,
            at=at + timedelta(seconds=65),
            disposition=outcome,
            answered_by=extension if outcome is Disposition.ANSWERED else "",
        )
    )
    return events


async def push_all(hub: Hub, rounds: int = 50) -> None:
    """Run the pusher until nothing is due (waiting out short back-offs)."""
    import asyncio

    assert hub.connectors is not None
    for _ in range(rounds):
        taken = await hub.connectors.pusher.run_once()
        if taken:
            continue
        due = await hub.connectors.next_due_at()
        if due is None:
            return
        await asyncio.sleep(max(0.01, (due - datetime.now(UTC)).total_seconds()))
    raise AssertionError("the outbox did not drain")
