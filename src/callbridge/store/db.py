"""Engine and sessions. The only module that knows which database we run on."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from callbridge.domain.errors import StoreUnavailable
from callbridge.store.repos import Repos
from callbridge.store.secrets import SecretBox
from callbridge.store.sqlite_driver import one_hop_dbapi
from callbridge.store.tables import now as utcnow
from callbridge.store.tables import write_probe

log = logging.getLogger(__name__)


def display_url(url: str) -> str:
    """The database URL with its password hidden, for logs and the settings page."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers work while the ingest writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out (the
# server restarted, a firewall dropped it). One used moments ago is not: under load a ping on
# every checkout cost three round trips per unit of work. Should a recently used connection be
# dead anyway, its statement fails, the pool drops every connection as old as it, and the caller
# answers 503 (requests) or retries (ingest; nothing is acknowledged before it commits).
PING_AFTER_IDLE_SECONDS = 2.0
_USED_AT = "callbridge_used_at"


# What the database driver raises (through SQLAlchemy); see :func:`connection_lost`.
DatabaseError = DBAPIError


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection broke or cannot be made (a restart, the
    server down), as opposed to a statement the database refused."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, InterfaceError | OperationalError)
    )


# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race and
# was rolled back whole; the same work, tried again, normally goes through.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def lost_a_race(exc: BaseException) -> bool:
    """Whether ``exc`` says the transaction was chosen to end a deadlock (or could not be
    serialised): nothing of it was kept, and trying again is the remedy."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _ping_when_idle(engine: AsyncEngine) -> None:
    dialect = engine.dialect

    def used(dbapi_connection: Any, record: Any) -> None:
        record.info[_USED_AT] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        used_at = record.info.get(_USED_AT)
        if used_at is not None and time.monotonic() - used_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError(f"pooled connection is gone: {type(exc).__name__}") from exc

    event.listen(engine.sync_engine, "connect", used)
    event.listen(engine.sync_engine, "checkin", used)
    event.listen(engine.sync_engine, "checkout", checkout)


# The connections a pool holds at most (``pool_size`` + ``max_overflow``), per backend
# (SQLite: SQLAlchemy's defaults for a database file).
SQLITE_POOL = (5, 10)
POSTGRES_POOL = (10, 20)
POOL_TIMEOUT_SECONDS = 10.0
# How long closing the database waits for writes whose callers had gone (see finish_anyway).
DISPOSE_WAIT_SECONDS = 10.0
# Connections the requests' units of work leave to the hub's own work (ingest, the live desk).
RESERVED_CONNECTIONS = 2


_T = TypeVar("_T")


class FairGate:
    """At most ``size`` holders at once; the others wait in the order they came.

    The pool alone is not fair: a connection given back goes to whoever asks next, and under
    load that is usually a request that has just arrived, not one that has waited for seconds.
    With 200 clients in a loop the slowest requests (p99) waited 3-4 times as long as the
    median (bench/api_load.py). Behind this gate no request takes a connection ahead of an older one.
    ``asyncio.Semaphore`` serves its waiters first in, first out (Python 3.11.1+); one is made
    per event loop (tests run the same hub in several)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(size)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.size)
        semaphore = self._semaphore
        try:
            async with asyncio.timeout(self.timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise StoreUnavailable("the hub is too busy to answer now; try again in a moment") from None
        try:
            yield
        finally:
            semaphore.release()


class Database:
    """Owns the engine; hands out one session per request or per event batch."""

    def __init__(self, url: str, box: SecretBox, *, echo: bool = False) -> None:
        self.url = url
        self.box = box
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # The database's file (SQLite on disk), for what lives beside it (the webhook inbox).
        self.sqlite_file = (
            parsed.database
            if self.is_sqlite
            and parsed.database
            and parsed.database != ":memory:"
            and "mode=memory" not in url
            else None
        )
        pool_size, max_overflow = SQLITE_POOL if self.is_sqlite else POSTGRES_POOL
        kwargs: dict[str, Any] = {"echo": echo}
        if not self.is_sqlite:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=POOL_TIMEOUT_SECONDS)
        elif parsed.get_driver_name() == "aiosqlite":
            kwargs["module"] = one_hop_dbapi()  # one trip to SQLite's thread per statement
        # Requests' units of work (see :meth:`request_unit`).
        self.request_gate = FairGate(max(1, pool_size + max_overflow - RESERVED_CONNECTIONS), 30.0)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            _ping_when_idle(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._finishing: set[asyncio.Task[Any]] = set()
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block ends cleanly and rolls back otherwise.

        A commit the database refuses (full, read-only, gone, a deferred constraint) raises
        :class:`StoreUnavailable`: nothing of the block was kept, and whoever answers for it
        must not say it was."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            try:
                await session.commit()
            except DBAPIError as exc:
                log.error("the database refused a commit: %s", type(exc.orig).__name__)
                await session.rollback()
                raise StoreUnavailable(
                    "the database could not store the change; nothing was saved, try again in a moment"
                ) from exc

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """On SQLite, the hub's steady writers (ingest, the ERP outbox) take turns here, first
        come first served, around a unit of work that writes. No-op on PostgreSQL.

        SQLite lets one connection write at a time, and one that finds the lock taken sleeps and
        tries again (after 1, 2, 5 … ms, then every 100 ms): it is not a queue. Under a steady
        stream of short ingest transactions (a busy PBX) the lock is free only for moments, and
        a writer that has waited a while keeps missing them: the ERP outbox's claim waited up to
        4 s at 20 calls/s (bench/connectors.py), while ingest, retrying within milliseconds,
        went on. Here each waits for the writers ahead of it and no more. Not re-entrant: a
        holder opens no other unit that takes a turn."""
        if not self.is_sqlite:
            yield
            return
        loop = asyncio.get_running_loop()
        if loop is not self._turn_loop:  # one lock per event loop (tests run a hub in several)
            self._turn_loop, self._turn = loop, asyncio.Lock()
        async with self._turn:
            yield

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Repos]:
        """Repositories over one session; commits when the block ends cleanly."""
        async with self.session() as session:
            yield Repos(session, self.box)

    @asynccontextmanager
    async def request_unit(self) -> AsyncIterator[Repos]:
        """A request's unit of work: :meth:`unit`, once the request's turn has come (see
        :class:`FairGate`). A request that waits longer than the gate's timeout is answered
        ``StoreUnavailable`` (503) rather than held."""
        async with self.request_gate.held(), self.unit() as repos:
            yield repos

    async def analyze(self, *tables: str) -> None:
        """Refresh PostgreSQL's planner statistics of ``tables`` (no-op on SQLite)."""
        if self.is_sqlite or not tables:
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("ANALYZE " + ", ".join(tables)))
            await conn.commit()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not ready"
            log.warning("database ping failed: %s", type(exc).__name__)
            return False
        return True

    async def can_write(self) -> bool:
        """Whether a write commits: this process's row of ``write_probe`` is written and
        committed, which a read-only or full database refuses while ``SELECT 1`` still works."""
        name = f"{socket.gethostname()}:{os.getpid()}"[:128]
        try:
            insert = sqlite_insert if self.is_sqlite else pg_insert
            statement = insert(write_probe).values(name=name, at=utcnow())
            async with self.session() as session:
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["name"], set_={"at": statement.excluded.at}
                    )
                )
        except Exception as exc:  # any driver error means "not ready"
            log.warning("database write probe failed: %s", type(exc).__name__)
            return False
        return True

    async def finish_anyway(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Await ``work``, which writes; should the caller be cancelled meanwhile, ``work`` still
        runs to its end (committed or rolled back) and what it raises then is logged.

        A write cancelled midway is not safe on SQLite: the driver's connection can be dropped
        with its transaction open, and the database's write lock then stays held; every later
        write waits for it and fails. Callers that are cancelled as a matter of course (a
        WebSocket that goes away while its batch is stored) go through here. :meth:`dispose`
        waits for such work before it closes the connections."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)

        def done(t: asyncio.Task[_T]) -> None:
            self._finishing.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                log.warning("a write whose caller had gone failed: %s", type(exc).__name__)

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def dispose(self) -> None:
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=DISPOSE_WAIT_SECONDS)
        await self.engine.dispose()
