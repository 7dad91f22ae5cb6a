"""ERP connectors: first directory sync of 100,000 ERP contacts, and hang-up → call in the ERP.

For each ERP (``--erp erpnext``, ``odoo`` or ``both``, the default):

1. The ERP's simulator (callbridge.crm.frappe_simulator / odoo_simulator) runs in its own
   process on loopback with N contacts (default 100,000; ERPNext: Contacts with one or two
   numbers, most linked to one of N/20 Customers; Odoo: people ``res.partner``, most of one of
   N/20 companies). A hub on SQLite (in a temporary data dir, through the real migrations) makes
   its first full sync through the connector: wall time and this process's peak RSS (the
   simulator's memory is not counted: it is another process). Goals: <= 60 s and <= 200 MB.
2. Calls at a steady rate (default 20 calls/s for 30 s) from numbers of the directory: each
   starts, rings, is answered and hangs up 2 s later; the pusher writes each into the ERP
   (ERPNext: the Call Log, updated as the call goes; Odoo: a note on the partner's chatter when
   the call ends). Latency from the moment the hang-up is handed to the hub until the simulator
   has stored the call with its final status (both clocks are this machine's). Goal: p99 <= 2 s.
   ``--trace``: where the slowest calls spent their time (hang-up stored with its outbox row,
   claimed by the pusher, request sent to the ERP, stored by the ERP).

The peers (the Frappe/ERPNext telephony apps) have no directory sync: they query the ERP live.
Run: .venv/bin/python bench/connectors.py [--erp both] [--contacts N] [--rate 20] [--seconds 30]
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
from typing import Any

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


def start_simulator(erp: str, port: int, contacts: int) -> subprocess.Popen[str]:
    """The ERP's simulator in its own process (its memory is not ours)."""
    module = "callbridge.crm.frappe_simulator" if erp == "erpnext" else "callbridge.crm.odoo_simulator"
    command = [sys.executable, "-m", module, "--port", str(port), "--contacts", str(contacts)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def number(n: int, contacts: int) -> str:
    """The number of a contact both simulators' ``populate`` made (spread over the directory)."""
    k = (n * 7919) % contacts
    return f"+1415{200 + k // 10000:03d}{k % 10000:04d}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


GOAL_P99 = 2.0


async def run(args: argparse.Namespace) -> None:
    erps = ["erpnext", "odoo"] if args.erp == "both" else [args.erp]
    results = []
    for erp in erps:
        results.append((erp, await run_one(erp, args)))
    print(
        f"summary, hang-up -> call in the ERP at {args.rate:g} calls/s"
        f" (goal p99 <= {GOAL_P99 * 1000:.0f} ms):"
    )
    for erp, (p50, p99, worst) in results:
        print(
            f"  {erp:<8} p50 {p50 * 1000:>6.0f} ms   p99 {p99 * 1000:>6.0f} ms   max {worst * 1000:>6.0f} ms"
            f"   p99/goal = {p99 / GOAL_P99:.2f}"
        )


async def run_one(erp: str, args: argparse.Namespace) -> tuple[float, float, float]:
    port = free_port()
    sim = start_simulator(erp, port, args.contacts)
    base = f"http://127.0.0.1:{port}"
    try:
        assert sim.stdout is not None
        started = time.monotonic()
        line = await asyncio.to_thread(sim.stdout.readline)
        if "ready" not in line:
            raise SystemExit(f"the simulator did not start: {line!r}")
        print(f"{erp} simulator: {args.contacts:,} contacts ready in {time.monotonic() - started:.1f} s")
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
                if erp == "erpnext":
                    secrets = {"api_key": "bench-key", "api_secret": "bench-secret"}
                    await repos.connectors.add("erp", ConnectorKind.ERPNEXT, base, {}, secrets)
                else:
                    config = {"database": "odoo", "username": "bench@example.com"}
                    await repos.connectors.add(
                        "erp", ConnectorKind.ODOO, base, config, {"api_key": "bench-key"}
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

            trace = Trace(hub) if args.trace else None
            latencies = await calls(hub, erp, base, args.rate, args.seconds, args.contacts, trace)
            await hub.close()
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        what = "Call Log stored" if erp == "erpnext" else "chatter note posted"
        print(f"hang-up -> {what}, {len(latencies):,} calls at {args.rate:g} calls/s for {args.seconds:g} s:")
        print(f"  p50       : {p50 * 1000:>8.0f} ms")
        print(
            f"  p99       : {p99 * 1000:>8.0f} ms   (goal <= {GOAL_P99 * 1000:.0f} ms;"
            f" p99/goal = {p99 / GOAL_P99:.2f})"
        )
        print(f"  max       : {latencies[-1] * 1000:>8.0f} ms")
        return p50, p99, latencies[-1]
    finally:
        sim.terminate()
        sim.wait(10)


class Trace:
    """Per call: when its hang-up was stored (with its outbox row), claimed by the pusher, sent
    to the ERP. Wraps the hub's own steps (a bench aid; the product is not changed by it)."""

    def __init__(self, hub: Hub) -> None:
        assert hub.connectors is not None
        self.stored: dict[str, float] = {}
        self.claimed: dict[int, float] = {}
        self.sent: dict[int, float] = {}
        handle, connectors = hub.handle_events, hub.connectors
        claim, connector = connectors.claim, connectors.connector
        wrapped: set[int] = set()

        async def handle_events(events: Any) -> None:
            await handle(events)
            for e in events:
                if isinstance(e, CallEnded):
                    self.stored[e.call_id] = time.time()

        async def claimed(at: datetime, limit: int, lease: timedelta) -> Any:
            jobs = await claim(at, limit, lease)
            for job in jobs:
                self.claimed[job.call_id] = time.time()
            return jobs

        async def built(connector_id: int) -> Any:
            built = await connector(connector_id)
            if built is not None and id(built) not in wrapped:
                wrapped.add(id(built))
                push = built.push

                async def sent(call: Any, known: str) -> Any:
                    self.sent[call.call_id] = time.time()
                    return await push(call, known)

                built.push = sent  # type: ignore[method-assign]
            return built

        hub.handle_events = handle_events  # type: ignore[method-assign]
        connectors.claim = claimed  # type: ignore[method-assign]
        connectors.connector = built  # type: ignore[method-assign]

    def show(self, hung_up: dict[str, float], ids: dict[str, int], done: dict[str, float]) -> None:
        slowest = sorted(
            hung_up,
            key=lambda c: done.get(f"callbridge-{ids[c]}", hung_up[c] + 99) - hung_up[c],
            reverse=True,
        )
        print("  slowest calls, seconds after the hang-up: stored+queued / claimed / sent / in the ERP")
        for call_id in slowest[:5]:
            t, db_id = hung_up[call_id], ids[call_id]

            def at(value: float | None, t: float = t) -> str:
                return f"{value - t:6.3f}" if value is not None else "     -"

            print(
                f"    {call_id:<10} {at(self.stored.get(call_id))} / {at(self.claimed.get(db_id))}"
                f" / {at(self.sent.get(db_id))} / {at(done.get(f'callbridge-{db_id}'))}"
            )


async def calls(
    hub: Hub, erp: str, base: str, rate: float, seconds: float, contacts: int, trace: Trace | None = None
) -> list[float]:
    assert hub.connectors is not None
    hub.connectors.pusher.start()
    hung_up: dict[str, float] = {}
    count = int(rate * seconds)
    t0 = time.monotonic()

    # Events go through the sink a PBX link feeds (one consumer, batches): as in production.
    sink = BatchingSink(hub.handle_events)

    async def one(n: int) -> None:
        call_id = f"bench-{n}"
        at = datetime.now(UTC)
        await sink(
            CallStarted(
                pbx="main",
                call_id=call_id,
                at=at,
                direction=Direction.INBOUND,
                from_number=number(n, contacts),
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
    done: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": "token bench-key:bench-secret"}
    ) as c:
        deadline = time.monotonic() + 30
        while True:
            if erp == "erpnext":
                times = (await c.get("/api/method/callbridge.simulator.call_log_times")).json()["message"]
                done = {}
                for name, status, at in times:
                    if status == "Completed":
                        done.setdefault(name, at)
            else:
                times = (await c.get("/callbridge/simulator/message_times")).json()["message"]
                done = {}
                for name, at in times:
                    done.setdefault(name, at)
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
    if trace is not None:
        trace.show(hung_up, ids, done)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--erp", choices=["erpnext", "odoo", "both"], default="both")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--trace", action="store_true", help="where the slowest calls spent their time")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
