"""ERP connectors: first directory sync of 100,000 ERPNext contacts, and hang-up → Call Log.

1. A Frappe site simulator (callbridge.crm.frappe_simulator) runs in its own process on
   loopback with N Contacts (default 100,000; one or two numbers each, most linked to one of
   N/20 Customers). A hub on SQLite (in a temporary data dir, through the real migrations)
   makes its first full sync through the ERPNext connector: wall time and this process's peak
   RSS (the simulator's memory is not counted: it is another process).
   Goals: <= 60 s and <= 200 MB.
2. Calls at a steady rate (default 20 calls/s for 30 s): each starts, rings, is answered and
   hangs up 2 s later; the pusher writes each into the simulator's Call Log. Latency from the
   moment the hang-up is handed to the hub until the simulator has stored the Call Log with its
   final status (both clocks are this machine's). Goal: p99 <= 2 s.

The peers (the Frappe/ERPNext telephony apps) have no directory sync: they query the ERP live.
Run: .venv/bin/python bench/connectors.py [--contacts N] [--rate 20] [--seconds 30]
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from callbridge.config import Settings
from callbridge.domain.connectors import ConnectorKind
from callbridge.domain.events import CallAnswered, CallEnded, CallRinging, CallStarted, Direction, Disposition
from callbridge.hub import Hub
from callbridge.services.pipeline import BatchingSink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(port: int, contacts: int) -> subprocess.Popen[str]:
    """The Frappe site simulator in its own process (its memory is not ours)."""
    command = [sys.executable, "-m", "callbridge.crm.frappe_simulator", "--port", str(port)]
    return subprocess.Popen([*command, "--contacts", str(contacts)], stdout=subprocess.PIPE, text=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    sim = start_simulator(port, args.contacts)
    base = f"http://127.0.0.1:{port}"
    try:
        assert sim.stdout is not None
        started = time.monotonic()
        line = await asyncio.to_thread(sim.stdout.readline)
        if "ready" not in line:
            raise SystemExit(f"the simulator did not start: {line!r}")
        print(f"simulator: {args.contacts:,} contacts ready in {time.monotonic() - started:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                start_pbx_links=False,
                start_connectors=False,
                default_region="US",
                public_url="https://hub.example.com",
            )
            hub = Hub.build(settings)
            await hub.prepare()
            # As `callbridge serve` does once started (web/app.py): what start-up built stays out
            # of the collector's full passes.
            gc.collect()
            gc.freeze()
            assert hub.connectors is not None
            async with hub.db.unit() as repos:
                await repos.connectors.add(
                    "erp",
                    ConnectorKind.ERPNEXT,
                    base,
                    {},
                    {"api_key": "bench-key", "api_secret": "bench-secret"},
                )
            before = peak_rss_mb()
            t0 = time.monotonic()
            report = await hub.connectors.sync("erp")
            took = time.monotonic() - t0
            peak = peak_rss_mb()
            print(f"first full sync: {report.summary()}")
            print(f"  time      : {took:>8.1f} s     (goal <= 60 s)")
            print(f"  peak RSS  : {peak:>8.0f} MB    (goal <= 200 MB; {before:.0f} MB before the sync)")
            print(f"  records/s : {report.read / took:>8,.0f}")
            print("peers (Frappe/ERPNext telephony apps): no directory sync; they query the ERP per call")

            latencies = await calls(hub, base, args.rate, args.seconds)
            await hub.close()
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"hang-up -> Call Log stored, {len(latencies):,} calls at {args.rate:g} calls/s"
            f" for {args.seconds:g} s:"
        )
        print(f"  p50       : {p50 * 1000:>8.0f} ms")
        print(f"  p99       : {p99 * 1000:>8.0f} ms   (goal <= 2000 ms)")
        print(f"  max       : {latencies[-1] * 1000:>8.0f} ms")
    finally:
        sim.terminate()
        sim.wait(10)


async def calls(hub: Hub, base: str, rate: float, seconds: float) -> list[float]:
    assert hub.connectors is not None
    hub.connectors.pusher.start()
    hung_up: dict[str, float] = {}
    count = int(rate * seconds)
    t0 = time.monotonic()

    # Events go through the sink a PBX link feeds (one consumer, batches): as in production.
    sink = BatchingSink(hub.handle_events)

    async def one(n: int) -> None:
        call_id = f"bench-{n}"
        number = f"+1415{200 + (n * 7919) % 10:03d}{(n * 7919) % 10000:04d}"
        at = datetime.now(UTC)
        await sink(
            CallStarted(
                pbx="main",
                call_id=call_id,
                at=at,
                direction=Direction.INBOUND,
                from_number=number,
                to_number="100",
            )
        )
        await sink(CallRinging(pbx="main", call_id=call_id, at=at, extension="100"))
        await sink(CallAnswered(pbx="main", call_id=call_id, at=at + timedelta(seconds=1), extension="100"))
        await asyncio.sleep(2)
        hung_up[call_id] = time.time()
        await sink(
            CallEnded(
                pbx="main",
                call_id=call_id,
                at=datetime.now(UTC),
                disposition=Disposition.ANSWERED,
                answered_by="100",
            )
        )

    tasks = []
    for n in range(count):
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    await sink.close()
    # Wait until every call is stored as completed (or 30 s).
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": "token bench-key:bench-secret"}
    ) as c:
        deadline = time.monotonic() + 30
        while True:
            times = (await c.get("/api/method/callbridge.simulator.call_log_times")).json()["message"]
            done = {name: at for name, status, at in times if status == "Completed"}
            if len(done) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    async with hub.db.unit() as repos:
        ids = {
            row.pbx_call_id: row.id
            for row in (await repos.session.execute(text("SELECT id, pbx_call_id FROM calls"))).all()
        }
    out = []
    for call_id, wall in hung_up.items():
        stored = done.get(f"callbridge-{ids[call_id]}")
        out.append((stored - wall) if stored is not None else 30.0)
    missing = sum(1 for call_id in hung_up if f"callbridge-{ids[call_id]}" not in done)
    if missing:
        print(f"  {missing} calls not stored as completed within 30 s (counted as 30 s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
