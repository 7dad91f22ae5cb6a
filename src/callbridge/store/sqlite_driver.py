"""SQLite through aiosqlite with one thread hop per statement.

aiosqlite runs each SQLite connection on a thread of its own, and every call on it (make a cursor,
execute, fetch the rows, close the cursor, commit, roll back) is a round trip to that thread: the
event loop queues the call, the thread wakes, takes the GIL, answers through the loop's wake-up
pipe. SQLAlchemy's stock adapter makes four such trips per statement and two more per unit of
work, so under load the hub spent more time handing the GIL back and forth than reading rows.

This adapter runs a statement, its rows and the cursor's close as one call on the connection's
thread, and learns from SQLite whether a transaction is open: a commit or a roll-back with nothing
open (every read-only unit of work, the pool's reset when a connection is given back) costs no
trip at all. The results are the same ones SQLAlchemy would have fetched: a plain cursor reads all
its rows at execute time there too. Server-side cursors keep SQLAlchemy's own adapter.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

# What one statement leaves behind: description, rows, rowcount, lastrowid, in a transaction.
_Outcome = tuple[Any, list[Any], int, int | None, bool]


def _execute(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid, connection.in_transaction
    finally:
        cursor.close()


def _executemany(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, parameters)
        return None, [], cursor.rowcount, cursor.lastrowid, connection.in_transaction
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose statement, rows and close are one call on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    _adapt_connection: OneHopConnection

    def __init__(self, adapt_connection: Any) -> None:  # a OneHopConnection; no driver cursor to open
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]  # None before any insert, as sqlite3 says

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return  # nothing is left open on the thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._take(self._adapt_connection.run(_execute, operation, parameters))

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._take(self._adapt_connection.run(_executemany, operation, seq_of_parameters))

    def _take(self, outcome: _Outcome) -> None:
        self._description, rows, self._rowcount, self._lastrowid, _ = outcome
        self._rows = collections.deque(rows)

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection with :class:`OneHopCursor` and no trip to the thread
    for a commit or roll-back when SQLite has no transaction open."""

    __slots__ = ("_in_transaction",)

    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:  # an aiosqlite.Connection
        super().__init__(dbapi, connection)
        self._in_transaction = False

    def run(self, function: Any, operation: Any, parameters: Any) -> _Outcome:
        # Until SQLite says otherwise: a statement that fails, or whose caller is cancelled while
        # the thread still runs it, may have begun a transaction, and the roll-back must be sent.
        self._in_transaction = True
        try:
            outcome: _Outcome = await_(self._run(function, operation, parameters))
        except Exception as error:
            self._handle_exception(error)
        self._in_transaction = outcome[4]
        return outcome

    async def _run(self, function: Any, operation: Any, parameters: Any) -> _Outcome:
        driver: Any = self._connection
        async with self._execute_mutex:
            outcome: _Outcome = await driver._execute(function, driver._conn, operation, parameters)
            return outcome

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:  # SQLAlchemy's own cursor: what it leaves open is not known here
            self._in_transaction = True
        return super().cursor(server_side)

    def commit(self) -> None:
        if self._in_transaction:
            super().commit()
            self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction:
            super().rollback()
            self._in_transaction = False


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (``create_engine(module=…)``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def one_hop_dbapi() -> OneHopDbapi:
    return OneHopDbapi(aiosqlite, sqlite3)
