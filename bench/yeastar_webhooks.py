"""Signed Yeastar webhooks: requests/s the hub accepts and its ack latency, beside a bare
Starlette endpoint, same machine, same run, same load generators.

Each server runs in its own process (uvicorn, 127.0.0.1, ephemeral port, access log off). The
bodies are the webhooks of whole calls — 30011 ring, 30011 answer, 30011 hang-up ×2, 30012 CDR —
signed with ``X-Signature`` exactly as a P-Series sends them and pre-serialized, so the hub
verifies, persists, acknowledges and (with its inbox consumer running) logs real calls. A call's
events go out in order: calls are interleaved 64 at a time, so a call's next event is sent long
after its previous one was answered. Two measurements per server:

- **closed loop** (max rate): ``wrk`` keeps ``--concurrency`` keep-alive connections busy for
  ``--requests`` requests (the bare endpoint 4×, to run about as long). Both servers stay up and
  ``--rounds`` rounds alternate bare → hub; the figure is the median round's ratio, so one
  noisy moment on a shared machine decides nothing. Its latencies at
  saturation are mostly queueing.
- **open loop** (ack latency): a raw-asyncio HTTP/1.1 client offers ``--rate`` requests/s on a
  fixed schedule whatever the answers; latency counts from the scheduled send time.

While the hub's round runs, its inbox consumer stands back for the burst (acks first, see
docs/yeastar.md): the bench prints what it ingested meanwhile and how long the drain took after.
For the hub the bench also waits until the inbox is drained and checks every call was logged
right (inbound, answered by extension 2002, ended, recording from the CDR): an ack path that
starved ingest would show there.

    apt-get install -y wrk   # the closed-loop load generator (C, ~no CPU next to the servers)
    python bench/yeastar_webhooks.py [--requests 20000] [--concurrency 8] [--rate 200]
        [--open-requests 2000] [--rounds 3] [--database-url URL] [--ack-only]

Goal (issue 4): hub p99 ack ≤ 5 ms (open loop, at --rate) and ≥ 50 % of the bare endpoint's rate
(closed loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = "Pugghh14VCb05rtG7WGumbD4hwJPbnch"
SN = "3631A2124BNCH"
PER_CALL = 5
INTERLEAVE = 64  # calls in flight at once in the request order (see the module docstring)
# A large P-Series (P570: 1000 concurrent calls) at 3-minute calls starts ~6 calls/s, i.e. a few
# dozen webhooks/s; 200/s is several times that peak.
DEFAULT_RATE = 200.0
BARE_FACTOR = 4  # closed loop: the bare endpoint gets this many times --requests


# ----------------------------------------------------------------------------- bodies
def _envelope(event_type: int, msg: dict[str, object]) -> bytes:
    text = json.dumps(msg, separators=(",", ":"))
    return json.dumps({"type": event_type, "sn": SN, "msg": text}, separators=(",", ":")).encode()


def call_bodies(n: int) -> list[bytes]:
    """The five webhooks of one answered inbound call, as a P-Series pushes them."""
    call_id = f"{1_700_000_000 + n}.{100 + n}"
    caller = f"+1415555{n % 10000:04d}"
    trunk = f"PJSIP/trunk-stc-endpoint-{2 * n:08x}"
    ext = f"PJSIP/2002-{2 * n + 1:08x}"

    def inbound(status: str) -> dict[str, object]:
        return {
            "inbound": {
                "from": caller,
                "to": "6402",
                "trunk_name": "stc",
                "channel_id": trunk,
                "member_status": status,
                "call_path": "",
            }
        }

    def extension(status: str) -> dict[str, object]:
        return {"extension": {"number": "2002", "channel_id": ext, "member_status": status, "call_path": ""}}

    cdr = {
        "call_id": call_id,
        "time_start": "2025-03-01 10:00:00",
        "call_from": caller,
        "call_to": "2002",
        "call_duration": 47,
        "talk_duration": 42,
        "src_trunk_name": "stc",
        "dst_trunk_name": " ",
        "pin_code": " ",
        "status": "ANSWERED",
        "type": "Inbound",
        "recording": f"20250301100000-{call_id}-{caller}-2002-Inbound.wav",
        "did_number": "6402",
        "agent_ring_time": 5,
    }
    return [
        _envelope(30011, {"call_id": call_id, "members": [inbound("ALERT"), extension("RING")]}),
        _envelope(30011, {"call_id": call_id, "members": [inbound("ANSWERED"), extension("ANSWER")]}),
        _envelope(30011, {"call_id": call_id, "members": [inbound("BYE")]}),
        _envelope(30011, {"call_id": call_id, "members": [extension("BYE")]}),
        _envelope(30012, cdr),
    ]


# ----------------------------------------------------------------------------- servers
def _socket() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(app: object, sock: socket.socket, path: str, lifespan: str) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan)  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    if path:  # the hub announces itself once its PBX is configured
        print(f"READY {sock.getsockname()[1]} {path}", flush=True)
    await task


async def serve_bare() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def hook(request: Request) -> Response:
        await request.body()
        return JSONResponse({"errcode": 0, "errmsg": "SUCCESS"})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    await _serve(app, _socket(), "/hook", "off")


async def _answer_stats(hub: Any, pbx: str) -> None:
    """``STATS`` on stdin → ``STATS <inbox not empty: 1 or 0> <calls> <calls that came out right>
    <webhooks the consumer processed> <seconds it stood back for bursts>``."""
    from sqlalchemy import func, select

    from callbridge.store.calls import calls

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() != b"STATS":
            continue
        left = len(await hub.inbox_store().pending(pbx, 1))  # 0 once the consumer is through
        async with hub.db.session() as session:
            logged = await session.scalar(select(func.count()).select_from(calls).where(calls.c.pbx == pbx))
            right = await session.scalar(
                select(func.count())
                .select_from(calls)
                .where(
                    calls.c.pbx == pbx,
                    calls.c.direction == "inbound",
                    calls.c.disposition == "answered",
                    calls.c.answered_by_extension == "2002",
                    calls.c.ended_at.is_not(None),
                    calls.c.recording != "",  # from the CDR, the call's last webhook
                )
            )
        link = hub.supervisor().get(pbx)
        print(f"STATS {left} {logged} {right} {link.inbox_processed} {link.paced_seconds:.3f}", flush=True)


async def serve_hub(database_url: str, data: Path, ack_only: bool = False) -> None:
    import httpx

    from callbridge.config import Settings
    from callbridge.domain.pbx import PbxKind
    from callbridge.hub import Hub
    from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator
    from callbridge.services.pbxes import YeastarSettings, add_pbx
    from callbridge.web.app import create_app

    if ack_only:  # measure the ack path alone: stored bodies stay in the inbox
        from callbridge.pbx.yeastar.link import YeastarLink

        async def idle(self: object, inbox: object, batch: int = 0) -> None:
            await asyncio.Event().wait()

        YeastarLink._process_inbox = idle  # type: ignore[method-assign,assignment]
    # The simulator stands in for the PBX's OpenAPI (the link logs in and keeps its token).
    sim = YeastarSimulator(SimulatorConfig(webhook_secret=SECRET, sn=SN))
    await sim.start()
    settings = Settings(data_dir=data, database_url=database_url, log_level="WARNING")
    hub = Hub.build(settings)
    app = create_app(hub=hub)
    sock = _socket()
    server_task = asyncio.create_task(_serve(app, sock, "", "on"))
    # Wait for the lifespan (migrations) by probing the health endpoint.
    port = sock.getsockname()[1]
    async with httpx.AsyncClient() as http:
        for _ in range(500):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.02)
    async with hub.db.unit() as repos:
        record = await add_pbx(
            repos.pbxes,
            "bench",
            PbxKind.YEASTAR,
            YeastarSettings(
                base_url=sim.base_url,
                client_id=sim.config.client_id,
                client_secret=sim.config.client_secret,
                webhook_secret=SECRET,
            ),
        )
        await repos.commit()
    await hub.start_link(record)
    stats = asyncio.create_task(_answer_stats(hub, record.name))
    print(f"READY {port} /webhooks/yeastar/{record.webhook_key}", flush=True)
    await server_task
    stats.cancel()


class Server:
    def __init__(self, kind: str, database_url: str, ack_only: bool = False) -> None:
        self.kind = kind
        self.data = tempfile.mkdtemp(prefix="cb-bench-yeastar-")  # the hub's files; removed by stop()
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--database-url",
            database_url,
            "--data-dir",
            self.data,
        ]
        if ack_only:
            cmd.append("--ack-only")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.stop()
            raise SystemExit(f"{kind} server did not start")
        self.port = int(line[1])
        self.path = line[2]

    def stats(self) -> tuple[int, int, int]:
        left, logged, right, _, _ = self.consumer_stats()
        return left, logged, right

    def consumer_stats(self) -> tuple[int, int, int, int, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("STATS\n")
        self.proc.stdin.flush()
        _, left, logged, right, processed, paced = self.proc.stdout.readline().split()
        return int(left), int(logged), int(right), int(processed), float(paced)

    def drain(self, timeout: float = 120.0) -> tuple[float, int, int]:
        """Wait until the hub's inbox is empty; returns (seconds waited, calls, calls right)."""
        started = time.perf_counter()
        while True:
            left, logged, right = self.stats()
            waited = time.perf_counter() - started
            if left == 0 or waited > timeout:
                return waited, logged, right
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


