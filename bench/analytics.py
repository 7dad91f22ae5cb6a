"""Analytics over a big call log: a year of calls grouped by day and by agent, read from the
rollups (what ``GET /api/v1/analytics/calls`` does) beside the same figures as a plain
``GROUP BY`` over the call table — on PostgreSQL and SQLite.

1. a fresh database (SQLite file in a temp dir; PostgreSQL: a throwaway server started like
   ``scripts/test.sh`` does, or ``--pg-url``), migrated to head;
2. ``--calls`` generated calls over one year (``--agents`` agents, business hours, 70 % inbound,
   outcomes mixed), each with its agent in ``call_users``, inserted with one
   ``INSERT … SELECT`` over ``generate_series`` (PostgreSQL) or a recursive CTE (SQLite);
3. the rollups of those calls, filled with ``INSERT … SELECT … GROUP BY`` (the rows ingest keeps,
   without callbacks), checked against the plain query: the same offered/answered per day;
4. p50/p99 of the year grouped by day (UTC, Europe/Berlin, Asia/Kolkata) and by user, through
   the service the API uses, beside the plain ``GROUP BY`` (fewer runs: it is slow), as a ratio.

Goal (issue #15): p99 ≤ 200 ms on PostgreSQL and ≤ 500 ms on SQLite for 10,000,000 calls.
Run: .venv/bin/python bench/analytics.py [--calls 10000000] [--agents 40] [--db postgres|sqlite|both]
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from callbridge.domain.analytics import DAY, HOUR, QUARTER, RING_BOUNDS
from callbridge.domain.users import Role, User
from callbridge.services.analytics import parse_query, report
from callbridge.store.analytics import HISTOGRAM_COLUMNS, SqlRollups
from callbridge.store.migrate import upgrade

GOALS_MS = {"postgresql": 200.0, "sqlite": 500.0}
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
EPOCH0 = int(YEAR_START.timestamp())
ADMIN = User(id=1, name="admin", role=Role.ADMIN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server in a temp dir on loopback, as scripts/test.sh starts one."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not found:
            raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql; pass --pg-url")
        self.bin = found[-1]
        self.dir = tempfile.mkdtemp(prefix="cb-bench-pg.")
        os.chmod(self.dir, 0o755)
        self.port = _free_port()
        self.root = os.getuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres")

    def _run(self, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if self.root else list(args)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self._run(f"{self.bin}/initdb", "-D", f"{self.dir}/pg", "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c shared_buffers=256MB "
            "-c max_wal_size=4GB -c work_mem=64MB"
        )
        self._run(
            f"{self.bin}/pg_ctl",
            "-D",
            f"{self.dir}/pg",
            "-l",
            f"{self.dir}/pg.log",
            "-w",
            "-o",
            options,
            "start",
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(f"{self.bin}/pg_ctl", "-D", f"{self.dir}/pg", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# A call's fields come from its index g through two multiplicative hashes, so that its day, time
# of day, agent and outcome are independent of each other (as in a real centre: every agent has
# calls in most quarter hours of most days, which is what makes the rollups big).
_H1 = "((g * 2654435761) % 4294967296)"
_H2 = "((g * 2246822519) % 4294967296)"
DAY_OF = f"({_H1} % 365)"
SECOND_OF = f"(({_H2} / 7) % 43200)"
OUTCOME_OF = f"(({_H2} / 302400) % 20)"


def agent_of(g: str, agents: int) -> str:
    return f"(2 + ((({g} * 2654435761) % 4294967296) / 365) % {agents})"


def _sql(dialect: str, calls: int, agents: int) -> dict[str, str]:
    """The generating statements for ``dialect``. A call's numbers come from its index ``g``."""
    if dialect == "postgresql":
        series = f"(SELECT g FROM generate_series(CAST(1 AS bigint), {calls}) AS g) AS s"
        started = f"to_timestamp({EPOCH0} + {DAY_OF} * 86400 + 28800 + {SECOND_OF})"
        plus = "{t} + make_interval(secs => {s})"
        epoch = "CAST(extract(epoch FROM started_at) AS bigint)"
        concat = "'c' || g"
        now = "now()"
    else:
        series = (
            f"(WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {calls})"
            " SELECT g FROM n) AS s"
        )
        started = (
            f"strftime('%Y-%m-%d %H:%M:%f', {EPOCH0} + {DAY_OF} * 86400 + 28800 + {SECOND_OF}, 'unixepoch')"
        )
        plus = "strftime('%Y-%m-%d %H:%M:%f', {t}, '+' || ({s}) || ' seconds')"
        epoch = "CAST(strftime('%s', started_at) AS INTEGER)"
        concat = "'c' || g"
        now = "CURRENT_TIMESTAMP"
    direction = "CASE WHEN g % 10 < 7 THEN 'inbound' WHEN g % 10 < 9 THEN 'outbound' ELSE 'internal' END"
    outcome = (
        f"CASE WHEN {OUTCOME_OF} < 14 THEN 'answered' WHEN {OUTCOME_OF} < 17 THEN 'missed' "
        f"WHEN {OUTCOME_OF} < 19 THEN 'abandoned' ELSE 'busy' END"
    )
    ring = "(2 + (g * 13) % 40)"
    talk = "(30 + (g * 17) % 600)"
    answered = f"{OUTCOME_OF} < 14"
    insert_calls = (
        "INSERT INTO calls (pbx, pbx_call_id, direction, from_number, to_number, from_name, external_number,"
        " disposition, hangup_side, answered_by_extension, answered_by_user_id, placed_by_extension,"
        " started_at, answered_at, ended_at, ring_seconds, talk_seconds, transferred_to, recording, match,"
        " manual_link, updated_at) "
        f"SELECT 'main', {concat}, {direction}, '+1415555' || (1000 + g % 9000), '100', '',"
        f" '+1415555' || (1000 + g % 9000), {outcome}, 'caller', '', "
        f"CASE WHEN {answered} THEN {agent_of('g', agents)} END, '', {started}, "
        f"CASE WHEN {answered} THEN {plus.format(t=started, s=ring)} END, "
        f"{plus.format(t=started, s=f'{ring} + {talk}')}, {ring},"
        f" CASE WHEN {answered} THEN {talk} ELSE 0 END,"
        f" '', '', 'none', false, {now} FROM {series}"
    )
    insert_members = (
        f"INSERT INTO call_users (call_id, user_id) SELECT id, 2 + (id * 31) % {agents} FROM calls"
    )
    return {"calls": insert_calls, "members": insert_members, "epoch": epoch}


