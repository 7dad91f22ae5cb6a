"""The agents' WebSocket (``/agent/v1/link``), their tokens, settings, events, bans and health.

Ingest of an agent's batch: decode, drop what is at or below the agent's high-water mark, ingest
the call events (grouped by call, several transactions side by side on PostgreSQL for a big
batch), store the raw events and move the high-water mark (in the batch's transaction when it
takes one, else in one more after the others), and only then acknowledge.
A hub killed anywhere in between has acknowledged nothing it has not committed; what the agent
resends is dropped by the mark or by ingest's idempotency.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

import callbridge
from callbridge.domain.errors import (
    AuthenticationFailed,
    CallbridgeError,
    InvalidInput,
    PbxUnavailable,
    StoreUnavailable,
)
from callbridge.domain.events import Event, PresenceChanged
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.domain.versions import older_than
from callbridge.hub import Hub, Payload
from callbridge.services.agents import (
    CLOSE_PROTOCOL,
    CLOSE_REPLACED,
    CLOSE_STORE_FAILED,
    CLOSE_TOKEN_REFUSED,
    MAX_FRAME_BYTES,
    AgentHealth,
    AgentLink,
    AgentRecord,
    BatchItem,
    IngestTurn,
    RawItem,
    agent_settings,
    authenticate,
    decode_item,
    guard_settings,
    issue_token,
    parse_ban_items,
    parse_batch,
    parse_rules,
    redeem_enrollment,
    revoke_token,
)
from callbridge.services.calllog import IngestFailed
from callbridge.store.db import DatabaseError
from callbridge.store.repos import Repos
from callbridge.web.deps import AccountsDep, AdminUser, HubDep, RepoDep, client_address
from callbridge.web.frames import CLOSE_INVALID, CLOSE_POLICY, FrameRefused, receive_text
from callbridge.web.pages import flash, render
from callbridge.web.schemas import Id

log = logging.getLogger(__name__)

router = APIRouter(tags=["agents"])

SOCKETS_KEY = "agent_sockets"
INGEST_TURNS_KEY = "agent_ingest_turns"
MAX_MERGED_ITEMS = 3000
# Rejected items logged one by one per batch; the rest are counted in one more line.
MAX_REJECT_LINES = 10


def agent_link(hub: Hub, name: str) -> AgentLink:
    """The AgentLink of ``name`` in the hub's link supervisor (made on first use)."""
    links = hub.supervisor().links
    link = links.get(name)
    if not isinstance(link, AgentLink):
        link = AgentLink(name)
        links[name] = link
    return link


def ingest_turn(hub: Hub, name: str) -> IngestTurn:
    """The :class:`IngestTurn` of ``name``'s agent (it outlives the agent's connections)."""
    turns: dict[str, IngestTurn] = hub.extras.setdefault(INGEST_TURNS_KEY, {})
    return turns.setdefault(name, IngestTurn())


def _serves_agent(record: PbxRecord) -> bool:
    return record.kind is PbxKind.ASTERISK and bool(record.config.get("agent"))


# -- the link ------------------------------------------------------------------------------------