# ----------------------------------------------------------------------------- requests
def raw_requests(first_call: int, n_calls: int, port: int, path: str) -> list[bytes]:
    """Whole calls as pre-serialized, signed HTTP/1.1 keep-alive requests, in sending order."""
    from callbridge.pbx.yeastar.webhooks import sign

    out: list[bytes] = []
    for group in range(first_call, first_call + n_calls, INTERLEAVE):
        calls = [call_bodies(n) for n in range(group, min(group + INTERLEAVE, first_call + n_calls))]
        for event in range(PER_CALL):  # event k of every call in the group, then event k+1
            for bodies in calls:
                body = bodies[event]
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Yeastar-Webhook\r\n"
                    f"Content-Type: application/json\r\nX-Signature: {sign(body, SECRET)}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                out.append(head.encode() + body)
    return out


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


# ----------------------------------------------------------------------------- closed loop (wrk)
WRK_SCRIPT = r"""
-- Serves pre-serialized requests in order; stops after the first `limit` answers.
local requests, n, i, answered, limit = {}, 0, 0, 0, 0
non200 = 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  limit = tonumber(args[2])
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local len = tonumber(string.sub(data, pos, nl - 1))
    n = n + 1
    requests[n] = string.sub(data, nl + 1, nl + len)
    pos = nl + 1 + len
  end
end

local primed = false
function request()
  if not primed then  -- wrk calls request() once after init() and throws the answer away
    primed = true
    return requests[1]
  end
  if i == 0 then io.write("START\n"); io.flush() end  -- the bench times START to DONE itself
  -- past the list (requests still in flight when the limit is reached): repeat the last one,
  -- a duplicate the hub drops
  i = math.min(i + 1, n)
  return requests[i]
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
  answered = answered + 1
  if answered == limit then
    io.write("DONE\n"); io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    bad + e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max, 0))
end
"""


