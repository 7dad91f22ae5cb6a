"""Caller-name lookups with a million contacts: callbridge vs the Frappe-style LIKE '%digits'.

For each database (SQLite always; PostgreSQL when --postgres URL is given):
1. load N generated contacts (default 1,000,000; realistic mixed-country numbers, entered in
   national or international form, 5% of people in one of N/20 companies) through the real
   migrations, then bulk-load rows;
2. start the hub (uvicorn, one worker) and ask ``GET /dialplan/caller-name`` over HTTP with
   keep-alive: p50/p99 latency one request at a time, then lookups/s with 16 in flight;
3. in the same run, time the approach the Frappe/ERPNext integrations use: ``SELECT parent
   FROM … WHERE phone LIKE '%<digits>' LIMIT 1`` over the raw phone column (here
   ``contact_phones.raw``), digits = the number with "+" and leading zeros stripped;
4. (PostgreSQL) ingest rate of completed calls (4 events each) through the hub's event sink.

Run: .venv/bin/python bench/lookup.py [--contacts N] [--postgres postgresql+asyncpg://…]
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callbridge.config import Settings
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
    HangupSide,
)
from callbridge.domain.pbx import PbxKind
from callbridge.hub import Hub
from callbridge.services.pipeline import BatchingSink

# (region, country code, trunk prefix, national significant number patterns, share)
COUNTRIES: list[tuple[str, str, str, list[str], float]] = [
    ("US", "1", "", ["2015550###", "4155550###", "21255#####", "3125######", "6175######"], 0.40),
    ("GB", "44", "0", ["20718#####", "7700######", "16134#####"], 0.15),
    ("DE", "49", "0", ["30########", "151########", "89#######"], 0.15),
    ("FR", "33", "0", ["1########", "6########"], 0.10),
    ("IN", "91", "0", ["98########", "22########"], 0.08),
    ("BR", "55", "0", ["119########", "213#######"], 0.07),
    ("AU", "61", "0", ["4########", "2########"], 0.05),
]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson"]


@dataclass(frozen=True, slots=True)
class Generated:
    key: str  # E.164
    raw: str  # as a person typed it


def numbers(seed: int) -> Iterator[Generated]:
    rng = random.Random(seed)
    weights = [c[4] for c in COUNTRIES]
    seen: set[str] = set()
    while True:
        _, cc, trunk, patterns, _ = rng.choices(COUNTRIES, weights)[0]
        nsn = "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in rng.choice(patterns))
        key = f"+{cc}{nsn}"
        if key in seen:
            continue
        seen.add(key)
        if rng.random() < 0.5:
            raw = f"{trunk}{nsn[:3]} {nsn[3:]}" if cc != "1" else f"({nsn[:3]}) {nsn[3:6]}-{nsn[6:]}"
        else:
            raw = f"+{cc} {nsn[:3]} {nsn[3:]}"
        yield Generated(key, raw)


def rows(n: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[Generated]]:
    """(contacts, phones, a sample of stored numbers)."""
    now = datetime.now(UTC)
    companies = max(1, n // 20)
    contacts: list[tuple[object, ...]] = []
    phones: list[tuple[object, ...]] = []
    gen = numbers(7)
    rng = random.Random(11)
    sample: list[Generated] = []
    phone_id = 0
    for i in range(1, n + 1):
        if i <= companies:
            name, kind, company = f"Company {i} Ltd", "company", None
        else:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
            kind = "person"
            company = rng.randrange(1, companies + 1) if rng.random() < 0.05 else None
        contacts.append((i, kind, name, name.casefold(), company, "", None, "", None, now, now))
        for _ in range(2 if rng.random() < 0.1 else 1):
            number = next(gen)
            phone_id += 1
            phones.append((phone_id, i, number.raw, number.key, "work"))
            if rng.random() < 0.001:
                sample.append(number)
    return contacts, phones, sample


def unknown_numbers(count: int) -> list[str]:
    rng = random.Random(99)
    return [f"+1{rng.choice(['646', '718', '917'])}555{rng.randrange(10000):04d}" for _ in range(count)]


def frappe_digits(number: str) -> str:
    # erpnext.crm.doctype.utils.strip_number: lstrip("+") then lstrip("0")
    return number.lstrip("+").lstrip("0")


# -- loading -------------------------------------------------------------------------------------------

CONTACT_COLUMNS = [
    "id",
    "kind",
    "name",
    "name_folded",
    "company_id",
    "email",
    "owner_id",
    "notes",
    "external_id",
    "created_at",
    "updated_at",
]
PHONE_COLUMNS = ["id", "contact_id", "raw", "number_key", "kind"]


def _sqlite_time(value: object) -> str:
    assert isinstance(value, datetime)
    return value.replace(tzinfo=None).isoformat(sep=" ")


def load_sqlite(path: Path, contacts: list[tuple[object, ...]], phones: list[tuple[object, ...]]) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("PRAGMA synchronous=OFF")
    marks = ",".join("?" * len(CONTACT_COLUMNS))
    with db:
        db.executemany(
            f"INSERT INTO contacts ({','.join(CONTACT_COLUMNS)}) VALUES ({marks})",
            [(*c[:9], _sqlite_time(c[9]), _sqlite_time(c[10])) for c in contacts],
        )
        db.executemany(f"INSERT INTO contact_phones ({','.join(PHONE_COLUMNS)}) VALUES (?,?,?,?,?)", phones)
    db.execute("ANALYZE")
    db.close()


async def load_postgres(
    url: str, contacts: list[tuple[object, ...]], phones: list[tuple[object, ...]]
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.copy_records_to_table("contacts", records=contacts, columns=CONTACT_COLUMNS)
        await conn.copy_records_to_table("contact_phones", records=phones, columns=PHONE_COLUMNS)
        await conn.execute("SELECT setval('contacts_id_seq', (SELECT max(id) FROM contacts))")
        await conn.execute("SELECT setval('contact_phones_id_seq', (SELECT max(id) FROM contact_phones))")
        # A freshly copied table still needs its first vacuum (hint bits, visibility map); a live
        # directory has had it long ago, so measure that steady state.
        await conn.execute("VACUUM ANALYZE contacts")
        await conn.execute("VACUUM ANALYZE contact_phones")
    finally:
        await conn.close()


# -- measuring ----------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One keep-alive HTTP/1.1 GET with a minimal client (so the figures are the server's)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return await reader.readexactly(length)


async def measure_http(
    port: int, token: str, known: list[str], unknown: list[str], seconds: float
) -> dict[str, float]:
    from urllib.parse import quote

    def path(n: str) -> str:
        return f"/dialplan/caller-name?token={token}&number={quote(n)}"

    mixed = [n for pair in zip(known, unknown, strict=False) for n in pair]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hits = 0
    for n in mixed[:200]:  # warm-up
        await http_get(reader, writer, path(n))
    latencies: list[float] = []
    for i in range(4000):
        n = mixed[i % len(mixed)]
        t0 = time.perf_counter()
        body = await http_get(reader, writer, path(n))
        latencies.append(time.perf_counter() - t0)
        hits += bool(body)
    writer.close()

    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        r, w = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < stop:
            await http_get(r, w, path(mixed[i % len(mixed)]))
            i += 1
            done += 1
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k * 97) for k in range(16)))
    elapsed = time.perf_counter() - t0
    return {
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "rps": done / elapsed,
        "hit_rate": hits / len(latencies),
    }


def measure_like_sqlite(path: Path, sample: list[str], budget: float) -> tuple[list[float], int]:
    db = sqlite3.connect(path)
    times: list[float] = []
    found = 0
    deadline = time.perf_counter() + budget
    for n in sample:
        t0 = time.perf_counter()
        row = db.execute(
            "SELECT contact_id FROM contact_phones WHERE raw LIKE ? LIMIT 1", (f"%{frappe_digits(n)}",)
        ).fetchone()
        times.append(time.perf_counter() - t0)
        found += row is not None
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    db.close()
    return times, found


async def measure_like_postgres(url: str, sample: list[str], budget: float) -> tuple[list[float], int]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    times: list[float] = []
    found = 0
    deadline = time.perf_counter() + budget
    try:
        for n in sample:
            t0 = time.perf_counter()
            row = await conn.fetchrow(
                "SELECT contact_id FROM contact_phones WHERE raw LIKE $1 LIMIT 1", f"%{frappe_digits(n)}"
            )
            times.append(time.perf_counter() - t0)
            found += row is not None
            if time.perf_counter() > deadline and len(times) >= 5:
                break
    finally:
        await conn.close()
    return times, found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CALLBRIDGE_DATA_DIR": str(data_dir),
        "CALLBRIDGE_DATABASE_URL": url,
        "CALLBRIDGE_START_PBX_LINKS": "false",
        "CALLBRIDGE_LOG_LEVEL": "WARNING",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "callbridge.web.asgi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the hub did not start")


async def prepare(data_dir: Path, url: str) -> str:
    """Migrate, add a PBX and return its dialplan token."""
    hub = Hub.build(Settings(data_dir=data_dir, database_url=url, start_pbx_links=False))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            await repos.pbxes.add("bench", PbxKind.ASTERISK, {}, {})
            return await repos.dialplan_tokens.token_for("bench")
    finally:
        await hub.close()


async def ingest_rate(data_dir: Path, url: str, calls: int, concurrency: int) -> float:
    hub = Hub.build(Settings(data_dir=data_dir, database_url=url, start_pbx_links=False))
    rng = random.Random(5)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def call_events(i: int) -> list[CallEvent]:
        at = t0 + timedelta(seconds=i)
        cid = f"bench-{concurrency}-{i}"
        return [
            CallStarted(
                pbx="bench",
                call_id=cid,
                at=at,
                direction=Direction.INBOUND,
                from_number=f"+1415555{rng.randrange(10000):04d}",
                to_number="+14155550000",
            ),
            CallRinging(pbx="bench", call_id=cid, at=at + timedelta(seconds=1), extension="1001"),
            CallAnswered(pbx="bench", call_id=cid, at=at + timedelta(seconds=5), extension="1001"),
            CallEnded(
                pbx="bench",
                call_id=cid,
                at=at + timedelta(seconds=65),
                disposition=Disposition.ANSWERED,
                hangup_side=HangupSide.CALLER,
            ),
        ]

    work = [call_events(i) for i in range(calls)]
    if concurrency == 0:
        # As a PBX link feeds the hub: the calls' events interleaved in one ordered stream,
        # through the batching sink (whatever queues during a commit is stored together).
        stream = [
            e
            for wave in range(0, calls, 50)
            for step in range(4)
            for c in work[wave : wave + 50]
            for e in [c[step]]
        ]
        sink = BatchingSink(hub.handle_events)
        try:
            started = time.perf_counter()
            for event in stream:
                await sink(event)
            await sink.drain()
            return calls / (time.perf_counter() - started)
        finally:
            await sink.close()
            await hub.close()
    queue: asyncio.Queue[list[CallEvent]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            for event in queue.get_nowait():
                await hub.handle_event(event)  # one unit of work per event, published after commit

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - started)
    finally:
        await hub.close()


# -- the run --------------------------------------------------------------------------------------------


def report(name: str, http: dict[str, float], like: list[float], like_found: int, n: int) -> None:
    like_p50 = pct(like, 50) * 1000
    print(f"\n== {name}: {n:,} contacts ==")
    print(
        f"callbridge  GET /dialplan/caller-name over HTTP: p50 {http['p50_ms']:.3f} ms, "
        f"p99 {http['p99_ms']:.3f} ms, mean {http['mean_ms']:.3f} ms; "
        f"{http['rps']:,.0f} lookups/s (1 worker, 16 in flight); hit rate {http['hit_rate']:.0%}"
    )
    print(
        f"Frappe-style LIKE '%digits' on the raw column (SQL only, no HTTP): p50 {like_p50:.1f} ms, "
        f"max {max(like) * 1000:.1f} ms over {len(like)} lookups ({like_found} found)"
    )
    print(f"ratio (LIKE p50 / callbridge HTTP p50): {like_p50 / http['p50_ms']:,.0f}x faster")


async def bench_backend(
    name: str,
    url: str,
    data_dir: Path,
    contacts: list[tuple[object, ...]],
    phones: list[tuple[object, ...]],
    sample: list[Generated],
    sqlite_path: Path | None,
    seconds: float,
) -> None:
    t0 = time.perf_counter()
    token = await prepare(data_dir, url)
    if sqlite_path is not None:
        load_sqlite(sqlite_path, contacts, phones)
    else:
        await load_postgres(url, contacts, phones)
    print(
        f"{name}: loaded {len(contacts):,} contacts / {len(phones):,} numbers "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    unknown = unknown_numbers(len(sample))
    # Callers send numbers in many shapes; the hub normalizes each one.
    known = [g.raw if g.raw.startswith(("+", "(")) else g.key for g in sample]
    port = free_port()
    server = start_server(data_dir, url, port)
    try:
        http = await measure_http(port, token, known, unknown, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    like_sample = [n for pair in zip([g.key for g in sample], unknown, strict=False) for n in pair][:40]
    if sqlite_path is not None:
        like, found = measure_like_sqlite(sqlite_path, like_sample, 30.0)
    else:
        like, found = await measure_like_postgres(url, like_sample, 30.0)
    report(name, http, like, found, len(contacts))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("CALLBRIDGE_BENCH_POSTGRES_URL", ""))
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput phase length")
    parser.add_argument("--calls", type=int, default=2000, help="calls for the ingest rate")
    args = parser.parse_args()

    t0 = time.perf_counter()
    contacts, phones, sample = rows(args.contacts)
    print(
        f"generated {len(contacts):,} contacts, {len(phones):,} numbers in {time.perf_counter() - t0:.1f} s"
    )
    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    try:
        sqlite_path = tmp / "sqlite" / "callbridge.db"
        sqlite_path.parent.mkdir()
        await bench_backend(
            "SQLite",
            f"sqlite+aiosqlite:///{sqlite_path}",
            sqlite_path.parent,
            contacts,
            phones,
            sample,
            sqlite_path,
            args.seconds,
        )
        if args.postgres:
            pg_dir = tmp / "pg"
            pg_dir.mkdir()
            await bench_backend(
                "PostgreSQL", args.postgres, pg_dir, contacts, phones, sample, None, args.seconds
            )
            for concurrency in (1, 8, 0):
                rate = await ingest_rate(pg_dir, args.postgres, args.calls, concurrency)
                how = (
                    "50 calls at a time interleaved, through the batching sink links use"
                    if concurrency == 0
                    else f"{concurrency} concurrent call(s), one transaction per event"
                )
                print(
                    f"ingest into PostgreSQL: {rate:,.0f} completed calls/s ({rate * 4:,.0f} events/s), {how}"
                )
        else:
            print(
                "\n(PostgreSQL skipped: pass --postgres postgresql+asyncpg://… "
                "or CALLBRIDGE_BENCH_POSTGRES_URL)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