def _rollup_statements(epoch: str) -> list[str]:
    answered = "disposition = 'answered'"
    sums = [
        "count(*)",
        f"sum(CASE WHEN {answered} THEN 1 ELSE 0 END)",
        "sum(CASE WHEN disposition NOT IN ('answered', 'abandoned') THEN 1 ELSE 0 END)",
        "sum(CASE WHEN disposition = 'abandoned' THEN 1 ELSE 0 END)",
        f"sum(CASE WHEN {answered} THEN ring_seconds ELSE 0 END)",
        f"sum(CASE WHEN {answered} THEN talk_seconds ELSE 0 END)",
        "0",
        "0",
    ]
    bounds = (0, *RING_BOUNDS, 1 << 30)
    for i in range(len(HISTOGRAM_COLUMNS)):
        sums.append(
            f"sum(CASE WHEN {answered} AND ring_seconds >= {bounds[i]} AND ring_seconds < {bounds[i + 1]}"
            " THEN 1 ELSE 0 END)"
        )
    columns = (
        "user_id, grain, bucket, direction, pbx, offered, answered, missed, abandoned, ring_seconds,"
        " talk_seconds, callbacks, callback_seconds, " + ", ".join(HISTOGRAM_COLUMNS)
    )
    out = []
    for grain in (QUARTER, HOUR, DAY):
        for who, source in (
            ("0", "calls c"),
            ("user_id", "calls c JOIN call_users m ON m.call_id = c.id"),
        ):
            out.append(
                f"INSERT INTO call_rollups ({columns})"
                f" SELECT {who}, {grain}, e - e % {grain}, direction, pbx, "
                + ", ".join(sums)
                + f" FROM (SELECT c.*, {epoch.replace('started_at', 'c.started_at')} AS e"
                + (", m.user_id" if who != "0" else "")
                + f" FROM {source} WHERE c.disposition IS NOT NULL) AS x"
                + " GROUP BY 1, 2, 3, 4, 5"
            )
    return out


def _plain(dialect: str, by: str) -> str:
    """The same figures straight from the call table (no percentile, no callbacks)."""
    day = (
        "date_trunc('day', started_at AT TIME ZONE 'UTC')"
        if dialect == "postgresql"
        else "substr(started_at, 1, 10)"
    )
    key = day if by == "day" else "m.user_id"
    source = "calls" if by == "day" else "calls JOIN call_users m ON m.call_id = calls.id"
    return (
        f"SELECT {key} AS k, count(*) AS offered,"
        " sum(CASE WHEN disposition = 'answered' THEN 1 ELSE 0 END) AS answered,"
        " sum(CASE WHEN disposition NOT IN ('answered', 'abandoned') THEN 1 ELSE 0 END) AS missed,"
        " sum(CASE WHEN disposition = 'abandoned' THEN 1 ELSE 0 END) AS abandoned,"
        " sum(CASE WHEN disposition = 'answered' THEN ring_seconds ELSE 0 END) AS ring,"
        " sum(CASE WHEN disposition = 'answered' THEN talk_seconds ELSE 0 END) AS talk"
        f" FROM {source} WHERE started_at >= :a AND started_at < :b AND direction = 'inbound'"
        " AND disposition IS NOT NULL GROUP BY 1"
    )