class _Session:
    def __init__(self, hub: Hub, ws: WebSocket, pbx: str, epoch: str, high_water: int) -> None:
        self.hub = hub
        self.ws = ws
        self.pbx = pbx
        self.epoch = epoch
        self.high_water = high_water
        self._send_lock = asyncio.Lock()
        self._health_written = 0.0

    async def send(self, msg: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(msg))

    async def store(self, items: Sequence[BatchItem]) -> None:
        """Commit one batch, then acknowledge it. The commit is shielded: should the link go
        while it runs, it still ends (stored, or rolled back) before the next connection of this
        agent reads where to start; only the acknowledgement is lost, and the agent resends."""
        stored = await self.hub.db.finish_anyway(self._commit(items))
        if stored is None:
            return
        top, rejected, changed = stored
        if rejected:
            await self.send({"type": "reject", "items": rejected})
        await self.send({"type": "ack", "seq": top})
        for topic, payload in changed:
            await self.hub.bus.publish(topic, payload)

    async def _commit(
        self, items: Sequence[BatchItem]
    ) -> tuple[int, list[dict[str, Any]], list[tuple[str, Payload]]] | None:
        """Store the items past the high-water mark; returns (new mark, items rejected for good,
        messages to publish), or ``None`` when a newer outbox of this agent has taken over.
        Items the hub can never take are rejected for good: acknowledged with the rest (so the
        agent drops them) and named in a ``reject``."""
        turn = ingest_turn(self.hub, self.pbx)
        async with turn.lock:
            if turn.committed is not None:
                epoch, mark = turn.committed
                if epoch != self.epoch:
                    return None  # the agent started a new outbox since: these rows are not its
                self.high_water = max(self.high_water, mark)
            stored = await self._commit_locked(items)
            turn.committed = (self.epoch, stored[0])
            return stored

    async def _commit_locked(
        self, items: Sequence[BatchItem]
    ) -> tuple[int, list[dict[str, Any]], list[tuple[str, Payload]]]:
        events: list[Event] = []
        raws: list[RawItem] = []
        rejected: list[dict[str, Any]] = []
        top = self.high_water
        for item in items:
            if item.seq <= self.high_water:
                continue  # committed before (a resend after a cut)
            top = max(top, item.seq)
            try:
                decoded = decode_item(self.pbx, item)
            except InvalidInput as exc:
                rejected.append({"seq": item.seq, "reason": exc.message})
                if len(rejected) <= MAX_REJECT_LINES:
                    log.warning(
                        "agent of PBX %s: outbox row seq %d rejected for good: %s",
                        self.pbx,
                        item.seq,
                        exc.message,
                    )
                continue
            if isinstance(decoded, Event):
                events.append(decoded)
            else:
                raws.append(decoded)
        if len(rejected) > MAX_REJECT_LINES:
            log.warning(
                "agent of PBX %s: %d more outbox rows rejected in this batch",
                self.pbx,
                len(rejected) - MAX_REJECT_LINES,
            )
        if top == self.high_water:
            return top, rejected, []
        self.hub.preview(events)
        last_at = max((e.at for e in events), default=None)

        async def advance(repos: Repos) -> None:
            await repos.agents.add_raw_events(self.pbx, raws)
            await repos.agents.advance(self.pbx, self.epoch, top, last_at)

        # The mark moves once the batch is stored: in the batch's own transaction when it takes
        # one, else in one more after the others.
        changed = await self.hub.ingest_batch(
            [e for e in events if not isinstance(e, PresenceChanged)], then=advance
        )
        self.high_water = top
        if last_at is not None:
            agent_link(self.hub, self.pbx).last_event_at = last_at
        for event in events:
            if isinstance(event, PresenceChanged):
                await self.hub.handle_event(event)  # no database work: straight to the desk
        return top, rejected, changed

    async def on_status(self, msg: dict[str, Any], link: AgentLink) -> None:
        link.health = AgentHealth.of(msg)
        if link.health.last_event_at and (
            link.last_event_at is None or link.health.last_event_at > link.last_event_at
        ):
            link.last_event_at = link.health.last_event_at
        now = time.monotonic()
        if now - self._health_written < 2.0:
            return
        self._health_written = now
        status = link.status()
        async with self.hub.db.unit() as repos:
            await repos.agents.record_health(self.pbx, link.health)
            await repos.pbxes.record_status(
                self.pbx, status.connected, status.detail, status.last_event_at, datetime.now(UTC)
            )

    async def on_bans(self, msg: dict[str, Any]) -> None:
        items = msg.get("items")
        bans = parse_ban_items(self.pbx, items if isinstance(items, list) else [])
        async with self.hub.db.unit() as repos:
            await repos.agents.replace_bans(self.pbx, bans)