def closed_loop(name: str, port: int, requests: list[bytes], concurrency: int, limit: int) -> Result:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: the closed-loop load generator is wrk (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="cb-bench-wrk-") as tmp:
        data, script = Path(tmp, "requests.bin"), Path(tmp, "bench.lua")
        url = f"http://127.0.0.1:{port}/"
        data.write_bytes(b"".join(b"%d\n%s" % (len(r), r) for r in requests))
        script.write_text(WRK_SCRIPT)
        cmd = [wrk, "-t1", f"-c{concurrency}", "-d120s", "--timeout", "10s", "-s", str(script), url]
        cmd += ["--", str(data), str(limit)]
        # wrk runs for its -d duration whatever a script does, so the bench times the run from
        # the script's START to its DONE and then ends wrk with SIGINT (it prints its summary).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        started = finished = 0.0
        for line in proc.stdout:
            if line.startswith("START"):
                started = time.perf_counter()
            elif line.startswith("DONE"):
                finished = time.perf_counter()
                proc.send_signal(signal.SIGINT)
                break
        out = proc.stdout.read()
        proc.wait()
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out, re.M)
    if match is None or not finished:
        raise SystemExit(f"wrk said:\n{out}")
    _, _, errors, p50, p99, worst = (int(g) for g in match.groups())
    return Result(name, limit, finished - started, p50 / 1000, p99 / 1000, worst / 1000, errors)


