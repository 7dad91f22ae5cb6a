"""Schema migrations, run on every start and by ``callbridge migrate``.

Safe to run concurrently: on PostgreSQL an advisory lock makes a second starter wait, then find
nothing to do. Upgrading a populated database keeps every row (tested).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

log = logging.getLogger(__name__)
# Alembic narrates every step at INFO; we log the one line that matters ourselves.
logging.getLogger("alembic").setLevel(logging.WARNING)

_MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = 0x63616C6C  # "call": the advisory lock every callbridge migrator takes


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Any) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to ``revision``; returns (before, after)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            before = await conn.run_sync(_current)

            def run(sync_conn: Any) -> None:
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(run)
            after = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    return before, after