async def _timed(runs: int, work: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    took: list[float] = []
    result: Any = None
    for _ in range(runs):
        t = time.perf_counter()
        result = await work()
        took.append((time.perf_counter() - t) * 1000)
    return took, result


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(url: str, calls: int, agents: int, runs: int, plain_runs: int) -> None:
    await upgrade(url)
    engine = create_async_engine(url)
    dialect = engine.dialect.name
    sql = _sql(dialect, calls, agents)
    print(f"\n== {dialect}: {calls:,} calls, {agents} agents, one year ==")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, name, display_name, role, password_hash, active, session_version,"
                " created_at)"
                " VALUES (:i, :n, '', 'agent', 'x', true, 1, CURRENT_TIMESTAMP)"
            ),
            [{"i": 2 + a, "n": f"agent{a:03d}"} for a in range(agents)],
        )
    t = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(sql["calls"]))
        await conn.execute(text(sql["members"]))
    generated = time.perf_counter() - t
    t = time.perf_counter()
    async with engine.begin() as conn:
        for statement in _rollup_statements(sql["epoch"]):
            await conn.execute(text(statement))
    rolled = time.perf_counter() - t
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
        rows = (await conn.execute(text("SELECT count(*) FROM call_rollups"))).scalar_one()
    print(f"generated the calls in {generated:.0f} s, their rollups ({rows:,} rows) in {rolled:.0f} s")

    start, end = "2025-01-01", "2026-01-01"
    a, b = YEAR_START, datetime(2026, 1, 1, tzinfo=UTC)
    results: list[tuple[str, float, float, float | None]] = []
    async with AsyncSession(engine) as session:
        reader = SqlRollups(session)
        for label, tz, group in (
            ("year by day, UTC", "UTC", "day"),
            ("year by day, Europe/Berlin", "Europe/Berlin", "day"),
            ("year by day, Asia/Kolkata", "Asia/Kolkata", "day"),
            ("year by user", "UTC", "user"),
        ):
            query = parse_query(start, end, tz, group, "", default_zone="UTC")
            took, rep = await _timed(runs, lambda q=query: report(reader, q, ADMIN))
            plain_ms: float | None = None
            if tz == "UTC":
                plain = text(_plain(dialect, group))
                plain_took, plain_rows = await _timed(
                    plain_runs, lambda p=plain: session.execute(p, {"a": a, "b": b})
                )
                plain_ms = _p(plain_took, 0.99)
                got = sorted(int(g["offered"]) for g in rep.groups if g["offered"])
                want = sorted(int(r.offered) for r in plain_rows.all())
                print(f"  {label}: rollups give the same offered per group as the call table: {got == want}")
            results.append((label, _p(took, 0.5), _p(took, 0.99), plain_ms))
    await engine.dispose()
    goal = GOALS_MS[dialect]
    print(
        f"{'query':32} {'p50 ms':>8} {'p99 ms':>8} {'plain GROUP BY p99 ms':>22} {'ratio':>7}"
        f"  goal p99 <= {goal:.0f} ms"
    )
    for label, p50, p99, plain in results:
        ratio = f"{plain / p99:7.1f}x" if plain else "      –"
        plain_text = f"{plain:22.0f}" if plain else f"{'–':>22}"
        print(f"{label:32} {p50:8.1f} {p99:8.1f} {plain_text} {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("CALLBRIDGE_BENCH_POSTGRES_URL", ""))
    parser.add_argument("--runs", type=int, default=100, help="runs of each rollup query")
    parser.add_argument("--plain-runs", type=int, default=3, help="runs of each plain GROUP BY")
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="cb-bench-sqlite.") as tmp:
            asyncio.run(
                bench(
                    f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
                    args.calls,
                    args.agents,
                    args.runs,
                    args.plain_runs,
                )
            )
    if args.db in ("postgres", "both"):
        server = None
        url = args.pg_url
        if not url:
            server = ThrowawayPostgres()
            url = server.start()
        try:
            asyncio.run(bench(url, args.calls, args.agents, args.runs, args.plain_runs))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