# ----------------------------------------------------------------------------- open loop (asyncio)
class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; answers matched by future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiting: asyncio.Future[int] | None = None
        self.closed = False  # uvicorn closes keep-alive connections idle for 5 s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", self.buffer[:end])
        size = end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < size:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[size:]
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError("connection closed"))

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiting


async def _open_loop(name: str, port: int, requests: list[bytes], rate: float) -> Result:
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        return conn

    for _ in range(8):
        idle.append(await connect())
    latencies: list[float] = []
    errors = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal errors
        # A busy server gets a new connection rather than a delayed request, as a PBX would push.
        while idle and idle[-1].closed:
            idle.pop()
        conn = idle.pop() if idle else await connect()
        try:
            status = await conn.send(request)
        except ConnectionError:
            errors += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)  # from the scheduled send time
        errors += status != 200
        idle.append(conn)

    tasks = []
    started = time.perf_counter()
    for i, request in enumerate(requests):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return Result(name, len(latencies), elapsed, pct(0.5), pct(0.99), ordered[-1], errors)


def open_loop(name: str, port: int, requests: list[bytes], rate: float) -> Result:
    try:
        import uvloop

        return uvloop.run(_open_loop(name, port, requests, rate))
    except ImportError:
        return asyncio.run(_open_loop(name, port, requests, rate))


# ----------------------------------------------------------------------------- run
@dataclass
class Round:
    """One closed-loop round: the bare endpoint, then the hub, on the same machine minutes apart."""

    bare: Result
    hub: Result
    ingested_during: int = 0  # hub: webhooks the consumer processed while the hub's loop ran
    paced_s: float = 0.0  # hub: how long the consumer stood back for the burst meanwhile
    drain_s: float = 0.0  # hub: inbox drained this long after the loop's last ack

    @property
    def ratio(self) -> float:
        return self.hub.rate / self.bare.rate


@dataclass
class Figures:
    rounds: list[Round]
    bare_open: Result
    hub_open: Result
    calls_sent: int = 0
    calls_logged: int = 0
    calls_right: int = 0

    @property
    def ratio(self) -> float:
        """The median round's ratio: one noisy moment on a shared machine decides nothing."""
        return statistics.median(r.ratio for r in self.rounds)


