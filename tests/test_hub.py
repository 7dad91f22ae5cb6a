"""The hub's own housekeeping around ingest."""

from __future__ import annotations

from typing import Any

from callbridge.bus import LocalBus
from callbridge.hub import ANALYZE_FIRST, CALL_LOG_TABLES, Hub


class _Db:
    """Records what would be analysed (the real one runs ANALYZE on PostgreSQL)."""

    is_sqlite = False

    def __init__(self) -> None:
        self.analyzed: list[tuple[str, ...]] = []

    async def analyze(self, *tables: str) -> None:
        self.analyzed.append(tables)

    async def dispose(self) -> None:
        pass


async def test_call_log_statistics_are_refreshed_as_the_log_doubles() -> None:
    db = _Db()
    any_: Any = None
    hub = Hub(settings=any_, db=any_, box=any_, bus=LocalBus(), login_policy=any_)
    hub.db = db  # type: ignore[assignment]
    hub._count_ingested(ANALYZE_FIRST - 1)
    assert hub._analyzer is None
    hub._count_ingested(1)
    assert hub._analyzer is not None
    await hub._analyzer
    assert db.analyzed == [CALL_LOG_TABLES]
    hub._count_ingested(ANALYZE_FIRST - 1)  # not yet twice as many
    await hub._analyzer
    assert len(db.analyzed) == 1
    hub._count_ingested(1)
    await hub._analyzer
    assert len(db.analyzed) == 2
    await hub.close()
