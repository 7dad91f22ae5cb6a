"""The batching sink: order kept, batches grow under load, a failing batch does not stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from callbridge.domain.events import CallRinging, Event
from callbridge.services.pipeline import BatchingSink

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _event(n: int) -> CallRinging:
    return CallRinging(pbx="p", call_id=f"c{n}", at=T0, extension=str(1000 + n))


async def test_order_kept_and_batches_grow_while_storing() -> None:
    batches: list[list[str]] = []
    gate = asyncio.Event()

    async def process(events: Sequence[Event]) -> None:
        batches.append([e.call_id for e in events])  # type: ignore[attr-defined]
        await gate.wait()  # a slow commit: events queue up meanwhile

    sink = BatchingSink(process, max_batch=50)
    await sink(_event(0))
    await asyncio.sleep(0.01)  # an idle hub: the first event is taken at once, alone
    for n in range(1, 120):
        await sink(_event(n))
    gate.set()
    await sink.drain()
    flat = [c for b in batches for c in b]
    assert flat == [f"c{n}" for n in range(120)]
    assert len(batches[0]) == 1  # the first event did not wait for company
    assert max(len(b) for b in batches) == 50
    assert len(batches) <= 5
    await sink.close()


async def test_a_failing_batch_is_logged_and_the_next_goes_on(caplog: object) -> None:
    seen: list[str] = []

    async def process(events: Sequence[Event]) -> None:
        if any(e.call_id == "c1" for e in events):  # type: ignore[attr-defined]
            raise RuntimeError("database said no")
        seen.extend(e.call_id for e in events)  # type: ignore[attr-defined]

    sink = BatchingSink(process)
    await sink(_event(1))
    await sink.drain()
    await sink(_event(2))
    await sink.drain()
    assert seen == ["c2"]
    await sink.close()
