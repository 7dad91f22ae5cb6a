"""API latency under load: ``GET /api/v1/calls`` with 200 concurrent token-authenticated clients,
and GET latency while a large contacts import runs — against a real hub on loopback.

1. a fresh data dir (SQLite), ``callbridge migrate``, an API token for admin (``callbridge token
   create``), ``--calls`` generated calls in the call log (0: an empty log; a quarter of them
   linked to one of 2,000 contacts), then ``callbridge serve`` (uvicorn, one worker) in a
   subprocess;
2. 200 clients (one connection each, connected first) ask ``GET /api/v1/calls`` in a loop:
   p50/p99, requests/s, the hub's CPU time per request, and errors;
3. an import of N generated contacts (``POST /api/v1/contacts/import``) while 8 clients keep
   asking ``GET /api/v1/calls``: p50/p99/max of those GETs and how many were refused (503).

Goal (issue #20): p99 under 500 ms with 200 clients; no 503 during an import.
Run: .venv/bin/python bench/api_load.py [--requests 4000] [--calls 50000] [--import-rows 100000]
[--workers 2]
(``--import-rows 0`` skips the import. ``--workers N`` above 1 runs ``callbridge serve --workers N``
with a throwaway ``redis-server`` as the bus, the documented way to use more than one core; the
CPU figure then sums the worker processes.)
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvloop
from sqlalchemy import create_engine, insert

from callbridge.store.calls import calls
from callbridge.store.directory import contacts

GOAL_P99_MS = 500.0
CLIENTS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed_calls(data: Path, count: int) -> None:
    """``count`` ended calls over the last 90 days; every fourth linked to one of 2,000 contacts."""
    if count <= 0:
        return
    engine = create_engine(f"sqlite:///{data / 'callbridge.db'}")
    now = datetime.now(UTC)
    people = [
        {"id": i, "kind": "person", "name": f"Person {i}", "name_folded": f"person {i}", "created_at": now}
        for i in range(1, 2001)
    ]
    rows = []
    for i in range(count):
        started = now - timedelta(seconds=90 * 86400 * (count - i) / count)
        answered = i % 3 != 0
        contact = 1 + i % 2000 if i % 4 == 0 else None
        rows.append(
            {
                "pbx": "pbx1",
                "pbx_call_id": f"call-{i}",
                "direction": ("inbound", "outbound", "internal")[i % 3],
                "from_number": f"+1415555{i % 10_000:04d}",
                "to_number": f"{100 + i % 50}",
                "from_name": f"Caller {i % 997}",
                "external_number": f"+1415555{i % 10_000:04d}",
                "disposition": "answered" if answered else "missed",
                "answered_by_extension": f"{100 + i % 50}" if answered else "",
                "started_at": started,
                "answered_at": started + timedelta(seconds=8) if answered else None,
                "ended_at": started + timedelta(seconds=90),
                "ring_seconds": 8,
                "talk_seconds": 82 if answered else 0,
                "contact_id": contact,
                "match": "contact" if contact else "none",
                "updated_at": now,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(contacts), people)
        for start in range(0, count, 5000):
            conn.execute(insert(calls), rows[start : start + 5000])
    engine.dispose()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far; NaN where /proc is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` and its children (uvicorn's worker processes)."""
    total = _cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += _cpu_seconds(int(stat.parent.name))
    return total


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Connection:
    """One keep-alive HTTP/1.1 connection asking one prepared GET again and again.

    The load's clients share this machine's two cores with the hub, so they must cost little:
    an ``httpx`` client spent about 1.3 ms of CPU per request (a third of the hub's own cost),
    CPU the hub then did not have. This reads the status line, the headers and a body of
    ``content-length`` bytes, which is all the hub sends for this request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, url: str, token: str, path: str) -> _Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = (
            f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {token}\r\n"
            "accept: application/json\r\n\r\n"
        ).encode()
        return cls(reader, writer, request)

    async def get(self) -> int:
        """One request; its status code. The whole answer is read."""
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _load(
    url: str, token: str, total: int, clients: int
) -> tuple[list[float], dict[int, int], list[float]]:
    """``total`` requests from ``clients`` clients in a closed loop: latencies, status codes, and
    the latencies of each client's first request (its connection's set-up), kept apart.

    Each client is one connection (see :class:`_Connection`), opened and used once before the
    clock starts."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    left = total

    async def connect() -> tuple[_Connection, float]:
        started = time.perf_counter()
        connection = await _Connection.open(url, token, "/api/v1/calls")
        if (code := await connection.get()) != 200:
            raise SystemExit(f"GET /api/v1/calls answered {code}")
        return connection, (time.perf_counter() - started) * 1000

    async def client(connection: _Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            code = await connection.get()
            latencies.append((time.perf_counter() - started) * 1000)
            codes[code] = codes.get(code, 0) + 1

    opened = await asyncio.gather(*(connect() for _ in range(clients)))
    try:
        await asyncio.gather(*(client(connection) for connection, _ in opened))
    finally:
        await asyncio.gather(*(connection.close() for connection, _ in opened))
    return latencies, codes, [took for _, took in opened]


async def _during_import(url: str, token: str, rows: int) -> tuple[list[float], dict[int, int], float]:
    csv = b"Name,Phone\n" + b"".join(
        f"Person {i},+1 415 {200 + i // 10_000 % 700:03d} {i % 10_000:04d}\n".encode() for i in range(rows)
    )
    latencies: list[float] = []
    codes: dict[int, int] = {}
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=600) as uploader:
        started = time.perf_counter()
        upload = asyncio.create_task(
            uploader.post("/api/v1/contacts/import", files={"file": ("c.csv", csv, "text/csv")})
        )

        async def reader() -> None:
            async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60) as c:
                while not upload.done():
                    t0 = time.perf_counter()
                    answer = await c.get("/api/v1/calls")
                    latencies.append((time.perf_counter() - t0) * 1000)
                    codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(reader() for _ in range(8)))
        result = await upload
        took = time.perf_counter() - started
        if result.status_code != 200:
            print(f"import answered {result.status_code}: {result.text[:200]}")
    return latencies, codes, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--calls", type=int, default=0, help="calls in the call log (0: empty)")
    parser.add_argument("--import-rows", type=int, default=100_000, help="0: no import")
    parser.add_argument("--workers", type=int, default=1, help="hub worker processes (above 1: with Redis)")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cb-apiload-"))
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data), "CALLBRIDGE_LOG_LEVEL": "WARNING"}
    redis: subprocess.Popen[bytes] | None = None
    if args.workers > 1:
        redis_port = _free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        env["CALLBRIDGE_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    cli = [sys.executable, "-m", "callbridge"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*cli, "token", "create", "admin"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    _seed_calls(data, args.calls)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        cpu = _tree_cpu_seconds(server.pid)
        client_cpu = time.process_time()
        started = time.perf_counter()
        latencies, codes, firsts = uvloop.run(_load(url, token, args.requests, CLIENTS))
        took, cpu = time.perf_counter() - started, _tree_cpu_seconds(server.pid) - cpu
        client_cpu = time.process_time() - client_cpu
        took -= max(firsts) / 1000  # the connections' set-up is not part of the rate
        p50, p99 = statistics.median(latencies), _pct(latencies, 0.99)
        rate = len(latencies) / took
        print(
            f"GET /api/v1/calls, {CLIENTS} clients, {args.workers} worker(s), {args.requests} requests, "
            f"{args.calls} calls in the log: codes {codes}"
        )
        print(
            f"  p50 {p50:8.1f} ms   {rate:6.0f} requests/s   "
            f"server CPU {cpu * 1000 / (len(latencies) + len(firsts)):.2f} ms per request   "
            f"(the clients' own CPU: {client_cpu * 1000 / (len(latencies) + len(firsts)):.2f} ms per request)"
        )
        print(f"  p99 {p99:8.1f} ms   goal {GOAL_P99_MS:.0f} ms   ratio {p99 / GOAL_P99_MS:.2f}x of goal")
        print(
            f"  (each client's first request, connecting: p50 {statistics.median(firsts):.1f} ms, "
            f"max {max(firsts):.1f} ms; not counted above)"
        )
        if args.import_rows <= 0:
            return
        during, codes, took = asyncio.run(_during_import(url, token, args.import_rows))
        refused = sum(n for code, n in codes.items() if code >= 500)
        print(
            f"GET /api/v1/calls during an import of {args.import_rows} contacts ({took:.1f} s): codes {codes}"
        )
        print(
            f"  p50 {statistics.median(during):8.1f} ms   p99 {_pct(during, 0.99):8.1f} ms   "
            f"max {max(during):8.1f} ms   refused {refused} of {len(during)} (goal 0)"
        )
    finally:
        server.terminate()
        server.wait(10)
        if redis is not None:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    main()
