"""Follow-up latency: from the moment a missed call ends at the PBX (the AMI simulator writes the
call's last Hangup event) to the moment the assignee's WebSocket receives the task it made.

The hub runs as its own process (``callbridge serve``, SQLite, embedded Asterisk link), exactly
as deployed; the simulator and one WebSocket client per user (the "browser side") run in this
process; both timestamps come from this process's monotonic clock. Each missed call comes from a
number of its own, so each makes a task of its own (the worst case: a new task, not a fold).
Loopback only; each rate runs for a bounded time.

    python bench/followup.py                 # 20 missed calls/s for 10 s
    python bench/followup.py --rates 20 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from benchkit import SECRET, free_port, pct, seed, sign_in, start_hub, wait_ready
from callbridge.pbx.asterisk.simulator import AmiSimulator

GOAL_P99_MS = 100.0


class TimedSimulator(AmiSimulator):
    """Notes when each call's last Hangup event is written to the AMI socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ended_at: dict[str, float] = {}

    def emit(self, name: str, body: Any, privilege: str = "call") -> None:
        super().emit(name, body, privilege)
        if name == "Hangup":
            self.ended_at[dict(body).get("Linkedid", "")] = time.monotonic()


class Browsers:
    """One WebSocket per user; records when the task for each number first arrives."""

    def __init__(self) -> None:
        self.task_at: dict[str, float] = {}
        self.ended_card_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, ws_url: str, cookie: str) -> None:
        ws = await websockets.connect(ws_url, additional_headers={"Cookie": cookie}, max_queue=None)
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        self._tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                if '"type": "task"' not in raw and '"ended"' not in raw:
                    continue
                data = json.loads(raw)
                for msg in data if isinstance(data, list) else [data]:
                    if msg.get("type") == "task":
                        self.task_at.setdefault(msg["task"]["number"], now)
                    elif msg.get("type") == "card" and msg["card"]["state"] == "ended":
                        self.ended_card_at.setdefault(msg["card"]["pbx_call_id"], now)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_rate(
    sim: TimedSimulator, browsers: Browsers, users: int, rate: float, seconds: float, first: int
) -> tuple[list[float], int]:
    """Place ``rate`` missed calls per second for ``seconds``; returns latencies in ms."""
    free = [str(2000 + i) for i in range(users)]
    placed: dict[str, str] = {}  # number → linkedid
    calls: list[asyncio.Task[None]] = []

    async def one(ext: str, number: str) -> None:
        try:
            placed[number] = await sim.place_call(
                "inbound_missed", caller=number, caller_name="", extension=ext, ring=0.3
            )
        finally:
            free.append(ext)

    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not free:
            continue  # every phone is busy: skip (reported as not placed)
        calls.append(asyncio.create_task(one(free.pop(0), f"+1415{first + i:07d}")))
    await asyncio.gather(*calls)
    await asyncio.sleep(1.0)  # the last tasks
    latencies, cards = [], []
    for number, linkedid in placed.items():
        t0, t1 = sim.ended_at.get(linkedid), browsers.task_at.get(number)
        if t0 is not None and t1 is not None:
            latencies.append((t1 - t0) * 1000)
        t2 = browsers.ended_card_at.get(linkedid)
        if t0 is not None and t2 is not None:
            cards.append((t2 - t0) * 1000)
    print(f"  placed {len(calls)}/{n} missed calls in {seconds:.0f} s; {len(latencies)} tasks received")
    if cards:
        # The same calls' "ended" pop cards ride the same ingest: the pipeline's share of the figure.
        print(
            f"  for scale, the ended pop card of the same calls: p50 {pct(cards, 50):6.1f} ms   "
            f"p99 {pct(cards, 99):6.1f} ms"
        )
    return latencies, n


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
        data_dir = Path(tmp)
        sim = TimedSimulator(username="hub", secret=SECRET, cel=True)
        await sim.start()
        await seed(data_dir, sim.port, users=args.users)
        port = free_port()
        env = {
            **os.environ,
            "CALLBRIDGE_DATA_DIR": str(data_dir),
            "CALLBRIDGE_LOG_LEVEL": "WARNING",
            "CALLBRIDGE_FOLLOWUP_MIN_RING_SECONDS": os.environ.get("BENCH_MIN_RING", "0"),
        }
        hub = start_hub(data_dir, port, env)
        url = f"http://127.0.0.1:{port}"
        browsers = Browsers()
        try:
            await wait_ready(url, sim)
            cookies = await asyncio.gather(*(sign_in(url, f"u{i}") for i in range(args.users)))
            ws_url = url.replace("http://", "ws://") + "/live/ws"
            for cookie in cookies:
                await browsers.open(ws_url, cookie)
            print(
                "follow-up latency: missed call's last AMI Hangup written → its task received by the\n"
                "assignee's WebSocket; hub: separate process, SQLite, embedded AMI link;\n"
                f"{args.users} users connected; loopback; Python {sys.version.split()[0]}"
            )
            gc.collect()
            gc.freeze()
            first = 5_550_000
            await run_rate(sim, browsers, args.users, 5, 1, first)  # warm-up
            first += 1000
            for rate in args.rates:
                print(f"rate {rate:.0f} missed calls/s for {args.seconds:.0f} s:")
                values, n = await run_rate(sim, browsers, args.users, rate, args.seconds, first)
                first += n + 1000
                if not values:
                    print("  no tasks measured")
                    continue
                p50, p99 = pct(values, 50), pct(values, 99)
                verdict = "meets" if p99 <= GOAL_P99_MS else "misses"
                print(
                    f"  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(values):6.1f} ms   "
                    f"mean {statistics.fmean(values):6.1f} ms   "
                    f"(goal p99 <= {GOAL_P99_MS:.0f} ms: {verdict} it)"
                )
            print(
                "peers: OdooPBX asterisk_plus makes no task for a missed call (a notification only) and\n"
                "  the ERPNext Yeastar app none at all: there is no figure to put beside ours."
            )
        finally:
            await browsers.close()
            hub.terminate()
            try:
                hub.wait(10)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
            await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
