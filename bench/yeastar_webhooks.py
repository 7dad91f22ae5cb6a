"""Signed Yeastar webhooks: requests/s the hub accepts and p99 ack latency, beside a bare
Starlette endpoint, same machine, same run, same HTTP client and concurrency.

Each server runs in its own process (uvicorn, 127.0.0.1, ephemeral port, access log off); the
load generator runs here. Every worker plays whole calls in order — 30011 ring, 30011 answer,
30011 hang-up ×2, 30012 CDR — signed with ``X-Signature`` exactly as a P-Series sends them, so
the hub verifies, persists and logs real calls. The request count is bounded.

    python bench/yeastar_webhooks.py [--requests 5000] [--concurrency 8] [--database-url URL]

Goal (issue 4): hub p99 ack ≤ 5 ms and ≥ 50 % of the bare endpoint's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SECRET = "Pugghh14VCb05rtG7WGumbD4hwJPbnch"
SN = "3631A2124BNCH"


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


async def serve_hub(database_url: str, ack_only: bool = False) -> None:
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
    data = Path(tempfile.mkdtemp(prefix="cb-bench-"))
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
    print(f"READY {port} /webhooks/yeastar/{record.webhook_key}", flush=True)
    await server_task


# ----------------------------------------------------------------------------- load
@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(name: str, url: str, calls: list[list[bytes]], concurrency: int) -> Result:
    from callbridge.pbx.yeastar.webhooks import sign

    signed = [[(body, sign(body, SECRET)) for body in call] for call in calls]
    latencies: list[float] = []
    errors = 0
    next_call = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=nodelay)
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:

        async def worker() -> None:
            nonlocal next_call, errors
            while next_call < len(signed):
                call = signed[next_call]
                next_call += 1
                for body, signature in call:  # one call's events in order, as the PBX sends them
                    headers = {
                        "content-type": "application/json",
                        "user-agent": "Yeastar-Webhook",
                        "x-signature": signature,
                    }
                    t0 = time.perf_counter()
                    answer = await http.post(url, content=body, headers=headers)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if answer.status_code != 200:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(name, len(latencies), elapsed, latencies, errors)


class Server:
    def __init__(self, kind: str, database_url: str, ack_only: bool = False) -> None:
        cmd = [sys.executable, __file__, "--serve", kind, "--database-url", database_url]
        if ack_only:
            cmd.append("--ack-only")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.stop()
            raise SystemExit(f"{kind} server did not start")
        self.url = f"http://127.0.0.1:{line[1]}{line[2]}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def bench(kind: str, args: argparse.Namespace, offset: int) -> Result:
    server = Server(kind, args.database_url, args.ack_only)
    try:
        per_call = 5
        warm = [call_bodies(offset + i) for i in range(max(1, args.warmup // per_call))]
        await load(kind, server.url, warm, args.concurrency)
        n_calls = max(1, args.requests // per_call)
        calls = [call_bodies(offset + 100_000 + i) for i in range(n_calls)]
        return await load(kind, server.url, calls, args.concurrency)
    finally:
        server.stop()


def report(r: Result) -> str:
    return (
        f"{r.name:<6} {r.requests:>6} requests in {r.seconds:6.2f} s  {r.rate:8.0f} req/s  "
        f"p50 {r.pct(0.50):6.2f} ms  p99 {r.pct(0.99):6.2f} ms  non-200: {r.errors}"
    )


async def run(args: argparse.Namespace) -> int:
    bare = await bench("bare", args, 0)
    hub = await bench("hub", args, 1_000_000)
    ratio = hub.rate / bare.rate
    print(
        f"yeastar webhooks: {args.requests} signed requests (30011/30012), concurrency "
        f"{args.concurrency}, loopback, database {'SQLite' if not args.database_url else 'given URL'}"
    )
    print(report(bare))
    print(report(hub))
    p99 = hub.pct(0.99)
    print(
        f"hub/bare rate: {ratio:.2f}  (goal ≥ 0.50: {'met' if ratio >= 0.5 else 'MISSED'});  "
        f"hub p99 ack {p99:.2f} ms  (goal ≤ 5 ms: {'met' if p99 <= 5.0 else 'MISSED'})"
    )
    return 0 if bare.errors == 0 and hub.errors == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="measured requests per server")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default="", help="hub database (default: SQLite in a temp dir)")
    parser.add_argument(
        "--ack-only", action="store_true", help="hub: store webhooks but do not ingest them (ack path alone)"
    )
    parser.add_argument("--serve", choices=("bare", "hub"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # As `callbridge serve` runs (uvicorn picks uvloop when it is installed).
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(serve_bare() if args.serve == "bare" else serve_hub(args.database_url, args.ack_only))
    else:
        raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
