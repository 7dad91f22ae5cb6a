"""Several hub workers (``serve --workers N``) share one database: each connector is synced by
one of them per interval, through the connector's sync lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

import callbridge.connectors as hub_connectors
from callbridge.connectors import ConnectorHub
from callbridge.crm.frappe_simulator import FrappeSimulator
from callbridge.domain.connectors import ConnectorKind
from callbridge.domain.errors import Conflict
from callbridge.hub import Hub
from callbridge.store.connectors import connectors


class Runs(list[int]):
    """The connector ids of every sync that ran; ``started`` is set by the first."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()


@pytest.fixture
def sync_runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    runs = Runs()
    real = hub_connectors.run_sync

    async def counted(connector: Any, connector_id: int, *args: Any, **kwargs: Any) -> Any:
        runs.append(connector_id)
        runs.started.set()
        return await real(connector, connector_id, *args, **kwargs)  # the real sync runs

    monkeypatch.setattr(hub_connectors, "run_sync", counted)
    return runs


async def _two_workers(hub: Hub, frappe: FrappeSimulator) -> tuple[ConnectorHub, ConnectorHub]:
    frappe.add_record(
        "Customer", {"name": "Acme Ltd", "customer_name": "Acme Ltd", "mobile_no": "+14155550199"}
    )
    async with hub.db.unit() as repos:
        await repos.connectors.add(
            "erp", ConnectorKind.ERPNEXT, frappe.base_url, {}, {"api_key": "key1", "api_secret": "secret1"}
        )
    return ConnectorHub(hub.db, hub.settings), ConnectorHub(hub.db, hub.settings)


async def _set_last_sync(hub: Hub, at: datetime) -> None:
    async with hub.db.session() as s:
        await s.execute(update(connectors).values(last_sync_at=at))
        await s.commit()


async def test_two_workers_sync_a_connector_once_per_interval(
    hub: Hub, frappe: FrappeSimulator, sync_runs: Runs
) -> None:
    first, second = await _two_workers(hub, frappe)
    frappe.delay = 0.02  # a sync takes a while: the two rounds overlap
    try:
        await asyncio.gather(first.sync_due(), second.sync_due())
        assert len(sync_runs) == 1
        # Right after: not due, for either worker.
        await asyncio.gather(first.sync_due(), second.sync_due())
        assert len(sync_runs) == 1
        # The interval has passed: once more, by one of them.
        await _set_last_sync(
            hub, datetime.now(UTC) - timedelta(seconds=hub.settings.connector_sync_seconds + 1)
        )
        await asyncio.gather(first.sync_due(), second.sync_due())
        assert len(sync_runs) == 2
        async with hub.db.unit() as repos:
            record = await repos.connectors.get("erp")
        assert record.last_sync_at is not None and record.last_error == ""
        async with hub.db.session() as s:
            lease = (await s.execute(connectors.select())).one()
        assert (lease.sync_lease_owner, lease.sync_lease_until) == ("", None)  # given back
    finally:
        await first.close()
        await second.close()


async def test_a_sync_on_demand_while_another_worker_syncs_is_refused(
    hub: Hub, frappe: FrappeSimulator, sync_runs: Runs
) -> None:
    first, second = await _two_workers(hub, frappe)
    frappe.delay = 0.05
    try:
        running = asyncio.create_task(first.sync("erp", full=True))
        await sync_runs.started.wait()
        with pytest.raises(Conflict, match="another hub worker"):
            await second.sync("erp")
        await running
        assert len(sync_runs) == 1
        await second.sync("erp")  # the lease is free again
        assert len(sync_runs) == 2
    finally:
        await first.close()
        await second.close()


async def test_a_lease_left_by_a_dead_worker_runs_out(
    hub: Hub, frappe: FrappeSimulator, sync_runs: Runs
) -> None:
    first, second = await _two_workers(hub, frappe)
    try:
        async with hub.db.session() as s:
            await s.execute(
                update(connectors).values(
                    sync_lease_owner="dead-worker", sync_lease_until=datetime.now(UTC) + timedelta(seconds=60)
                )
            )
            await s.commit()
        await first.sync_due()
        assert sync_runs == []
        async with hub.db.session() as s:
            await s.execute(
                update(connectors).values(sync_lease_until=datetime.now(UTC) - timedelta(seconds=1))
            )
            await s.commit()
        await first.sync_due()
        assert len(sync_runs) == 1
    finally:
        await first.close()
        await second.close()
