"""End to end: simulator AMI → `callbridge agent` → WebSocket → `callbridge serve` hub → PostgreSQL.

Starts its own throwaway PostgreSQL (like scripts/test.sh, on a free port), a hub process and an
agent process, and drives the AMI simulator in this process. Two phases:

* throughput: ``--calls`` whole calls placed as fast as the simulator can, measured from the
  first call placed to the last call's record committed (calls/s; goal >= 500);
* latency: calls at a steady ``--rate`` (calls/s) for ``--seconds``; for each call, the time from
  its AMI hang-up (the simulator's Hangup event) to the moment its ended record is visible in
  PostgreSQL (committed), found by polling every ``--poll-ms`` (p50/p99; goal p99 <= 100 ms).

OdooPBX (the peer) is not run here: its agent forwards ``Hangup`` to Odoo after a configured
delay of 0.75 s (v4 events map), one JSON-RPC call per AMI event, so its hang-up-to-record time is
>= 750 ms by design; it keeps no outbox. That figure is printed beside ours for scale.

Run: .venv/bin/python bench/agent_pipeline.py [--calls 5000] [--rate 500] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from callbridge.pbx.asterisk.simulator import AmiSimulator

SECRET = "bench-ami-secret"
SCENARIOS = ("inbound_answered", "inbound_missed", "outbound_answered", "inbound_busy")
ODOOPBX_HANGUP_DELAY_MS = 750


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        if not bins:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bins[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="cb-bench-pg."))
        self.port = free_port()
        self.root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.root else list(args)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        os.chmod(self.dir, 0o755)
        if self.root:
            shutil.chown(self.dir, "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", f"{self.dir}/pg", "-A", "trust", "-U", "postgres", "--no-sync"
        )
        opts = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            f"{self.dir}/pg",
            "-l",
            f"{self.dir}/pg.log",
            "-w",
            "-o",
            opts,
            "start",
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", f"{self.dir}/pg", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "callbridge", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Watcher:
    """Polls PostgreSQL for the calls placed but not yet seen ended: pbx_call_id → when seen.

    (Not an id watermark: several ingest transactions commit side by side, out of id order.)"""

    def __init__(self, dsn: str, poll: float) -> None:
        self.dsn = dsn
        self.poll = poll
        self.seen: dict[str, float] = {}
        self.pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._loop())

    def expect(self, call_id: str) -> None:
        self.pending.add(call_id)

    async def _loop(self) -> None:
        while True:
            if self.pending:
                rows = await self._conn.fetch(
                    "SELECT pbx_call_id FROM calls WHERE pbx = 'bench' AND pbx_call_id = ANY($1::text[]) "
                    "AND ended_at IS NOT NULL",
                    list(self.pending),
                )
                now = time.perf_counter()
                for row in rows:
                    self.seen[row["pbx_call_id"]] = now
                    self.pending.discard(row["pbx_call_id"])
            # A long pending list (the throughput phase) is polled less often: the poller must
            # not eat the CPU the pipeline is measured on.
            await asyncio.sleep(self.poll if len(self.pending) < 200 else 0.05)

    async def wait_for(self, ids: set[str], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                self._task.result()  # the poller failed: show why
            if ids <= self.seen.keys():
                return True
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._conn.close()


async def place(
    sim: AmiSimulator, watcher: Watcher, n: int, kinds: itertools.cycle[str]
) -> tuple[str, float]:
    call_id = await sim.place_call(next(kinds), caller=f"+1415{n:07d}", extension=f"{1000 + n % 50}")
    at = time.perf_counter()  # the Hangup events were just written to the agent
    watcher.expect(call_id)
    return call_id, at


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cb-bench."))
    pg = Postgres()
    dsn = pg.start()
    hub = agent = None
    sim = AmiSimulator(secret=SECRET, auth_failure_delay=0.1)
    ok = False
    try:
        env = {
            **os.environ,
            "CALLBRIDGE_DATA_DIR": str(work / "hub"),
            "CALLBRIDGE_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
            "CALLBRIDGE_LOG_LEVEL": "WARNING",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        add = [sys.executable, "-m", "callbridge", "pbx", "add", "asterisk", "bench", "--agent"]
        added = await asyncio.to_thread(
            subprocess.run, [*add, "--trunk", "trunk*"], env=env, capture_output=True, text=True, timeout=120
        )
        match = re.search(r"^(cbagent_\S+)$", added.stdout, re.MULTILINE)
        assert match, added.stdout + added.stderr
        port = free_port()
        hub = spawn(["serve", "--port", str(port)], env, work / "hub.log")
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                ready = await asyncio.to_thread(httpx.get, url + "/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        await sim.start()
        config = work / "agent.toml"
        config.write_text(
            f'hub = "{url}"\ntoken = "{match.group(1)}"\noutbox = "{work / "outbox.sqlite3"}"\n'
            'guard_backend = "off"\n'
            f'[ami]\nport = {sim.port}\nusername = "hub"\nsecret = "{SECRET}"\n'
        )
        agent = spawn(
            ["agent", "--config", str(config), "--log-level", "WARNING"], {**os.environ}, work / "agent.log"
        )
        for _ in range(300):
            if sim.sessions and sim.logins:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the hub link comes up beside the AMI link
        watcher = Watcher(dsn, args.poll_ms / 1000)
        await watcher.start()
        kinds = itertools.cycle(SCENARIOS)
        counter = itertools.count()

        # Warm up (connections, caches) and drain.
        warm = {(await place(sim, watcher, next(counter), kinds))[0] for _ in range(200)}
        if not await watcher.wait_for(warm, 60):
            raise SystemExit("warm-up calls never reached the database; see " + str(work))

        # Phase 1: throughput.
        started = time.perf_counter()
        burst: set[str] = set()
        for i in range(args.calls):
            burst.add((await place(sim, watcher, next(counter), kinds))[0])
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the simulator's writes reach the socket
        placed_in = time.perf_counter() - started
        if not await watcher.wait_for(burst, 300):
            raise SystemExit(f"only {len(burst & watcher.seen.keys())} of {len(burst)} calls arrived")
        done = max(watcher.seen[c] for c in burst)
        throughput = len(burst) / (done - started)

        # Phase 2: latency at a steady rate.
        hangups: dict[str, float] = {}
        interval = 1.0 / args.rate
        t0 = time.perf_counter()
        total = int(args.rate * args.seconds)
        for i in range(total):
            target = t0 + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            call_id, at = await place(sim, watcher, next(counter), kinds)
            hangups[call_id] = at
        achieved = total / (time.perf_counter() - t0)
        if not await watcher.wait_for(set(hangups), 120):
            raise SystemExit("latency phase calls did not all arrive")
        latencies = sorted((watcher.seen[c] - at) * 1000 for c, at in hangups.items())
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        await watcher.stop()

        peer = ODOOPBX_HANGUP_DELAY_MS
        print(
            f"pipeline: AMI simulator -> agent -> hub (1 uvicorn worker) -> PostgreSQL {pg.bin.parent.name}"
        )
        took = done - started
        print(f"throughput: {len(burst):,} calls placed in {placed_in:.2f} s, committed after {took:.2f} s")
        print(f"  calls/s end to end      : {throughput:>8,.0f}   (goal >= 500)")
        print(f"latency at {achieved:,.0f} calls/s for {args.seconds:g} s ({len(latencies):,} calls):")
        print(f"  hang-up -> committed p50: {p50:>8.1f} ms   (poll every {args.poll_ms:g} ms)")
        print(f"  hang-up -> committed p99: {p99:>8.1f} ms   (goal <= 100 ms)")
        print(f"  max                     : {latencies[-1]:>8.1f} ms")
        print(f"OdooPBX agent (peer)      : Hangup forwarded after a {peer} ms delay (by design); no outbox")
        ratio = throughput / 500
        print(
            f"ratio                     : p99 {peer / p99:.1f}x under the peer's delay; {ratio:.2f}x the goal"
        )
        ok = True
    finally:
        if agent is not None:
            stop(agent)
        if hub is not None:
            stop(hub)
        await sim.stop()
        pg.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
