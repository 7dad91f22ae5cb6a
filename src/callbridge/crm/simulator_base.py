"""What both ERP simulators share: a loopback HTTP server, faults on demand, and a small query
engine (filters, order, offset/limit) over in-memory records, with a sorted index so paging
through 100,000 records by (modified, key) costs a bisection per page, not a scan."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fnmatch
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response


class QueryError(ValueError):
    """A filter, field or order the ERP would refuse."""


@dataclass(slots=True)
class Fault:
    """Answer the next ``count`` requests (matching ``path`` when given) this way."""

    count: int
    status: int = 502
    body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    content_type: str = "text/html"
    retry_after: str | None = None
    path: str = ""
    delay: float = 0.0


class LoopbackServer:
    """Serves ``self.app`` with uvicorn on 127.0.0.1 (an ephemeral port unless given)."""

    app: Starlette

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.faults: list[Fault] = []
        self.down = False  # answer every request with a 502 page (the ERP behind a proxy is down)
        self.delay = 0.0  # seconds added to every answer
        self.requests = 0

    @property
    def port(self) -> int:
        assert self._sock is not None, "simulator not started"
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()

    def fail_next(self, count: int = 1, **kwargs: Any) -> None:
        self.faults.append(Fault(count, **kwargs))

    async def fault_for(self, path: str) -> Response | None:
        """The answer a fault or the "down" switch gives instead of the real one, if any."""
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return Response(Fault(1).body, 502, media_type="text/html")
        for fault in self.faults:
            if fault.count > 0 and (not fault.path or fault.path in path):
                fault.count -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return Response(fault.body, fault.status, media_type=fault.content_type, headers=headers)
        return None


Filter = tuple[str, str, Any]
_OPS = {"=", "!=", ">", ">=", "<", "<=", "in", "not in", "like", "not like", "ilike", "not ilike", "=like"}


def _like(value: Any, pattern: Any, fold: bool) -> bool:
    text, pat = str(value or ""), str(pattern)
    if fold:
        text, pat = text.casefold(), pat.casefold()
    if "%" not in pat and "_" not in pat:
        pat = f"%{pat}%" if fold else pat
    escaped = "".join(f"[{c}]" if c in "[]*?" else c for c in pat)
    return fnmatch.fnmatchcase(text, escaped.replace("%", "*").replace("_", "?"))


def matches(row: dict[str, Any], filters: Sequence[Filter]) -> bool:
    for field, op, value in filters:
        have = row.get(field)
        if (
            isinstance(have, list)
            and have
            and op in ("=", "!=", "in", "not in")
            and not isinstance(value, list)
        ):
            have = have[0]  # a many2one compared by id
        ok: bool
        if op == "=":
            ok = have == value
        elif op == "!=":
            ok = have != value
        elif op in (">", ">=", "<", "<="):
            if have is None or have is False:
                ok = False
            else:
                try:
                    ok = {">": have > value, ">=": have >= value, "<": have < value, "<=": have <= value}[op]
                except TypeError as exc:
                    raise QueryError(f"cannot compare {field} with {value!r}") from exc
        elif op == "in":
            ok = have in (value or [])
        elif op == "not in":
            ok = have not in (value or [])
        elif op in ("like", "=like"):
            ok = _like(have, value, fold=False)
        elif op == "not like":
            ok = not _like(have, value, fold=False)
        elif op == "ilike":
            ok = _like(have, value, fold=True)
        elif op == "not ilike":
            ok = not _like(have, value, fold=True)
        else:
            raise QueryError(f"unknown operator {op!r}")
        if not ok:
            return False
    return True


def check_op(op: str) -> None:
    if op not in _OPS:
        raise QueryError(f"unknown operator {op!r}")


class Table:
    """Records of one doctype/model by key, with sorted indexes built on demand."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: dict[Any, dict[str, Any]] = {}
        self._indexes: dict[tuple[str, ...], tuple[list[tuple[Any, ...]], list[Any]]] = {}

    def put(self, row: dict[str, Any]) -> None:
        self.rows[row[self.key]] = row
        self._indexes.clear()

    def delete(self, key: Any) -> None:
        self.rows.pop(key, None)
        self._indexes.clear()

    def _index(self, fields: tuple[str, ...]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        found = self._indexes.get(fields)
        if found is None:
            items = sorted(
                ((tuple(_sortable(r.get(f)) for f in fields), k) for k, r in self.rows.items()),
                key=lambda item: item[0],
            )
            found = ([i[0] for i in items], [i[1] for i in items])
            self._indexes[fields] = found
        return found

    def select(
        self,
        filters: Sequence[Filter],
        order: Sequence[tuple[str, bool]],
        offset: int,
        limit: int | None,
        extra: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching ``filters`` in ``order`` ((field, descending) pairs), paged."""
        wanted = offset + limit if limit else None
        ascending = bool(order) and not any(desc for _, desc in order)
        out: list[dict[str, Any]] = []
        if ascending:
            fields = tuple(f for f, _ in order)
            keys, names = self._index(fields)
            start, stop_first = _bounds(fields, filters)
            pos = bisect.bisect_left(keys, start) if start else 0
            for i in range(pos, len(keys)):
                if stop_first is not None and keys[i][0] > stop_first:
                    break
                row = self.rows[names[i]]
                if matches(row, filters) and (extra is None or extra(row)):
                    out.append(row)
                    if wanted is not None and len(out) >= wanted:
                        break
        else:
            rows = [r for r in self.rows.values() if matches(r, filters) and (extra is None or extra(r))]
            for field_name, desc in reversed(order or [(self.key, False)]):

                def by(row: dict[str, Any], name: str = field_name) -> Any:
                    return _sortable(row.get(name))

                rows.sort(key=by, reverse=desc)
            out = rows
        return out[offset:wanted] if wanted is not None else out[offset:]


def _sortable(value: Any) -> Any:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value is False:
        return ""
    return value


def _bounds(fields: tuple[str, ...], filters: Sequence[Filter]) -> tuple[tuple[Any, ...] | None, Any]:
    """Where to start in an index on ``fields`` and the first field's value past which to stop."""
    first = fields[0]
    lower: Any = None
    equal: Any = None
    for field, op, value in filters:
        if field == first and op == "=":
            equal = value
        elif field == first and op in (">", ">=") and (lower is None or value > lower):
            lower = value
    if equal is not None:
        start: tuple[Any, ...] = (equal,)
        if len(fields) > 1:
            second = [v for f, o, v in filters if f == fields[1] and o in (">", ">=")]
            if second:
                start = (equal, max(second))
        return start, equal
    if lower is not None:
        return (lower,), None
    return None, None
