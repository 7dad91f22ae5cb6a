"""The browser's live connection: one WebSocket per open tab of a signed-in user.

Each hub worker holds the sockets of the tabs that reached it and one bus subscription
(``desk``, ``presence``, ``call``). A desk message names the users it is for; the worker
sends it to those users' sockets only, so a pop reaches every tab of the right user and nobody
else, whichever worker ingested the call (with Redis, every worker sees every message).

Close codes: 4401 not signed in (or the session ended), 4403 the page came from another site,
1003 a binary frame, 1009 a frame over :data:`MAX_CLIENT_FRAME` bytes (a tab only sends "ping").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect

from callbridge.domain.users import User
from callbridge.hub import Hub
from callbridge.services.calllog import CALL_TOPIC
from callbridge.services.live import DESK_TOPIC, PRESENCE_TOPIC
from callbridge.services.queues import WALLBOARD_TOPIC, wallboard_token_hash
from callbridge.store.desk import SqlDesk
from callbridge.web.frames import FrameRefused, receive_text

log = logging.getLogger(__name__)

router = APIRouter()

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
QUEUE_SIZE = 256
# The largest frame a tab may send (live.js sends "ping"; anything else is ignored).
MAX_CLIENT_FRAME = 1024
MAX_FRAME_MESSAGES = 64
# Open tabs of a user disabled or signed out everywhere are closed within this many seconds.
SESSION_RECHECK_SECONDS = 10.0
# Presence and live-call rows reach a tab at most this often (seconds); pops never wait for it.
STATE_INTERVAL = 0.2
# Wallboards opened with a link are closed within this many seconds of the link's revocation
# (at once when it is revoked through this hub's API or another worker's).
WALLBOARD_RECHECK_SECONDS = 2.0
CLOSE_REVOKED = 4410


class Connection:
    """One tab. Cards and notifications queue in order (each one matters) and go out at once;
    presence and live-call rows keep only their newest state per extension or call and go out
    at most every :data:`STATE_INTERVAL` per tab, so a busy PBX costs each tab a few frames a
    second and can never bury or slow a pop under a pile of states nobody will see."""

    def __init__(self, ws: WebSocket, user: User | None, link_id: int | None = None) -> None:
        self.ws = ws
        self.user = user  # None: a wallboard opened with a read-only link
        self.link_id = link_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self.latest: dict[tuple[str, str], str] = {}
        self.wake = asyncio.Event()
        self._states_due = 0.0  # loop time from which the next states may go out
        self._timer: asyncio.TimerHandle | None = None

    def push(self, text: str) -> None:
        if self.queue.full():
            # A stuck tab loses its oldest messages; it never slows the others.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(text)
        self.wake.set()

    def push_latest(self, key: tuple[str, str], text: str) -> None:
        self.latest.pop(key, None)  # re-insert: the newest state goes out last
        self.latest[key] = text
        self._wake_for_states()

    def _wake_for_states(self) -> None:
        if self._timer is not None:
            return  # already due to go out
        loop = asyncio.get_running_loop()
        delay = self._states_due - loop.time()
        if delay <= 0:
            self.wake.set()
        else:
            self._timer = loop.call_later(delay, self._states_ready)

    def _states_ready(self) -> None:
        self._timer = None
        self.wake.set()

    def take(self) -> list[str]:
        """What to send now: queued messages (the pops), then the newest states when due."""
        texts: list[str] = []
        while not self.queue.empty() and len(texts) < MAX_FRAME_MESSAGES:
            texts.append(self.queue.get_nowait())
        if not self.queue.empty():
            self.wake.set()
        if self.latest:
            now = asyncio.get_running_loop().time()
            if now >= self._states_due:
                texts += self.latest.values()
                self.latest.clear()
                self._states_due = now + STATE_INTERVAL
            else:
                self._wake_for_states()
        return texts

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Sockets:
    """The sockets this worker holds, by user, and the bus fan-out into them."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[Connection]] = {}
        self.all: set[Connection] = set()
        self.managers: set[Connection] = set()  # the tabs that see every live call
        self.wallboards: set[Connection] = set()  # wallboard screens (signed in or by link)
        self.ready = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.all)

    def add(self, conn: Connection) -> None:
        assert conn.user is not None
        self.by_user.setdefault(conn.user.id, set()).add(conn)
        self.all.add(conn)
        if conn.user.sees_all_calls:
            self.managers.add(conn)

    def remove(self, conn: Connection) -> None:
        self.all.discard(conn)
        self.managers.discard(conn)
        self.wallboards.discard(conn)
        if conn.user is None:
            return
        conns = self.by_user.get(conn.user.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_user[conn.user.id]

    def deliver(self, message: dict[str, Any]) -> int:
        """Route one bus message to the right sockets; returns how many got it."""
        topic = message.pop("topic", "")
        sent = 0
        # The JSON text is made for the first socket that gets it: nobody listening, no work.
        text = ""
        if topic == DESK_TOPIC:
            msg = message.get("msg")
            users = message.get("users") or []
            if not isinstance(msg, dict):
                return 0
            for user_id in users:
                for conn in self.by_user.get(user_id, ()):
                    text = text or json.dumps(msg)
                    conn.push(text)
                    sent += 1
        elif topic == PRESENCE_TOPIC:
            key = ("presence", f"{message.get('pbx')}/{message.get('extension')}")
            if self.all:
                text = json.dumps(message)
                for conn in self.all:
                    conn.push_latest(key, text)
            sent = len(self.all)
        elif topic == WALLBOARD_TOPIC:
            if message.get("type") == "revoked":
                for conn in [c for c in self.wallboards if c.link_id == message.get("link")]:
                    self._revoke(conn)
                return 0
            if self.wallboards:
                text = json.dumps(message)
                for conn in self.wallboards:
                    conn.push(text)  # in order and at once: the wallboard shows every change
            sent = len(self.wallboards)
        elif topic == CALL_TOPIC and self.managers:
            text = json.dumps({"type": "live_call", "call": message})
            key = ("call", str(message.get("id")))
            for conn in self.managers:
                conn.push_latest(key, text)
            sent = len(self.managers)
        return sent

    def _revoke(self, conn: Connection) -> None:
        self.remove(conn)
        conn.push('{"type":"revoked"}')

        async def close() -> None:
            await asyncio.sleep(0.2)  # let the sender hand the word over first
            with contextlib.suppress(Exception):
                await conn.ws.close(CLOSE_REVOKED, "this wallboard link was revoked")

        asyncio.get_running_loop().create_task(close())

    async def recheck_wallboards(self, hub: Hub) -> int:
        """Close wallboards whose link was revoked (also by `callbridge wallboard revoke` in
        another process); returns how many were closed."""
        linked = [c for c in self.wallboards if c.link_id is not None]
        if not linked:
            return 0
        async with hub.db.unit() as repos:
            good = {link.id for link in await repos.queues.wallboard_links() if link.revoked_at is None}
        gone = [c for c in linked if c.link_id not in good]
        for conn in gone:
            self._revoke(conn)
        return len(gone)

    async def recheck_wallboards_every(self, hub: Hub, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.recheck_wallboards(hub)
            except Exception as exc:  # the database is away: try again next round
                log.warning("wallboards: link re-check failed (%s)", type(exc).__name__)

    async def recheck(self, hub: Hub) -> int:
        """Close the tabs of users disabled or signed out everywhere since they connected (also
        when that happened in another process, such as ``callbridge user disable``); returns
        how many were closed."""
        # Tabs opened while the query runs are not part of this round.
        checked = [c for c in self.all | self.wallboards if c.user is not None]
        held = {(c.user.id, c.user.session_version) for c in checked if c.user is not None}
        if not held:
            return 0
        async with hub.db.unit() as repos:
            good = await repos.users.signed_in(held)
        ended = [
            c
            for c in checked
            if c.user is not None
            and (c in self.all or c in self.wallboards)
            and (c.user.id, c.user.session_version) not in good
        ]
        for conn in ended:
            self.remove(conn)
            with contextlib.suppress(Exception):
                await conn.ws.close(CLOSE_UNAUTHENTICATED, "signed out")
        return len(ended)

    async def recheck_every(self, hub: Hub, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                closed = await self.recheck(hub)
            except Exception as exc:  # the database is away: try again next round
                log.warning("live sockets: session re-check failed (%s)", type(exc).__name__)
                continue
            if closed:
                log.info("live sockets: closed %d tabs whose session ended", closed)

    async def run(self, hub: Hub) -> None:
        while True:
            try:
                async with hub.bus.subscribe(
                    DESK_TOPIC, PRESENCE_TOPIC, CALL_TOPIC, WALLBOARD_TOPIC
                ) as messages:
                    self.ready.set()
                    async for message in messages:
                        self.deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis restarted: subscribe again; the tabs reconnect on their own anyway.
                self.ready.clear()
                log.warning("live fan-out lost the bus (%s); resubscribing in 1 s", type(exc).__name__)
                await asyncio.sleep(1.0)


def sockets_of(app: Any) -> Sockets:
    found: Sockets = app.state.live_sockets
    return found


def install(app: FastAPI) -> None:
    """Attach the fan-out to the app's lifespan."""
    from callbridge.web.routes import desk

    sockets = Sockets()
    app.state.live_sockets = sockets
    app.include_router(router)
    app.include_router(desk.router)
    tasks: list[asyncio.Task[None]] = []

    async def start(hub: Hub) -> None:
        tasks.append(asyncio.create_task(sockets.run(hub), name="live-fanout"))
        tasks.append(
            asyncio.create_task(sockets.recheck_every(hub, SESSION_RECHECK_SECONDS), name="live-recheck")
        )
        tasks.append(
            asyncio.create_task(
                sockets.recheck_wallboards_every(hub, WALLBOARD_RECHECK_SECONDS), name="wallboard-recheck"
            )
        )
        hub.start_background()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sockets.ready.wait(), timeout=5)

    async def stop(hub: Hub) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        tasks.clear()

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser: cross-site hijacking needs a browser's cookies
    host = ws.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def _session_user(ws: WebSocket, hub: Hub) -> User | None:
    session = ws.scope.get("session") or {}
    user_id, version, session_id = session.get("uid"), session.get("sv"), session.get("sid")
    if not isinstance(user_id, int) or not isinstance(version, int) or not isinstance(session_id, str):
        return None
    async with hub.db.unit() as repos:
        return await hub.accounts(repos).user_for_session(user_id, version, session_id)


async def hello(hub: Hub, user: User) -> dict[str, Any]:
    async with hub.db.unit() as repos:
        extensions = await SqlDesk(repos.session).extensions_of(user.id)
        unread = await SqlDesk(repos.session).unread(user.id)
        alerts = await SqlDesk(repos.session).alerts(user.id)
    return {
        "type": "hello",
        # The server's clock, so a card's timer counts from the call's start whatever the
        # browser's clock says.
        "now": datetime.now(UTC).isoformat(),
        "alerts": alerts.to_dict(),
        "user": {"id": user.id, "name": user.name, "label": user.label, "role": user.role.value},
        "extensions": [{"pbx": p, "extension": e} for p, e in extensions],
        "can_dial": bool(extensions),
        "cards": await hub.board.cards(user.id),
        "unread": unread,
    }


@router.websocket("/live/ws")
async def live_socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    sockets = sockets_of(ws.app)
    await ws.accept()
    if not _same_origin(ws):
        await ws.close(CLOSE_FORBIDDEN_ORIGIN, "this page is not from this hub")
        return
    user = await _session_user(ws, hub)
    if user is None:
        await ws.close(CLOSE_UNAUTHENTICATED, "sign in first")
        return
    conn = Connection(ws, user)
    sockets.add(conn)
    sender = asyncio.create_task(_send(conn), name=f"live-send-{user.id}")
    try:
        conn.push(json.dumps(await hello(hub, user)))
        while True:
            text = await receive_text(ws, MAX_CLIENT_FRAME)
            if text == "ping" or '"ping"' in text:
                conn.push('{"type":"pong"}')
    except WebSocketDisconnect:
        pass
    except FrameRefused as exc:
        peer = ws.client.host if ws.client else "?"
        log.warning("live socket of user %s from %s: %s; closing (%d)", user.id, peer, exc.reason, exc.code)
        with contextlib.suppress(Exception):
            await ws.close(exc.code, exc.reason)
    finally:
        sockets.remove(conn)
        conn.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


@router.websocket("/live/wallboard")
async def wallboard_socket(ws: WebSocket) -> None:
    """The wallboard's live feed: a manager's (or admin's) session, or ``?token=`` of a
    read-only wallboard link. Sends the board's snapshot at once, then every change."""
    hub: Hub = ws.app.state.hub
    sockets = sockets_of(ws.app)
    await ws.accept()
    if not _same_origin(ws):
        await ws.close(CLOSE_FORBIDDEN_ORIGIN, "this page is not from this hub")
        return
    token = ws.query_params.get("token", "")
    user: User | None = None
    link_id: int | None = None
    if token:
        async with hub.db.unit() as repos:
            link_id = await repos.queues.wallboard_link_id(wallboard_token_hash(token))
        if link_id is None:
            await ws.close(CLOSE_REVOKED, "this wallboard link was revoked or never existed")
            return
    else:
        user = await _session_user(ws, hub)
        if user is None or not user.sees_all_calls:
            await ws.close(CLOSE_UNAUTHENTICATED, "sign in as a manager first")
            return
    conn = Connection(ws, user, link_id)
    sockets.wallboards.add(conn)
    sender = asyncio.create_task(_send(conn), name="wallboard-send")
    try:
        conn.push(json.dumps(await hub.wallboard_snapshot()))
        while True:
            text = await receive_text(ws, MAX_CLIENT_FRAME)
            if text == "ping" or '"ping"' in text:
                conn.push('{"type":"pong"}')
    except WebSocketDisconnect:
        pass
    except FrameRefused as exc:
        with contextlib.suppress(Exception):
            await ws.close(exc.code, exc.reason)
    finally:
        sockets.remove(conn)
        conn.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _send(conn: Connection) -> None:
    try:
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            texts = conn.take()
            if not texts:
                continue
            # Whatever queued while the last frame was sent goes out as one frame (a JSON array):
            # a busy PBX costs a frame per tab per turn, not one per message.
            await conn.ws.send_text(texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]")
    except (WebSocketDisconnect, RuntimeError):
        return
