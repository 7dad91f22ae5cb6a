"""A Yeastar P-Series simulator for tests and demos: OpenAPI over HTTP, WebSocket events,
signed webhooks, and scripted calls (reference §1.9 fidelity checklist).

Served by uvicorn on 127.0.0.1 (ephemeral port). Drive it from code::

    async with YeastarSimulator(SimulatorConfig(access_ttl=3)) as sim:
        client = YeastarClient(sim.base_url, sim.config.client_id, sim.config.client_secret)
        call_id = await sim.run_scenario("inbound_answered", caller="+14155550100")

Fidelity: always HTTP 200 with ``errcode``; wrong path or method → 10001; missing, expired
or ``Bearer`` token → 10004; no ``User-Agent`` → 40002; 32-character tokens that expire and
rotate on refresh; at most 8 live access tokens (or "a new token revokes the old" mode);
5 failed logins block the IP (70004); events with ``msg`` as a JSON string; webhooks signed
with ``X-Signature`` and retried; WebSocket subscription with ack, ``heartbeat``, idle close,
empty ``topic_list`` clearing the subscription, and a 10004 frame when the token dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import secrets
import socket
import string
import time
import wave
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.pbx.yeastar.webhooks import sign

log = logging.getLogger(__name__)

_ALNUM = string.ascii_letters + string.digits


def _token(length: int = 32) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of silence (what a recording is when a test gives none)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


@dataclass
class SimulatorConfig:
    client_id: str = "UEnH9Dmv6uBJEXsYcag1trNfQThYSIM1"
    client_secret: str = "ZLcXl63S9EtMnYoHUnjbVo6sA8CbSIM1"  # noqa: S105 (simulator default)
    sn: str = "3631A2124SIM"
    access_ttl: float = 1800.0
    refresh_ttl: float = 86400.0
    token_limit: int = 8
    new_token_revokes_old: bool = False
    max_failed_logins: int = 5
    ws_idle_timeout: float = 60.0
    webhook_url: str | None = None
    webhook_secret: str = "Pugghh14VCb05rtG7WGumbD4hwJPISIM"  # noqa: S105 (simulator default)
    webhook_retries: int = 3
    webhook_timeout: float = 5.0
    webhook_duplicates: bool = False  # send every webhook twice, as a flaky network would
    step_delay: float = 0.01
    trunk: str = "stc"
    extensions: tuple[str, ...] = ("2002", "2005", "1005", "703")


@dataclass
class _Member:
    kind: str  # extension / inbound / outbound
    channel_id: str
    status: str
    number: str = ""
    from_: str = ""
    to: str = ""
    trunk: str = ""
    call_path: str = ""

    def wire(self) -> dict[str, Any]:
        if self.kind == "extension":
            body: dict[str, Any] = {"number": self.number}
        else:
            body = {"from": self.from_, "to": self.to, "trunk_name": self.trunk}
        body.update(
            {"channel_id": self.channel_id, "member_status": self.status, "call_path": self.call_path}
        )
        return {self.kind: body}


@dataclass
class _LiveCall:
    call_id: str
    members: dict[str, _Member] = field(default_factory=dict)
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    action: tuple[str, str, str] | None = None  # (kind, channel, number)


@dataclass
class _Issued:
    access_until: float
    refresh: str
    refresh_until: float


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    user_agent: str | None
    has_token: bool


class YeastarSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._access: dict[str, _Issued] = {}
        self._failed_logins = 0
        self.blocked = False
        self._seq = 100
        self._chan = 0x20
        self.calls: dict[str, _LiveCall] = {}
        self.cdrs: list[dict[str, Any]] = []
        self.emitted: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.webhook_attempts = 0
        self.webhook_deliveries = 0
        self._fail_next: dict[str, list[tuple[int, str]]] = {}
        self._subscribers: dict[int, tuple[WebSocket, set[int]]] = {}
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._webhook_queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._webhook_task: asyncio.Task[None] | None = None
        self.next_dial_outcome = "answered"
        self.dial_cdr = True
        self.login_count = 0
        # Recordings' audio by file name; a download path (one per recording/download) → file.
        self.recording_files: dict[str, bytes] = {}
        self._downloads: dict[str, tuple[str, float]] = {}
        self.downloads = 0
        self.fail_downloads = 0  # answer this many downloads with HTTP 503 (a PBX under load)
        self.default_recording: bytes | None = None  # the audio of recordings given none
        # Voicemail: each extension's mailbox (``vm/get`` rows plus the audio), newest last.
        self.mailboxes: dict[str, list[dict[str, Any]]] = {}
        self.voicemail_audio: dict[str, bytes] = {}
        self._vm_seq = 0
        self.vm_hidden_lists = 0  # answer this many ``vm/get`` with an empty mailbox (file not written yet)
        self.app = Starlette(
            routes=[
                WebSocketRoute("/openapi/v1.0/subscribe", self._ws),
                Route("/api/download/{name:path}", self._download, methods=["GET"]),
                Route(
                    "/openapi/{version}/{endpoint:path}", self._api, methods=["GET", "POST", "PUT", "DELETE"]
                ),
            ]
        )

    # ----------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        assert self._sock is not None, "simulator not started"
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/openapi/v1.0/subscribe"

    async def start(self) -> None:
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
        # every keep-alive answer waits ~40 ms for the peer's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="websockets-sansio", ws_ping_interval=None
        )
        self._server = uvicorn.Server(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
            await asyncio.sleep(0.01)
        self._webhook_task = asyncio.create_task(self._webhook_worker())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        for ws, _ in list(self._subscribers.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._serve_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> YeastarSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----------------------------------------------------------------- test controls
    def fail_next(self, endpoint: str, errcode: int, errmsg: str = "", times: int = 1) -> None:
        """Answer the next ``times`` calls to ``endpoint`` with this errcode."""
        self._fail_next.setdefault(endpoint, []).extend([(errcode, errmsg or "SIMULATED")] * times)

    def expire_access_tokens(self) -> None:
        """Every access token dies now (refresh tokens stay valid)."""
        for issued in self._access.values():
            issued.access_until = 0.0

    def live_tokens(self) -> int:
        now = time.monotonic()
        return sum(1 for i in self._access.values() if i.access_until > now)

    def block_ip(self) -> None:
        self.blocked = True

    # ----------------------------------------------------------------- HTTP API
    def _reply(self, errcode: int = 0, errmsg: str = "SUCCESS", **extra: Any) -> JSONResponse:
        return JSONResponse({"errcode": errcode, "errmsg": errmsg, **extra})  # always HTTP 200

    def _token_valid(self, token: str | None) -> bool:
        issued = self._access.get(token or "")
        return issued is not None and issued.access_until > time.monotonic()

    def _issue(self) -> dict[str, Any]:
        now = time.monotonic()
        for tok, issued in list(self._access.items()):
            if issued.access_until <= now and issued.refresh_until <= now:
                del self._access[tok]
        if self.config.new_token_revokes_old:
            self._access.clear()
        access, refresh = _token(), _token()
        self._access[access] = _Issued(now + self.config.access_ttl, refresh, now + self.config.refresh_ttl)
        return {
            "access_token_expire_time": int(self.config.access_ttl) or 1,
            "access_token": access,
            "refresh_token_expire_time": int(self.config.refresh_ttl) or 1,
            "refresh_token": refresh,
        }

    async def _api(self, request: Request) -> Response:
        version = request.path_params["version"]
        endpoint = request.path_params["endpoint"].strip("/")
        ua = request.headers.get("user-agent")
        token = request.query_params.get("access_token")
        self.requests.append(RecordedRequest(request.method, endpoint, ua, bool(token)))
        if self.blocked:
            return self._reply(70004, "ACCOUNT IP BLOCKED")
        if not ua:
            return self._reply(40002, "PARAMETER ERROR", invalid_param_list=[{"field": "User-Agent"}])
        if version != "v1.0":
            return self._reply(10001, "INTERFACE NOT EXISTED")
        handler = _ENDPOINTS.get(endpoint)
        if handler is None or request.method != handler[0]:
            return self._reply(10001, "INTERFACE NOT EXISTED")
        injected = self._fail_next.get(endpoint)
        if injected:
            code, msg = injected.pop(0)
            return self._reply(code, msg)
        body: dict[str, Any] = {}
        if request.method == "POST":
            try:
                raw = await request.json()
            except ValueError:
                return self._reply(40001, "PARAMETER SYNTAX ERROR")
            if not isinstance(raw, dict):
                return self._reply(40001, "PARAMETER SYNTAX ERROR")
            body = raw
        if endpoint not in ("get_token", "refresh_token") and not self._token_valid(token):
            # A Bearer header is ignored by the real PBX, so it ends up here too.
            return self._reply(10004, "TOKEN EXPIRED")
        return await handler[1](self, request, body)

    async def _get_token(self, request: Request, body: dict[str, Any]) -> Response:
        if body.get("username") != self.config.client_id or body.get("password") != self.config.client_secret:
            self._failed_logins += 1
            if self._failed_logins >= self.config.max_failed_logins:
                self.blocked = True
            return self._reply(
                -1, "FAILURE", invalid_param_list=[{"field": "username or password", "value": "error"}]
            )
        self._failed_logins = 0
        if not self.config.new_token_revokes_old and self.live_tokens() >= self.config.token_limit:
            return self._reply(60002, "MAX LIMITATION EXCEEDED")
        self.login_count += 1
        return self._reply(**self._issue())

    async def _refresh_token(self, request: Request, body: dict[str, Any]) -> Response:
        now = time.monotonic()
        refresh = body.get("refresh_token")
        for tok, issued in list(self._access.items()):
            if issued.refresh == refresh and issued.refresh_until > now:
                del self._access[tok]  # refresh rotates both tokens
                return self._reply(**self._issue())
        return self._reply(10004, "TOKEN EXPIRED")

    async def _del_token(self, request: Request, body: dict[str, Any]) -> Response:
        self._access.pop(request.query_params.get("access_token", ""), None)
        return self._reply()

    async def _extension_list(self, request: Request, body: dict[str, Any]) -> Response:
        page = int(request.query_params.get("page", 1))
        size = int(request.query_params.get("page_size", 100))
        rows = [
            {
                "id": i + 1,
                "number": number,
                "caller_id_name": f"Agent {number}",
                "email_addr": f"{number}@example.com",
                "mobile_number": "",
                "presence_status": "available",
                "online_status": {"sip_phone": {"status": 1, "ext_dev_type": "", "status_list": []}},
            }
            for i, number in enumerate(self.config.extensions)
        ]
        return self._reply(total_number=len(rows), data=rows[(page - 1) * size : page * size])

    async def _cdr_list(self, request: Request, body: dict[str, Any]) -> Response:
        rows = [
            {
                "id": str(i + 1),
                "uid": cdr["call_id"],
                "time": cdr["time_start"],
                "call_from": cdr["call_from"],
                "call_to": cdr["call_to"],
                "duration": cdr["call_duration"],
                "ring_duration": cdr["call_duration"] - cdr["talk_duration"],
                "talk_duration": cdr["talk_duration"],
                "disposition": cdr["status"],
                "call_type": cdr["type"],
                "recording": cdr["recording"],
                "src_trunk": cdr["src_trunk_name"],
                "dst_trunk": cdr["dst_trunk_name"],
                "did_number": cdr["did_number"],
            }
            for i, cdr in enumerate(self.cdrs)
        ]
        if request.query_params.get("order_by", "desc") == "desc":
            rows.reverse()
        return self._reply(total_number=len(rows), data=rows)

    def add_recording(self, file: str, audio: bytes) -> None:
        """Give a recording's file name its audio (what the PBX stored for a CDR's ``recording``)."""
        self.recording_files[file] = audio

    async def _recording_download(self, request: Request, body: dict[str, Any]) -> Response:
        file = request.query_params.get("file", "")
        known = any(c["recording"] == file for c in self.cdrs if file) or file in self.recording_files
        if not file or not known:
            return self._reply(60001, "DATA NOT FOUND")
        # As the real PBX: a new download path for each request, valid for 30 minutes, that
        # still needs the access token.
        ext = file.rsplit(".", 1)[-1] if "." in file else "wav"
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        path = f"/api/download/Recording-X.7.0.6-1-download-{stamp}-{_token(16)}.{ext}"
        self._downloads[path] = (file, time.monotonic() + 1800)
        return self._reply(file=file, download_resource_url=path)

    def add_voicemail(
        self, extension: str, caller: str, audio: bytes, *, duration: int = 0, name: str = ""
    ) -> str:
        """Leave a message in ``extension``'s mailbox (as the PBX does when a call goes to
        voicemail); returns its ``msg_id``."""
        self._vm_seq += 1
        msg_id = f"{int(time.time())}-{self._vm_seq:08d}"
        box = self.mailboxes.setdefault(extension, [])
        box.append(
            {
                "msg_id": msg_id,
                "file_name": f"msg{len(box):04d}.wav",
                "is_read": 0,
                "duration": duration,
                "size": len(audio),
                "group_voicemail_read_status": None,
                "name": name,
                "time": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),  # PBX local time
                "number": caller,
            }
        )
        self.voicemail_audio[msg_id] = audio
        return msg_id

    async def _vm_get(self, request: Request, body: dict[str, Any]) -> Response:
        number = request.query_params.get("number", "")
        if not number:
            return self._reply(40002, "PARAMETER ERROR", invalid_param_list=[{"field": "number"}])
        if self.vm_hidden_lists > 0:
            self.vm_hidden_lists -= 1
            return self._reply(total_number=0, data=[])
        try:
            page = max(1, int(request.query_params.get("page", "1")))
            size = max(1, int(request.query_params.get("page_size", "10")))
        except ValueError:
            return self._reply(40001, "PARAMETER SYNTAX ERROR")
        rows = self.mailboxes.get(number, [])
        return self._reply(total_number=len(rows), data=rows[(page - 1) * size : page * size])

    async def _vm_download(self, request: Request, body: dict[str, Any]) -> Response:
        msg_id = request.query_params.get("msg_id", "")
        if not msg_id:
            return self._reply(40002, "PARAMETER ERROR", invalid_param_list=[{"field": "msg_id"}])
        if msg_id not in self.voicemail_audio:
            return self._reply(60001, "DATA NOT FOUND")
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        file = f"PBX-Voicemail-x.15.0.x-download-{stamp}-{_token(16)}.wav"
        path = f"/api/download/{file}"
        self._downloads[path] = (f"vm:{msg_id}", time.monotonic() + 1800)
        return self._reply(file=file, download_resource_url=path)

    async def _download(self, request: Request) -> Response:
        if not self._token_valid(request.query_params.get("access_token")):
            return self._reply(10004, "TOKEN EXPIRED")
        self.downloads += 1
        failing = self.fail_downloads
        if failing:
            self.fail_downloads -= 1
            return Response(b"", status_code=503)
        found = self._downloads.get(request.url.path)
        if found is None or found[1] < time.monotonic():
            return self._reply(60001, "DATA NOT FOUND")
        file = found[0]
        if file.startswith("vm:"):
            message = self.voicemail_audio.get(file[3:])
            if message is None:  # deleted meanwhile
                return self._reply(60001, "DATA NOT FOUND")
            return Response(message, media_type="audio/wav")
        audio = self.recording_files.get(file, self.default_recording)
        if audio is None:
            audio = silent_wav(1.0)
        media = "audio/mpeg" if file.lower().endswith(".mp3") else "audio/wav"
        return Response(audio, media_type=media)

    async def _call_query(self, request: Request, body: dict[str, Any]) -> Response:
        wanted = request.query_params.get("call_id")
        rows = [
            {"call_id": c.call_id, "members": [m.wire() for m in c.members.values()]}
            for c in self.calls.values()
            if not wanted or c.call_id == wanted
        ]
        if not rows:
            return self._reply(60001, "DATA NOT FOUND")
        return self._reply(data=rows)

    async def _call_dial(self, request: Request, body: dict[str, Any]) -> Response:
        caller, callee = str(body.get("caller", "")), str(body.get("callee", ""))
        if not caller or not callee:
            return self._reply(40002, "PARAMETER ERROR", invalid_param_list=[{"field": "caller"}])
        call_id = self._new_call_id()
        outcome = self.next_dial_outcome
        self._spawn(self._api_dial(call_id, caller, callee, outcome, cdr=self.dial_cdr))
        return self._reply(call_id=call_id)

    def _find_channel(self, channel: str) -> _LiveCall | None:
        return next((c for c in self.calls.values() if channel in c.members), None)

    async def _call_action(self, request: Request, body: dict[str, Any]) -> Response:
        endpoint = request.path_params["endpoint"].strip("/")
        channel = str(body.get("channel_id", ""))
        call = self._find_channel(channel)
        if call is None:
            return self._reply(60001, "DATA NOT FOUND")
        action = endpoint.split("/", 1)[1]
        if action in ("hangup", "transfer"):
            kind = str(body.get("type", "blind")) if action == "transfer" else "hangup"
            call.action = (kind, channel, str(body.get("number", "")))
            call.interrupted.set()
        elif action in ("hold", "unhold"):
            call.members[channel].status = "HOLD" if action == "hold" else "ANSWER"
            await self._report(30011, call, [channel])
        return self._reply(call_id=call.call_id)

    # ----------------------------------------------------------------- WebSocket
    async def _ws(self, ws: WebSocket) -> None:
        await ws.accept()
        token = ws.query_params.get("access_token")
        if not self._token_valid(token):
            await ws.send_text(json.dumps({"errcode": 10004, "errmsg": "TOKEN EXPIRED"}))
            await ws.close(code=1008)
            return
        key = id(ws)
        topics: set[int] = set()
        self._subscribers[key] = (ws, topics)
        try:
            while True:
                issued = self._access.get(token or "")
                left = (issued.access_until - time.monotonic()) if issued else 0.0
                if left <= 0:
                    await ws.send_text(json.dumps({"errcode": 10004, "errmsg": "TOKEN EXPIRED"}))
                    await ws.close(code=1008)
                    return
                try:
                    text = await asyncio.wait_for(ws.receive_text(), min(self.config.ws_idle_timeout, left))
                except TimeoutError:
                    if time.monotonic() >= (issued.access_until if issued else 0):
                        continue  # loop reports the dead token
                    await ws.close(code=1000)  # idle: the PBX hangs up silent clients
                    return
                if text == "heartbeat":
                    await ws.send_text("heartbeat response")
                    continue
                try:
                    data = json.loads(text)
                    wanted = data["topic_list"]
                    new_topics = {int(t) for t in wanted}
                except (ValueError, KeyError, TypeError):
                    await ws.send_text(json.dumps({"errcode": 40001, "errmsg": "PARAMETER SYNTAX ERROR"}))
                    continue
                topics.clear()  # an empty list replaces (clears) the subscription
                topics.update(new_topics)
                await ws.send_text(json.dumps({"errcode": 0, "errmsg": "SUCCESS"}))
        except WebSocketDisconnect:
            pass
        finally:
            self._subscribers.pop(key, None)

    # ----------------------------------------------------------------- event output
    async def emit(self, event_type: int, msg: Mapping[str, Any], *, msg_as_object: bool = False) -> None:
        """Publish one event to WebSocket subscribers and the webhook target."""
        envelope = {
            "type": event_type,
            "sn": self.config.sn,
            "msg": dict(msg) if msg_as_object else json.dumps(msg, separators=(",", ":")),
        }
        self.emitted.append({"type": event_type, "msg": dict(msg)})
        text = json.dumps(envelope, separators=(",", ":"))
        for ws, topics in list(self._subscribers.values()):
            if event_type in topics:
                with contextlib.suppress(Exception):
                    await ws.send_text(text)
        if self.config.webhook_url:
            await self._webhook_queue.put(text.encode())
            if self.config.webhook_duplicates:
                await self._webhook_queue.put(text.encode())

    async def _webhook_worker(self) -> None:
        async with httpx.AsyncClient(timeout=self.config.webhook_timeout) as http:
            while True:
                body = await self._webhook_queue.get()
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "Yeastar-Webhook",
                    "X-Signature": sign(body, self.config.webhook_secret),
                }
                for attempt in range(1 + self.config.webhook_retries):
                    self.webhook_attempts += 1
                    try:
                        response = await http.post(
                            self.config.webhook_url or "", content=body, headers=headers
                        )
                        if 200 <= response.status_code < 300:
                            self.webhook_deliveries += 1
                            break
                    except httpx.HTTPError as exc:
                        log.debug("simulator webhook attempt %d failed: %s", attempt + 1, exc)
                    await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
                self._webhook_queue.task_done()

    async def drain(self) -> None:
        """Wait until every scripted call finished and every webhook was attempted."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._webhook_queue.join()

    # ----------------------------------------------------------------- scripted calls
    def _new_call_id(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq}"

    def _channel(self, name: str) -> str:
        self._chan += 1
        return f"PJSIP/{name}-{self._chan:08x}"

    def _ext(self, call: _LiveCall, number: str, status: str, call_path: str = "") -> str:
        ch = self._channel(number)
        call.members[ch] = _Member("extension", ch, status, number=number, call_path=call_path)
        return ch

    def _trunk(self, call: _LiveCall, kind: str, frm: str, to: str, status: str) -> str:
        ch = self._channel(f"trunk-{self.config.trunk}-endpoint")
        call.members[ch] = _Member(kind, ch, status, from_=frm, to=to, trunk=self.config.trunk)
        return ch

    async def _report(self, event_type: int, call: _LiveCall, channels: list[str] | None = None) -> None:
        chosen = [call.members[c] for c in (channels or list(call.members))]
        await self.emit(event_type, {"call_id": call.call_id, "members": [m.wire() for m in chosen]})
        await asyncio.sleep(self.config.step_delay)

    async def _set(self, call: _LiveCall, updates: dict[str, str], event_type: int = 30011) -> None:
        for ch, status in updates.items():
            call.members[ch].status = status
        await self._report(event_type, call, list(updates))

    async def _failed(self, call: _LiveCall, reason: str, channels: list[str] | None) -> None:
        members = None if channels is None else [call.members[c].wire() for c in channels]
        await self.emit(30015, {"call_id": call.call_id, "reason": reason, "members": members})
        await asyncio.sleep(self.config.step_delay)

    async def _cdr(
        self,
        call: _LiveCall,
        *,
        frm: str,
        to: str,
        status: str,
        call_type: str,
        talk: int = 0,
        ring: int = 5,
        src_trunk: str = "",
        dst_trunk: str = "",
        did: str = "",
        start: datetime | None = None,
    ) -> None:
        # PBX local time, as the real one
        start_text = (start or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
        recording = ""
        if status == "ANSWERED":
            stamp = datetime.now().strftime("%Y%m%d%H%M%S")
            recording = f"{stamp}-{call.call_id}-{frm}-{to}-{call_type}.wav"
        cdr = {
            "call_id": call.call_id,
            "time_start": start_text,
            "call_from": frm,
            "call_to": to,
            "call_duration": ring + talk,
            "talk_duration": talk,
            "src_trunk_name": src_trunk or " ",
            "dst_trunk_name": dst_trunk or " ",
            "pin_code": " ",
            "status": status,
            "type": call_type,
            "recording": recording,
            "did_number": did or " ",
            "agent_ring_time": ring if call_type == "Inbound" else 0,
        }
        self.cdrs.append(cdr)
        self.calls.pop(call.call_id, None)
        await self.emit(30012, cdr)

    async def _wait_or_action(self, call: _LiveCall, hold_open: bool) -> tuple[str, str, str] | None:
        if not hold_open:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.interrupted.wait(), 30.0)
        return call.action

    async def run_scenario(self, name: str, **kwargs: Any) -> str:
        """Start a scripted call and wait until its last event was emitted; returns its call_id.

        Scenarios: ``inbound_answered``, ``inbound_missed``, ``inbound_busy``, ``internal``,
        ``inbound_transfer``, ``inbound_queue`` (``outcome`` = answered / abandoned),
        ``outbound`` (an API-style click-to-call; ``outcome`` = answered / no_answer / busy /
        failed / agent_no_answer). With ``hold_open=True`` the answered scenarios wait for
        ``call/hangup`` or ``call/transfer`` through the API.
        """
        script: Callable[..., Awaitable[None]] | None = getattr(self, f"_scenario_{name}", None)
        if script is None:
            raise ValueError(f"unknown scenario {name!r}")
        call_id = self._new_call_id()
        await script(call_id, **kwargs)
        return call_id

    def start_scenario(self, name: str, **kwargs: Any) -> asyncio.Task[str]:
        """Like :meth:`run_scenario` but in the background (for ``hold_open`` calls)."""
        return self._spawn(self.run_scenario(name, **kwargs))

    async def _scenario_inbound_answered(
        self,
        call_id: str,
        caller: str = "+14155550100",
        did: str = "6402",
        extension: str = "2002",
        hangup_by: str = "caller",
        cdr_first: bool = False,
        invite: bool = False,
        hold_open: bool = False,
    ) -> None:
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        if invite:
            await self._report(30016, call, [trunk])
        ext = self._ext(call, extension, "RING")
        await self._report(30011, call)
        await self._set(call, {trunk: "ANSWERED", ext: "ANSWER"})
        action = await self._wait_or_action(call, hold_open)
        if action is not None and action[0] in ("blind", "attended"):
            await self._do_transfer(call, trunk, ext, action[2], action[0], caller, did)
            return
        first, second = (trunk, ext) if hangup_by == "caller" else (ext, trunk)
        if action is not None:
            first, second = (action[1], ext if action[1] == trunk else trunk)
        await self._set(call, {first: "BYE"})
        cdr: dict[str, Any] = {
            "frm": caller,
            "to": extension,
            "status": "ANSWERED",
            "call_type": "Inbound",
            "talk": 42,
        }
        if cdr_first:
            await self._cdr(call, **cdr, src_trunk=self.config.trunk, did=did)
            await self._set(call, {second: "BYE"})
        else:
            await self._set(call, {second: "BYE"})
            await self._cdr(call, **cdr, src_trunk=self.config.trunk, did=did)

    async def _do_transfer(
        self, call: _LiveCall, trunk: str, ext: str, target: str, kind: str, caller: str, did: str
    ) -> None:
        new = self._ext(call, target, "RING")
        call.members[ext].status = "BYE"
        await self._report(30013, call, [trunk, ext, new])
        await self._set(call, {new: "ANSWER"})
        await self._set(call, {trunk: "BYE", new: "BYE"})
        await self._cdr(
            call, frm=caller, to=target, status="ANSWERED", call_type="Inbound", talk=60,
            src_trunk=self.config.trunk, did=did,
        )  # fmt: skip

    async def _scenario_inbound_transfer(
        self,
        call_id: str,
        caller: str = "+14155550100",
        did: str = "6402",
        extension: str = "2002",
        target: str = "2005",
    ) -> None:
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        ext = self._ext(call, extension, "RING")
        await self._report(30011, call)
        await self._set(call, {trunk: "ANSWERED", ext: "ANSWER"})
        await self._do_transfer(call, trunk, ext, target, "blind", caller, did)

    async def _scenario_inbound_missed(
        self,
        call_id: str,
        caller: str = "+14155550100",
        did: str = "6402",
        extension: str = "2002",
        cdr_first: bool = False,
    ) -> None:
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        ext = self._ext(call, extension, "RING")
        await self._report(30011, call)
        await self._set(call, {trunk: "BYE"})  # the caller gives up
        cdr: dict[str, Any] = {
            "frm": caller,
            "to": extension,
            "status": "NO ANSWER",
            "call_type": "Inbound",
            "did": did,
        }
        if cdr_first:
            await self._cdr(call, **cdr, src_trunk=self.config.trunk)
            await self._set(call, {ext: "BYE"})
        else:
            await self._set(call, {ext: "BYE"})
            await self._cdr(call, **cdr, src_trunk=self.config.trunk)

    async def _scenario_inbound_voicemail(
        self,
        call_id: str,
        caller: str = "+14155550100",
        did: str = "6402",
        extension: str = "2002",
        audio: bytes | None = None,
        message_seconds: int = 0,
    ) -> None:
        """Nobody answers; the caller leaves a message in the extension's mailbox."""
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        ext = self._ext(call, extension, "RING")
        await self._report(30011, call)
        await self._set(call, {ext: "BYE"})  # no answer: the PBX's voicemail takes the call
        await self._set(call, {trunk: "ANSWERED"})
        message = audio if audio is not None else silent_wav(float(message_seconds or 1))
        self.add_voicemail(extension, caller, message, duration=message_seconds)
        await self._set(call, {trunk: "BYE"})
        await self._cdr(
            call, frm=caller, to=extension, status="VOICEMAIL", call_type="Inbound",
            talk=message_seconds, src_trunk=self.config.trunk, did=did,
        )  # fmt: skip

    async def _scenario_inbound_busy(
        self, call_id: str, caller: str = "+14155550100", did: str = "6402", extension: str = "2002"
    ) -> None:
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        await self._report(30011, call)
        await self._failed(call, "User Busy", None)
        await self._set(call, {trunk: "BYE"})
        await self._cdr(
            call, frm=caller, to=extension, status="BUSY", call_type="Inbound", ring=0,
            src_trunk=self.config.trunk, did=did,
        )  # fmt: skip

    async def _scenario_inbound_queue(
        self,
        call_id: str,
        caller: str = "+14155550100",
        did: str = "6402",
        queue: str = "6400",
        agents: tuple[str, ...] = ("2002", "2005"),
        outcome: str = "answered",
        wait: int = 12,
        talk: int = 42,
    ) -> None:
        """An inbound call routed to a queue (or an IVR, ring group … : any number on the call's
        path) that rings its ``agents`` together: the first agent answers after ``wait``
        seconds (``outcome="answered"``) or the caller hangs up after ``wait`` seconds while
        they ring (``"abandoned"``). As the PBX reports it: the trunk leg alerts with an empty
        ``call_path``; once the call is in the queue every member's leg (and the caller's)
        carries the queue's number as ``call_path``; the CDR gives the measured times."""
        started = datetime.now()  # PBX local time
        call = self.calls[call_id] = _LiveCall(call_id)
        trunk = self._trunk(call, "inbound", caller, did, "ALERT")
        await self._report(30011, call)
        call.members[trunk].call_path = queue
        legs = [self._ext(call, agent, "RING", call_path=queue) for agent in agents]
        await self._report(30011, call)
        cdr: dict[str, Any] = {"frm": caller, "call_type": "Inbound", "src_trunk": self.config.trunk}
        if outcome == "answered":
            first, others = legs[0], legs[1:]
            await self._set(call, {trunk: "ANSWERED", first: "ANSWER", **dict.fromkeys(others, "BYE")})
            await self._set(call, {trunk: "BYE"})
            await self._set(call, {first: "BYE"})
            cdr.update(to=agents[0], status="ANSWERED", ring=wait, talk=talk)
        elif outcome == "abandoned":
            await self._set(call, {trunk: "BYE"})  # the caller gives up while the agents ring
            await self._set(call, dict.fromkeys(legs, "BYE"))
            cdr.update(to=queue, status="NO ANSWER", ring=wait, talk=0)
        else:
            raise ValueError(f"unknown queue outcome {outcome!r}: answered or abandoned")
        await self._cdr(call, **cdr, did=did, start=started)

    async def _scenario_internal(
        self, call_id: str, caller: str = "2005", callee: str = "2002", answered: bool = True
    ) -> None:
        call = self.calls[call_id] = _LiveCall(call_id)
        a = self._ext(call, caller, "ALERT")
        b = self._ext(call, callee, "RING")
        await self._report(30011, call)
        if answered:
            await self._set(call, {a: "ANSWERED", b: "ANSWER"})
            await self._set(call, {b: "BYE"})
            await self._set(call, {a: "BYE"})
        else:
            await self._set(call, {a: "BYE"})
            await self._set(call, {b: "BYE"})
        status = "ANSWERED" if answered else "NO ANSWER"
        await self._cdr(
            call, frm=caller, to=callee, status=status, call_type="Internal", talk=21 if answered else 0
        )

    async def _scenario_outbound(
        self,
        call_id: str,
        extension: str = "1005",
        callee: str = "+14155550199",
        outcome: str = "answered",
        cdr: bool = True,
        cdr_first: bool = False,
        hold_open: bool = False,
    ) -> None:
        await self._api_dial(
            call_id, extension, callee, outcome, cdr=cdr, cdr_first=cdr_first, hold_open=hold_open
        )

    async def _api_dial(
        self,
        call_id: str,
        extension: str,
        callee: str,
        outcome: str,
        *,
        cdr: bool = True,
        cdr_first: bool = False,
        hold_open: bool = False,
    ) -> None:
        """``call/dial``: the agent's phone rings first, alone; the far end is dialled after."""
        await asyncio.sleep(self.config.step_delay)  # the HTTP answer goes out first
        call = self.calls[call_id] = _LiveCall(call_id)
        agent = self._ext(call, extension, "RING")
        await self._report(30011, call)
        trunk_name = f"{self.config.trunk}_SIP"
        base: dict[str, Any] = {
            "frm": extension,
            "to": callee,
            "call_type": "Outbound",
            "dst_trunk": trunk_name,
        }
        if outcome == "agent_no_answer":
            call.members[agent].status = "BYE"
            if cdr and cdr_first:
                await self._cdr(call, **base, status="NO ANSWER")
            await self._failed(call, "480 Temporatily Unavailable", [agent])
            if cdr and not cdr_first:
                await self._cdr(call, **base, status="NO ANSWER")
            self.calls.pop(call_id, None)
            return
        call.members[agent].status = "ALERT"
        if outcome == "failed":
            await self._report(30011, call, [agent])
            await self._failed(call, "NOT found", None)
            await self._set(call, {agent: "BYE"})
            self.calls.pop(call_id, None)
            return
        trunk = self._trunk(call, "outbound", extension, callee, "RING")
        await self._report(30011, call, [agent, trunk])
        await self._set(call, {trunk: "EARLYMEDIA"})
        if outcome == "busy":
            call.members[trunk].status = "BYE"
            await self._failed(call, "486 Busy Here", [trunk])
            status, final = "BUSY", agent
        elif outcome == "no_answer":
            await self._set(call, {agent: "BYE"})  # the agent gives up waiting
            status, final = "NO ANSWER", trunk
        else:
            await self._set(call, {agent: "ANSWERED", trunk: "ANSWER"})
            action = await self._wait_or_action(call, hold_open)
            first = action[1] if action is not None else trunk  # by default the customer hangs up
            await self._set(call, {first: "BYE"})
            status, final = "ANSWERED", (agent if first == trunk else trunk)
        talk = 30 if status == "ANSWERED" else 0
        if cdr_first and cdr:
            await self._cdr(call, **base, status=status, talk=talk)
            await self._set(call, {final: "BYE"})
        else:
            if call.members[final].status != "BYE":
                await self._set(call, {final: "BYE"})
            if cdr:
                await self._cdr(call, **base, status=status, talk=talk)


_Handler = Callable[[YeastarSimulator, Request, dict[str, Any]], Awaitable[Response]]

_ENDPOINTS: dict[str, tuple[str, _Handler]] = {
    "get_token": ("POST", YeastarSimulator._get_token),
    "refresh_token": ("POST", YeastarSimulator._refresh_token),
    "del_token": ("GET", YeastarSimulator._del_token),
    "extension/list": ("GET", YeastarSimulator._extension_list),
    "cdr/list": ("GET", YeastarSimulator._cdr_list),
    "recording/download": ("GET", YeastarSimulator._recording_download),
    "vm/get": ("GET", YeastarSimulator._vm_get),
    "vm/download": ("GET", YeastarSimulator._vm_download),
    "call/query": ("GET", YeastarSimulator._call_query),
    "call/dial": ("POST", YeastarSimulator._call_dial),
    "call/hangup": ("POST", YeastarSimulator._call_action),
    "call/transfer": ("POST", YeastarSimulator._call_action),
    "call/hold": ("POST", YeastarSimulator._call_action),
    "call/unhold": ("POST", YeastarSimulator._call_action),
    "call/accept_inbound": ("POST", YeastarSimulator._call_action),
    "call/refuse_inbound": ("POST", YeastarSimulator._call_action),
}