def _json(frame: str) -> dict[str, Any]:
    """A frame's JSON object; FrameRefused (1007 not JSON, 1008 not an object)."""
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise FrameRefused(CLOSE_INVALID, "a frame is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise FrameRefused(CLOSE_POLICY, "a frame is a JSON object with a type")
    return msg


async def _refuse(ws: WebSocket, who: str, exc: FrameRefused) -> None:
    peer = ws.client.host if ws.client else "?"
    log.warning("%s from %s: %s; closing the link (%d)", who, peer, exc.reason, exc.code)
    with contextlib.suppress(Exception):
        await ws.close(code=exc.code, reason=exc.reason)


def _bearer(ws: WebSocket) -> str:
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def _starting_mark(hub: Hub, turn: IngestTurn, record: AgentRecord, epoch: str) -> int:
    """The high-water mark a new connection of this agent starts from, once any batch an earlier
    connection was storing has ended (its rows are then not stored twice)."""
    async with turn.lock:
        if record.epoch == epoch:
            high_water = record.high_water
            if turn.committed is not None and turn.committed[0] == epoch:
                high_water = max(high_water, turn.committed[1])
        else:
            # A new outbox (the agent's file was replaced): its numbering starts again.
            high_water = 0
            async with hub.db.unit() as repos:
                await repos.agents.advance(record.pbx, epoch, 0, None)
        turn.committed = (epoch, high_water)
        return high_water


@router.websocket("/agent/v1/link")
async def agent_socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    await ws.accept()
    try:
        async with hub.db.unit() as repos:
            record = await authenticate(repos.agents, _bearer(ws))
            pbx_record = await repos.pbxes.find(record.pbx)
        if pbx_record is None or not pbx_record.enabled:
            raise AuthenticationFailed("agent token refused: its PBX is disabled or gone")
    except AuthenticationFailed as exc:
        peer = ws.client.host if ws.client else "?"
        log.warning("agent link from %s refused: %s", peer, exc.message)
        await ws.close(code=CLOSE_TOKEN_REFUSED, reason=exc.message[:120])
        return
    name = record.pbx
    try:
        hello = json.loads(await asyncio.wait_for(receive_text(ws, MAX_FRAME_BYTES), timeout=15))
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise ValueError("first frame must be hello")
        epoch = str(hello.get("epoch") or "")[:64]
        version = str(hello.get("version") or "?")[:64]
    except FrameRefused as exc:
        await _refuse(ws, f"agent of PBX {name}", exc)
        return
    except (ValueError, RecursionError, TimeoutError):
        await ws.close(code=CLOSE_PROTOCOL, reason="expected a hello frame")
        return
    except WebSocketDisconnect:
        return
    try:
        high_water = await _starting_mark(hub, ingest_turn(hub, name), record, epoch)
    except (StoreUnavailable, DatabaseError) as exc:
        log.warning("agent of PBX %s: could not start its link (%s); it will retry", name, type(exc).__name__)
        with contextlib.suppress(Exception):
            await ws.close(code=CLOSE_STORE_FAILED, reason="the hub could not store events; resend later")
        return
    session = _Session(hub, ws, name, epoch, high_water)

    sockets: dict[str, WebSocket] = hub.extras.setdefault(SOCKETS_KEY, {})
    old = sockets.get(name)
    sockets[name] = ws
    if old is not None:
        with contextlib.suppress(Exception):
            await old.close(code=CLOSE_REPLACED, reason="replaced by a newer connection of this agent")

    async def close(reason: str) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=CLOSE_TOKEN_REFUSED, reason=reason[:120])

    link = agent_link(hub, name)
    generation = link.attach(session.send, version, close)
    log.info("agent of PBX %s connected (version %s, high-water %d)", name, version, high_water)
    try:
        async with hub.db.unit() as repos:
            await repos.agents.record_connection(name, True, version)
    except (StoreUnavailable, DatabaseError) as exc:  # shown as connected at its next status
        log.warning("agent of PBX %s: could not record its connection (%s)", name, type(exc).__name__)
    queue: asyncio.Queue[list[BatchItem]] = asyncio.Queue(maxsize=64)

    async def process() -> None:
        while True:
            items = list(await queue.get())
            # Under load, frames wait here: store them together (one set of transactions).
            while not queue.empty() and len(items) < MAX_MERGED_ITEMS:
                items += queue.get_nowait()
            await session.store(items)

    worker = asyncio.create_task(process(), name=f"agent-{name}-ingest")
    try:
        await session.send(
            {
                "type": "welcome",
                "pbx": name,
                "high_water": high_water,
                "settings": agent_settings(pbx_record.config),
            }
        )
        if hub.pbx_copies is not None:
            hub.pbx_copies.wake()  # copies of purged recordings it was to delete while away
        if hub.voicemail_pbx_copies is not None:
            hub.voicemail_pbx_copies.wake()  # and messages of voicemails deleted meanwhile
        while True:
            receive = asyncio.ensure_future(receive_text(ws, MAX_FRAME_BYTES))
            done, _ = await asyncio.wait({receive, worker}, return_when=asyncio.FIRST_COMPLETED)
            if worker in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receive
                worker.result()  # raises what stopped the ingest
            msg = _json(receive.result())
            kind = msg.get("type")
            if kind == "batch":
                try:
                    items = parse_batch(msg.get("items"))
                except InvalidInput as exc:
                    raise FrameRefused(CLOSE_POLICY, exc.message) from exc
                await queue.put(items)
            elif kind == "result":
                link.resolve(msg)
            elif kind in ("status", "bans"):
                try:
                    if kind == "status":
                        await session.on_status(msg, link)
                    else:
                        await session.on_bans(msg)
                except Exception as exc:
                    # Reports are refreshed every few seconds; losing one must not cut the link.
                    log.warning(
                        "agent of PBX %s: could not record its %s (%s)", name, kind, type(exc).__name__
                    )
    except WebSocketDisconnect:
        log.info("agent of PBX %s disconnected", name)
    except FrameRefused as exc:
        await _refuse(ws, f"agent of PBX {name}", exc)
    except IngestFailed as exc:
        log.error("agent of PBX %s: %s; closing the link so the agent resends later", name, exc)
        with contextlib.suppress(Exception):
            await ws.close(code=CLOSE_STORE_FAILED, reason="the hub could not store events; resend later")
    except Exception:
        log.exception("agent link of PBX %s failed", name)
        with contextlib.suppress(Exception):
            await ws.close(code=1011, reason="hub error")
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
        link.detach(generation)
        # Other workers relay commands to the worker that has the agent; not to this one now.
        if (
            hub.settings.redis_url
            and not link.connected
            and hub.links is not None
            and hub.links.links.get(name) is link
        ):
            del hub.links.links[name]
        if sockets.get(name) is ws:
            del sockets[name]
            with contextlib.suppress(Exception):
                async with hub.db.unit() as repos:
                    await repos.agents.record_connection(name, False)
                    await repos.pbxes.record_status(
                        name, False, link.status().detail, None, datetime.now(UTC)
                    )


