"""Wallboard latency: from the moment the AMI simulator writes a queue event to the moment a
wallboard's WebSocket client receives the snapshot that shows it.

The hub runs as its own process (``callbridge serve``, SQLite, embedded Asterisk link), exactly
as deployed; the simulator and the wallboard clients (signed-in managers' screens) run in this
process, so both timestamps come from one monotonic clock. The PBX sends a steady mix of queue
events at the given rate: callers joining and abandoning (call-log writes) and members paused
and unpaused. Each pause carries a reason of its own, so the first snapshot showing it is
known: those are the events measured. Loopback only; each rate runs for a bounded time.

    python bench/wallboard.py                    # 50 queue events/s for 10 s, 3 wallboards
    python bench/wallboard.py --rates 50 100 --seconds 5
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
from callbridge.domain.users import Role
from callbridge.pbx.asterisk.simulator import AmiSimulator, SimChannel

GOAL_P99_MS = 100.0
MEMBERS = 20


class TimedSimulator(AmiSimulator):
    """Notes when each pause (by its reason) is written to the AMI socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent_at: dict[str, float] = {}

    def emit(self, name: str, body: Any, privilege: str = "call") -> None:
        super().emit(name, body, privilege)
        if name == "QueueMemberPause":
            fields = dict(body)
            if fields.get("Paused") == "1":
                self.sent_at.setdefault(fields.get("PausedReason", ""), time.monotonic())


class Screens:
    """Wallboard WebSocket clients; each notes when it first sees each pause reason."""

    def __init__(self) -> None:
        self.seen_at: list[dict[str, float]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, ws_url: str, cookie: str) -> None:
        ws = await websockets.connect(ws_url, additional_headers={"Cookie": cookie}, max_queue=None)
        first = json.loads(await ws.recv())
        assert first["type"] == "wallboard", first
        seen: dict[str, float] = {}
        self.seen_at.append(seen)
        self._tasks.append(asyncio.create_task(self._read(ws, seen)))

    async def _read(self, ws: Any, seen: dict[str, float]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                data = json.loads(raw)
                for msg in data if isinstance(data, list) else [data]:
                    for agent in msg.get("agent_list", ()):
                        reason = agent.get("reason")
                        if reason:
                            seen.setdefault(reason, now)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_rate(
    sim: TimedSimulator, screens: Screens, rate: float, seconds: float, tag: str
) -> list[float]:
    """``rate`` queue events per second for ``seconds``: a quarter each of joins, abandons,
    pauses and unpauses (of a member paused half a round of members earlier, so each pause
    stays on the board long enough to be seen). Returns the pause → screen latencies in ms
    (every screen counts)."""
    sim.sent_at.clear()
    for seen in screens.seen_at:
        seen.clear()
    waiting: list[SimChannel] = []
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        k = (i // 4) % MEMBERS
        step, member = i % 4, f"30{k:02d}"
        if step == 0:
            waiting.append(sim.queue_join("sales", f"+1415555{i % 10000:04d}"))
        elif step == 1:
            sim.pause_member("sales", member, True, f"{tag}-{i}")
        elif step == 2 and waiting:
            sim.queue_abandon(waiting.pop(0), "sales", held=1)
        else:
            sim.pause_member("sales", f"30{(k + MEMBERS // 2) % MEMBERS:02d}", False)
    await asyncio.sleep(1.5)  # the last snapshots
    for caller in waiting:
        sim.queue_abandon(caller, "sales", held=1)
    latencies: list[float] = []
    missing = 0
    for reason, t0 in sim.sent_at.items():
        for seen in screens.seen_at:
            t1 = seen.get(reason)
            if t1 is None:
                missing += 1
            else:
                latencies.append((t1 - t0) * 1000)
    print(
        f"  {n} queue events in {seconds:.0f} s; {len(sim.sent_at)} pauses measured on "
        f"{len(screens.seen_at)} screens: {len(latencies)} seen, {missing} missing"
    )
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--screens", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
        data_dir = Path(tmp)
        sim = TimedSimulator(username="hub", secret=SECRET)
        for m in range(MEMBERS):
            sim.add_queue_member("sales", f"30{m:02d}")
        await sim.start()
        await seed(data_dir, sim.port, users=args.screens, role=Role.MANAGER, prefix="m", extensions=False)
        port = free_port()
        env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "CALLBRIDGE_LOG_LEVEL": "WARNING"}
        hub = start_hub(data_dir, port, env)
        url = f"http://127.0.0.1:{port}"
        screens = Screens()
        try:
            await wait_ready(url, sim)
            ws_url = url.replace("http://", "ws://") + "/live/wallboard"
            for i in range(args.screens):
                await screens.open(ws_url, await sign_in(url, f"m{i}"))
            print(
                "wallboard latency: AMI queue event written → snapshot showing it received by a"
                " wallboard WebSocket\n"
                f"hub: separate process, SQLite, embedded AMI link; {args.screens} wallboards connected; "
                f"{MEMBERS} queue members; loopback; Python {sys.version.split()[0]}"
            )
            gc.collect()
            gc.freeze()
            await run_rate(sim, screens, 10, 1, "warm")
            for rate in args.rates:
                print(f"rate {rate:.0f} queue events/s for {args.seconds:.0f} s:")
                values = await run_rate(sim, screens, rate, args.seconds, f"r{rate:.0f}")
                if not values:
                    print("  nothing measured")
                    continue
                p50, p99 = pct(values, 50), pct(values, 99)
                verdict = "meets" if p99 <= GOAL_P99_MS else "misses"
                print(
                    f"  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(values):6.1f} ms   "
                    f"mean {statistics.fmean(values):6.1f} ms   "
                    f"({verdict} the goal p99 <= {GOAL_P99_MS:.0f} ms)"
                )
            print(
                "peer: OdooPBX and the Yeastar ERPNext app have no wallboard (reference/odoopbx.md,\n"
                "  reference/yeastar_frappe.md: queue statistics are listed as future); a call centre\n"
                "  buys a separate product for it. No figure is published to compare with: no ratio."
            )
        finally:
            await screens.close()
            hub.terminate()
            try:
                hub.wait(10)
            except subprocess.TimeoutExpired:
                hub.kill()
            await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