def bench(args: argparse.Namespace) -> Figures:
    """Both servers up; closed-loop rounds alternate bare → hub (the hub's inbox drained before
    the next round, so its ingest never runs beside the bare endpoint); then the open loops."""
    bare = Server("bare", args.database_url)
    hub = Server("hub", args.database_url, args.ack_only)
    drains = not args.ack_only
    try:
        warm_calls = max(1, args.warmup // PER_CALL)
        hub_calls = max(1, args.requests // PER_CALL)
        open_calls = max(1, args.open_requests // PER_CALL)
        # The bare endpoint is several times faster: more requests give it a run about as long
        # as the hub's (a fraction of a second would be mostly noise on a shared machine).
        bare_closed = raw_requests(0, hub_calls * BARE_FACTOR, bare.port, bare.path)
        for server in (bare, hub):
            warm = raw_requests(0, warm_calls, server.port, server.path)
            closed_loop(server.kind, server.port, warm, args.concurrency, len(warm))
        next_call = warm_calls
        if drains:
            hub.drain()
        rounds = []
        for _ in range(args.rounds):
            bare_result = closed_loop("bare", bare.port, bare_closed, args.concurrency, len(bare_closed))
            requests = raw_requests(next_call, hub_calls, hub.port, hub.path)
            next_call += hub_calls
            before = hub.consumer_stats() if drains else None
            hub_result = closed_loop("hub", hub.port, requests, args.concurrency, len(requests))
            this = Round(bare_result, hub_result)
            if before is not None:
                after = hub.consumer_stats()
                this.ingested_during = after[3] - before[3]
                this.paced_s = after[4] - before[4]
                this.drain_s = hub.drain()[0]
            rounds.append(this)
        bare_open = open_loop("bare", bare.port, raw_requests(0, open_calls, bare.port, bare.path), args.rate)
        hub_open = open_loop(
            "hub", hub.port, raw_requests(next_call, open_calls, hub.port, hub.path), args.rate
        )
        figures = Figures(rounds, bare_open, hub_open)
        if drains:
            _, figures.calls_logged, figures.calls_right = hub.drain()
            figures.calls_sent = next_call + open_calls
        return figures
    finally:
        bare.stop()
        hub.stop()


def report(r: Result, how: str) -> str:
    return (
        f"  {r.name:<4} {how:<6} {r.requests:>6} requests in {r.seconds:6.2f} s  {r.rate:7.0f} req/s  "
        f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  max {r.max_ms:7.2f} ms  non-200: {r.errors}"
    )


def run(args: argparse.Namespace) -> int:
    figures = bench(args)
    database = "SQLite" if not args.database_url else "given URL"
    print(
        f"yeastar webhooks: signed 30011/30012 requests, loopback, hub database {database}"
        f"{', ack only (inbox consumer stopped)' if args.ack_only else ', inbox consumer running'}"
    )
    print(
        f"closed loop (max rate): wrk, {args.concurrency} keep-alive connections, {args.rounds} rounds of "
        f"bare ({BARE_FACTOR * args.requests} requests) then hub ({args.requests} requests)"
    )
    ok = not (figures.bare_open.errors or figures.hub_open.errors)
    for n, r in enumerate(figures.rounds, start=1):
        ok = ok and not (r.bare.errors or r.hub.errors)
        print(f" round {n}: hub/bare {r.ratio:.2f}")
        print(report(r.bare, "closed"))
        print(report(r.hub, "closed"))
        if not args.ack_only:
            print(
                f"        hub ingest during the round: {r.ingested_during} webhooks "
                f"({r.ingested_during / r.hub.seconds:.0f}/s) while the consumer stood back "
                f"{r.paced_s:.2f} s of {r.hub.seconds:.2f} s for the burst (acks first); inbox drained "
                f"{r.drain_s:.2f} s after the last ack "
                f"({r.hub.requests / (r.hub.seconds + r.drain_s):.0f} req/s stored and ingested)"
            )
    print(
        f"open loop (ack latency): {args.rate:.0f} requests/s offered on a fixed schedule "
        f"(several times a large PBX's peak), {args.open_requests} requests"
    )
    print(report(figures.bare_open, "open"))
    print(report(figures.hub_open, "open"))
    if not args.ack_only:
        right = figures.calls_right == figures.calls_sent == figures.calls_logged
        ok = ok and right
        print(
            f"hub calls: logged {figures.calls_logged} of {figures.calls_sent}, {figures.calls_right} "
            f"inbound, answered by 2002, ended, with recording ({'ok' if right else 'WRONG'})"
        )
    ratio = figures.ratio
    p99 = figures.hub_open.p99_ms
    rounds = ", ".join(f"{r.ratio:.2f}" for r in figures.rounds)
    print(
        f"hub/bare rate: {ratio:.2f}, median of {len(figures.rounds)} rounds ({rounds})  "
        f"(goal ≥ 0.50: {'met' if ratio >= 0.5 else 'MISSED'});  "
        f"hub p99 ack at {args.rate:.0f}/s {p99:.2f} ms  (goal ≤ 5 ms: {'met' if p99 <= 5.0 else 'MISSED'})"
    )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000, help="closed loop: requests per server")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="closed loop: alternating rounds (median)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: connections")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="open loop: requests/s offered")
    parser.add_argument("--open-requests", type=int, default=2000, help="open loop: requests per server")
    parser.add_argument("--database-url", default="", help="hub database (default: SQLite in a temp dir)")
    parser.add_argument(
        "--ack-only", action="store_true", help="hub: store webhooks but do not ingest them (ack path alone)"
    )
    parser.add_argument("--serve", choices=("bare", "hub"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # As `callbridge serve` runs (uvicorn picks uvloop when it is installed).
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(
            serve_bare()
            if args.serve == "bare"
            else serve_hub(args.database_url, Path(args.data_dir), args.ack_only)
        )
    else:
        raise SystemExit(run(args))


if __name__ == "__main__":
    main()