async def _connected_somewhere(hub: Hub, repos: Any, name: str) -> bool:
    """Whether the agent of ``name`` is connected to this worker or, says the database, another."""
    link = hub.links.links.get(name) if hub.links is not None else None
    if isinstance(link, AgentLink) and link.connected:
        return True
    record = await repos.agents.find(name)
    return bool(hub.settings.redis_url and record is not None and record.connected)


async def _kick(hub: Hub, repos: Any, name: str, reason: str) -> None:
    """Close the agent's link (its token changed), in whichever worker it is connected to."""
    if await _connected_somewhere(hub, repos, name):
        assert hub.commands is not None
        with contextlib.suppress(Exception):
            await hub.commands.to_agent(name, "agent_disconnect", {"reason": reason})


# -- JSON API --------------------------------------------------------------------------------------


class AgentOut(BaseModel):
    pbx: str
    token_prefix: str
    token_active: bool
    connected: bool
    version: str = Field(
        description="The callbridge version the agent reported when it connected ('' before)."
    )
    outdated: bool | None = Field(
        None, description="Older than this hub's version; null while the agent's version is unknown."
    )
    ami_up: bool
    ami_detail: str
    last_event_at: datetime | None
    seen_at: datetime | None
    outbox_depth: int
    outbox_age_seconds: float
    outbox_dropped: int

    @classmethod
    def of(cls, hub: Hub, record: AgentRecord) -> AgentOut:
        out = cls(
            pbx=record.pbx,
            token_prefix=record.token_prefix,
            token_active=not record.revoked,
            connected=record.connected,
            version=record.version,
            ami_up=record.ami_up,
            ami_detail=record.ami_detail,
            last_event_at=record.last_event_at,
            seen_at=record.seen_at,
            outbox_depth=record.outbox_depth,
            outbox_age_seconds=record.outbox_age_seconds,
            outbox_dropped=record.outbox_dropped,
        )
        link = hub.links.links.get(record.pbx) if hub.links is not None else None
        if isinstance(link, AgentLink):  # this process holds the link: fresher than the row
            h = link.health
            out.connected = link.connected
            out.version = link.version or out.version
            out.ami_up = h.ami_up and link.connected
            out.ami_detail = h.ami_detail
            out.outbox_depth = h.outbox_depth
            out.outbox_age_seconds = h.outbox_age_seconds
            out.outbox_dropped = h.outbox_dropped
            out.last_event_at = link.last_event_at or out.last_event_at
        out.outdated = older_than(out.version, callbridge.__version__) if out.version else None
        return out


class EnrollIn(BaseModel):
    code: str = Field(max_length=200, description="The code `callbridge pbx enroll NAME` printed.")


class EnrollOut(BaseModel):
    pbx: str
    token: str = Field(
        description="The agent's own token; `callbridge agent enroll` writes it to its config."
    )
    hub_version: str


class TokenOut(BaseModel):
    pbx: str
    token: str = Field(description="Shown once; give it to `callbridge agent --token`.")


class AgentSettingsBody(BaseModel):
    trunks: list[str] | None = Field(None, max_length=50)
    events_map: list[dict[str, Any]] | None = Field(None, max_length=100)
    guard: dict[str, Any] | None = None


class RawEventOut(BaseModel):
    id: int
    pbx: str
    name: str
    headers: dict[str, Any]
    at: datetime
    received_at: datetime


class BanOut(BaseModel):
    pbx: str
    address: str
    reason: str
    failures: int
    banned_at: datetime | None
    until: datetime | None


async def _agent_pbx(repos: Any, name: str) -> PbxRecord:
    record: PbxRecord = await repos.pbxes.get(name)
    if not _serves_agent(record):
        raise InvalidInput(f"PBX {name} is not served by an agent (add it with --agent)")
    return record


@router.get("/api/v1/agents")
async def list_agents(user: AdminUser, hub: HubDep, repos: RepoDep) -> dict[str, list[AgentOut]]:
    return {"items": [AgentOut.of(hub, r) for r in await repos.agents.all()]}


@router.post("/agent/v1/enroll")
async def enroll_agent(
    body: EnrollIn, request: Request, hub: HubDep, repos: RepoDep, accounts: AccountsDep
) -> EnrollOut:
    """Exchange a single-use enrollment code for the agent's token (no sign-in: the code is the
    credential). Wrong codes are throttled per address like sign-ins: a growing pause, then 429."""
    key = f"enroll:{client_address(request)}"
    await accounts.check_guesses(key, "enrollment codes")
    try:
        name, token = await redeem_enrollment(repos.agents, body.code)
        await _agent_pbx(repos, name)
    except (AuthenticationFailed, InvalidInput) as exc:
        await repos.rollback()  # nothing of the attempt stays but its count
        count = await accounts.failed_guess(key)
        await repos.commit()
        log.warning("enrollment refused from %s (%d recent): %s", client_address(request), count, exc.message)
        raise
    await repos.commit()
    await _kick(hub, repos, name, "agent enrolled again (new token)")
    log.info("agent of PBX %s enrolled from %s", name, client_address(request))
    return EnrollOut(pbx=name, token=token, hub_version=callbridge.__version__)


@router.post("/api/v1/pbxes/{name}/agent-token", status_code=201)
async def rotate_agent_token(name: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> TokenOut:
    """Issue a new agent token (the previous one stops working at once)."""
    await _agent_pbx(repos, name)
    token = await issue_token(repos.agents, name)
    await repos.commit()
    await _kick(hub, repos, name, "agent token rotated")
    log.info("agent token of PBX %s rotated by %s", name, user.name)
    return TokenOut(pbx=name, token=token)


@router.delete("/api/v1/pbxes/{name}/agent-token", status_code=204)
async def revoke_agent_token(name: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> Response:
    await _agent_pbx(repos, name)
    await revoke_token(repos.agents, name)
    await repos.commit()
    await _kick(hub, repos, name, "agent token revoked")
    log.info("agent token of PBX %s revoked by %s", name, user.name)
    return Response(status_code=204)


@router.get("/api/v1/pbxes/{name}/agent-settings")
async def get_agent_settings(name: str, user: AdminUser, repos: RepoDep) -> dict[str, Any]:
    return agent_settings((await _agent_pbx(repos, name)).config)


async def _update_settings(hub: Hub, repos: Any, name: str, body: AgentSettingsBody) -> dict[str, Any]:
    record = await _agent_pbx(repos, name)
    config = dict(record.config)
    if body.trunks is not None:
        config["trunks"] = [t.strip()[:100] for t in body.trunks if t.strip()]
    if body.events_map is not None:
        config["events_map"] = [r.to_dict() for r in parse_rules(body.events_map)]
    if body.guard is not None:
        config["guard"] = guard_settings(body.guard)
    settings = agent_settings(config)  # validates everything before storing
    await repos.pbxes.update_config(name, config)
    await repos.commit()  # stored before it is pushed (an agent that connects meanwhile reads it)
    if await _connected_somewhere(hub, repos, name):
        assert hub.commands is not None
        with contextlib.suppress(PbxUnavailable):  # it gets the settings when it connects again
            await hub.commands.to_agent(name, "agent_settings", {"settings": settings})
    return settings


@router.put("/api/v1/pbxes/{name}/agent-settings")
async def put_agent_settings(
    name: str, body: AgentSettingsBody, user: AdminUser, hub: HubDep, repos: RepoDep
) -> dict[str, Any]:
    """Change trunk patterns, the events map or guard thresholds; a connected agent applies them now."""
    return await _update_settings(hub, repos, name, body)


@router.get("/api/v1/agent-events")
async def list_agent_events(
    user: AdminUser,
    repos: RepoDep,
    pbx: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Id | None = None,
) -> dict[str, list[RawEventOut]]:
    """Raw AMI events forwarded by agents through the events map, newest first."""
    events = await repos.agents.raw_events(pbx, limit, before)
    return {"items": [RawEventOut.model_validate(e, from_attributes=True) for e in events]}


@router.get("/api/v1/bans")
async def list_bans(user: AdminUser, repos: RepoDep, pbx: str | None = None) -> dict[str, list[BanOut]]:
    return {"items": [BanOut.model_validate(b, from_attributes=True) for b in await repos.agents.bans(pbx)]}


def _ban_address(address: str) -> str:
    """A banned address as the guard writes it (bans are on single IPv4 or IPv6 addresses)."""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError as exc:
        raise InvalidInput(f"{address[:64]!r} is not an IP address; a ban is lifted by its address") from exc


async def _lift(hub: Hub, repos: Any, name: str, address: str) -> None:
    await _agent_pbx(repos, name)
    address = _ban_address(address)
    # End this request's transaction (it may hold SQLite's write lock) before waiting for the
    # agent, whose answer comes with a bans report the link stores meanwhile.
    await repos.commit()
    assert hub.commands is not None
    try:
        await hub.commands.unban(name, address)  # here, or in the worker the agent is connected to
    except PbxUnavailable as exc:
        raise PbxUnavailable(
            f"the agent of PBX {name} is not connected; the ban cannot be lifted now"
        ) from exc
    await repos.agents.remove_ban(name, address)
    await repos.commit()


@router.delete("/api/v1/bans/{name}/{address}", status_code=204)
async def lift_ban(name: str, address: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> Response:
    """Lift a ban: the agent removes the address from its firewall set."""
    await _lift(hub, repos, name, address)
    log.info("ban of %s on PBX %s lifted by %s", address, name, user.name)
    return Response(status_code=204)


# -- pages -----------------------------------------------------------------------------------------


async def _page(request: Request, hub: Hub, repos: Any, status_code: int = 200, **extra: Any) -> Response:
    pbxes = [p for p in await repos.pbxes.all() if _serves_agent(p)]
    known = {a.pbx: a for a in await repos.agents.all()}
    rows = []
    for p in pbxes:
        record = known.get(p.name) or AgentRecord(pbx=p.name, revoked=True)
        rows.append(
            {
                "pbx": p,
                "agent": AgentOut.of(hub, record),
                "settings": agent_settings(p.config),
                "events_map_json": json.dumps(p.config.get("events_map") or [], indent=2),
            }
        )
    return render(
        request,
        "agents.html",
        status_code=status_code,
        rows=rows,
        bans=await repos.agents.bans(),
        raw_events=await repos.agents.raw_events(None, 20),
        hub_version=callbridge.__version__,
        **extra,
    )


@router.get("/settings/agents", include_in_schema=False)
async def agents_page(request: Request, user: AdminUser, hub: HubDep, repos: RepoDep) -> Response:
    return await _page(request, hub, repos)


@router.post("/settings/agents/{name}/token", include_in_schema=False)
async def rotate_token_form(
    name: str, request: Request, user: AdminUser, hub: HubDep, repos: RepoDep
) -> Response:
    await _agent_pbx(repos, name)
    token = await issue_token(repos.agents, name)
    await repos.commit()
    await _kick(hub, repos, name, "agent token rotated")
    return await _page(request, hub, repos, new_token={"pbx": name, "token": token})


@router.post("/settings/agents/{name}/revoke", include_in_schema=False)
async def revoke_token_form(
    name: str, request: Request, user: AdminUser, hub: HubDep, repos: RepoDep
) -> Response:
    await _agent_pbx(repos, name)
    await revoke_token(repos.agents, name)
    await repos.commit()
    await _kick(hub, repos, name, "agent token revoked")
    flash(request, f"The agent token of {name} is revoked.")
    return RedirectResponse("/settings/agents", status_code=303)


@router.post("/settings/agents/{name}/settings", include_in_schema=False)
async def settings_form(
    name: str,
    request: Request,
    user: AdminUser,
    hub: HubDep,
    repos: RepoDep,
    trunks: Annotated[str, Form(max_length=2000)] = "",
    events_map: Annotated[str, Form(max_length=100_000)] = "[]",
    guard_enabled: Annotated[bool, Form()] = False,
    max_failures: Annotated[int, Form()] = 10,
    window_seconds: Annotated[int, Form()] = 600,
    ban_seconds: Annotated[int, Form()] = 600,
    allow: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    try:
        try:
            rules = json.loads(events_map or "[]")
        except ValueError as exc:
            raise InvalidInput(f"the events map is not valid JSON ({exc})") from exc
        body = AgentSettingsBody(
            trunks=[t for t in trunks.replace(",", " ").split() if t],
            events_map=rules if isinstance(rules, list) else None,
            guard={
                "enabled": guard_enabled,
                "max_failures": max_failures,
                "window_seconds": window_seconds,
                "ban_seconds": ban_seconds,
                "allow": [a for a in allow.replace(",", " ").split() if a],
            },
        )
        if not isinstance(rules, list):
            raise InvalidInput("the events map is a JSON list of rules")
        await _update_settings(hub, repos, name, body)
    except CallbridgeError as exc:
        await repos.rollback()
        return await _page(request, hub, repos, status_code=400, error=exc.message)
    flash(request, f"Settings of {name} saved; a connected agent applies them now.")
    return RedirectResponse("/settings/agents", status_code=303)


@router.post("/settings/agents/{name}/bans/{address}/lift", include_in_schema=False)
async def lift_form(
    name: str, address: str, request: Request, user: AdminUser, hub: HubDep, repos: RepoDep
) -> Response:
    try:
        await _lift(hub, repos, name, address)
    except CallbridgeError as exc:
        return await _page(request, hub, repos, status_code=400, error=exc.message)
    flash(request, f"Ban of {address} lifted.")
    return RedirectResponse("/settings/agents", status_code=303)
