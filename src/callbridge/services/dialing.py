"""Click-to-call and other commands to a PBX, from whichever hub worker the user reached.

The link of a PBX runs in one worker only (see :mod:`callbridge.services.lease`). A command
given in another worker travels over the bus: a request on :data:`COMMAND_TOPIC`, the owner
runs it and answers on the asker's reply topic. Errors come back as the same domain errors
(``PbxRejected("your phone 1001 is busy")``), so the user reads the same message either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Collection, Sequence
from typing import Any

from callbridge.bus import Bus, Payload
from callbridge.domain import errors
from callbridge.domain.errors import InvalidInput, InvalidNumber, PbxUnavailable
from callbridge.domain.numbers import NumberKind, parse_number
from callbridge.services.agents import AgentLink
from callbridge.services.live import DESK_TOPIC
from callbridge.services.ports import Originate, PbxLink, Supervision

log = logging.getLogger(__name__)

COMMAND_TOPIC = "pbx-command"
REPLY_PREFIX = "pbx-reply:"
_ERRORS: dict[str, type[errors.CallbridgeError]] = {
    cls.__name__: cls
    for cls in (
        errors.PbxRejected,
        errors.PbxUnavailable,
        errors.PbxTimeout,
        errors.PbxError,
        errors.InvalidNumber,
        errors.InvalidInput,
    )
}

LocalLinks = Callable[[str], PbxLink | None]

# How long the worker that owns a PBX's link has to say it took a command: with no owner (the
# link is down everywhere), the user hears so in seconds, not when the command would time out.
TAKEN_SECONDS = 3.0


def dial_target(number: str, region: str, extensions: Collection[str] = ()) -> str:
    """What the PBX should dial for ``number``: the digits of one of ``extensions`` (the
    extensions of the PBX mapped to users of this hub), else a valid phone number in E.164
    (national forms read in ``region``); refuses anything else, with the reason."""
    text = (number or "").strip()
    if not text:
        raise InvalidNumber("give the number to call")
    parsed = parse_number(text, region)
    if parsed.is_extension and parsed.extension in extensions:
        return parsed.extension
    # Not one of our extensions: short digits ("12") are read as a phone number, and must be one.
    phone = parse_number(text, region, 0)
    if phone.kind is NumberKind.INVALID or not phone.valid:
        why = phone.reason or "not a valid number"
        if parsed.is_extension:
            why = "neither an extension of this hub nor a phone number"
        raise InvalidNumber(f"{text!r} is not a phone number: {why}")
    return phone.key


class LinkCommands:
    """Runs a command on a PBX link, here or in the worker that owns it."""

    def __init__(self, bus: Bus, local: LocalLinks, *, remote: bool, timeout: float = 45.0) -> None:
        self.bus = bus
        self.local = local
        self.remote = remote
        self.timeout = timeout
        self.worker = secrets.token_hex(6)
        # request id → (taken: the owner has it, answer: its outcome)
        self._pending: dict[str, tuple[asyncio.Future[None], asyncio.Future[Payload]]] = {}
        self.ready = asyncio.Event()

    async def originate(self, pbx: str, request: Originate) -> str:
        link = self.local(pbx)
        if link is not None:
            return await link.originate(request)
        answer = await self._ask(
            pbx,
            "originate",
            {"extension": request.extension, "number": request.number, "timeout": request.timeout_seconds},
            request.timeout_seconds + 15,
        )
        return str(answer.get("call_id", ""))

    async def hangup(self, pbx: str, call_id: str) -> None:
        link = self.local(pbx)
        if link is not None:
            await link.hangup(call_id)
            return
        await self._ask(pbx, "hangup", {"call_id": call_id}, 15.0)

    async def queue_pause(self, pbx: str, queue: str, extension: str, paused: bool, reason: str) -> None:
        """Pause or unpause a queue member (a supervisor's command)."""
        link = self.local(pbx)
        if link is not None:
            await _supervised(link).queue_pause(queue, extension, paused, reason)
            return
        args = {"queue": queue, "extension": extension, "paused": paused, "reason": reason}
        await self._ask(pbx, "queue_pause", args, 15.0)

    async def spy(self, pbx: str, call_id: str, extension: str, mode: str) -> None:
        """Ring ``extension`` and let it listen to, whisper in or barge into the call."""
        link = self.local(pbx)
        if link is not None:
            await _supervised(link).spy(call_id, extension, mode)
            return
        await self._ask(pbx, "spy", {"call_id": call_id, "extension": extension, "mode": mode}, 15.0)

    async def unban(self, pbx: str, address: str) -> None:
        """Lift a ban of the security guard on the agent of ``pbx`` (whichever worker has it)."""
        link = self.local(pbx)
        if link is not None:
            await _guarded(link).unban(address)
            return
        await self._ask(pbx, "unban", {"address": address}, 15.0)

    async def to_agent(self, pbx: str, op: str, args: dict[str, Any]) -> None:
        """New settings (``agent_settings``) or a disconnect (``agent_disconnect``) for the agent
        of ``pbx``, in whichever worker it is connected to; nothing when it is connected nowhere
        (it reads its settings when it connects)."""
        link = self.local(pbx)
        if isinstance(link, AgentLink) and link.connected:
            await _agent_op(link, op, args)
        elif self.remote:
            with contextlib.suppress(PbxUnavailable):
                await self._ask(pbx, op, args, 15.0)

    async def _ask(self, pbx: str, op: str, args: dict[str, Any], wait: float) -> Payload:
        if not self.remote:
            raise PbxUnavailable(f"the hub has no running link to PBX {pbx!r}")
        await asyncio.wait_for(self.ready.wait(), timeout=5)
        request_id = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()
        future: asyncio.Future[Payload] = loop.create_future()
        self._pending[request_id] = (taken, future)
        try:
            await self.bus.publish(
                COMMAND_TOPIC,
                {"id": request_id, "pbx": pbx, "op": op, "args": args, "reply": REPLY_PREFIX + self.worker},
            )
            try:
                # The worker that owns the link says so at once: without one, fail fast.
                await asyncio.wait_for(asyncio.shield(taken), timeout=TAKEN_SECONDS)
                answer = await asyncio.wait_for(future, timeout=wait)
            except TimeoutError as exc:
                raise PbxUnavailable(f"no hub worker runs the link to PBX {pbx!r} right now") from exc
        finally:
            self._pending.pop(request_id, None)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            cls = _ERRORS.get(str(error.get("type")), errors.PbxError)
            raise cls(str(error.get("message") or "the PBX command failed"))
        return answer

    async def run(self) -> None:
        """Serve commands for the links this worker owns, and collect answers to its own."""
        async with self.bus.subscribe(COMMAND_TOPIC, REPLY_PREFIX + self.worker) as messages:
            self.ready.set()
            async for message in messages:
                if message.get("topic") == COMMAND_TOPIC:
                    link = self.local(str(message.get("pbx", "")))
                    if link is not None:
                        with contextlib.suppress(Exception):
                            await self.bus.publish(
                                str(message.get("reply", "")), {"id": message.get("id"), "taken": True}
                            )
                        # Commands can take a while (a phone rings): never block the loop.
                        asyncio.create_task(self._serve(link, message))  # noqa: RUF006
                    continue
                pending = self._pending.get(str(message.get("id", "")))
                if pending is None:
                    continue
                taken, future = pending
                if not taken.done():
                    taken.set_result(None)
                if not message.get("taken") and not future.done():
                    future.set_result(message)

    async def _serve(self, link: PbxLink, message: Payload) -> None:
        args = message.get("args") or {}
        reply: Payload = {"id": message.get("id"), "ok": True}
        try:
            if message.get("op") == "originate":
                reply["call_id"] = await link.originate(
                    Originate(
                        extension=str(args["extension"]),
                        number=str(args["number"]),
                        timeout_seconds=float(args.get("timeout", 30.0)),
                    )
                )
            elif message.get("op") == "hangup":
                await link.hangup(str(args["call_id"]))
            elif message.get("op") == "unban":
                await _guarded(link).unban(str(args["address"]))
            elif message.get("op") == "queue_pause":
                await _supervised(link).queue_pause(
                    str(args["queue"]),
                    str(args["extension"]),
                    bool(args["paused"]),
                    str(args.get("reason", "")),
                )
            elif message.get("op") == "spy":
                await _supervised(link).spy(str(args["call_id"]), str(args["extension"]), str(args["mode"]))
            elif message.get("op") in AGENT_OPS:
                await _agent_op(_guarded(link), str(message["op"]), args)
            else:
                raise InvalidInput(f"unknown PBX command {message.get('op')!r}")
        except errors.CallbridgeError as exc:
            error = {"type": type(exc).__name__, "message": exc.message}
            reply = {"id": message.get("id"), "ok": False, "error": error}
        except Exception:
            log.exception("PBX %s: command %s failed", link.name, message.get("op"))
            error = {"type": "PbxError", "message": "the PBX command failed"}
            reply = {"id": message.get("id"), "ok": False, "error": error}
        with contextlib.suppress(Exception):
            await self.bus.publish(str(message.get("reply", "")), reply)


AGENT_OPS = ("agent_settings", "agent_disconnect")


async def _agent_op(link: AgentLink, op: str, args: Payload) -> None:
    if op == "agent_settings":
        await link.notify({"type": "settings", "settings": args.get("settings") or {}})
    elif op == "agent_disconnect":
        await link.disconnect(str(args.get("reason") or "disconnected by the hub"))
    else:
        raise InvalidInput(f"unknown agent command {op!r}")


def _supervised(link: PbxLink) -> Supervision:
    if not isinstance(link, Supervision):
        raise errors.PbxRejected(
            f"PBX {link.name} does not let callbridge pause queue members or join calls "
            "(Asterisk with an embedded AMI link only)"
        )
    return link


def _guarded(link: PbxLink) -> AgentLink:
    if not isinstance(link, AgentLink):
        raise InvalidInput(f"PBX {link.name} is not served by an agent: it has no security guard")
    return link


async def click_to_call(
    commands: LinkCommands,
    bus: Bus,
    user_id: int,
    extensions: Sequence[tuple[str, str]],
    number: str,
    region: str,
    *,
    mapped: Collection[tuple[str, str]] = (),
    ring_seconds: float = 30.0,
) -> dict[str, str]:
    """Ring the user's phone, then the number. Progress reaches every tab of the user live;
    failures raise with a message a user understands. ``mapped``: every (PBX, extension) mapped
    to a user of this hub; only those of the user's PBX are dialed as extensions."""
    if not extensions:
        raise InvalidInput("you have no phone extension yet; ask an administrator to map one to you")
    pbx, extension = extensions[0]
    target = dial_target(number, region, {e for p, e in mapped if p == pbx})

    async def progress(state: str, message: str) -> None:
        msg = {"type": "dial", "state": state, "number": target, "extension": extension, "message": message}
        await bus.publish(DESK_TOPIC, {"users": [user_id], "msg": msg})

    await progress("ringing_phone", f"Calling {target}: pick up your phone {extension} when it rings")
    try:
        call_id = await commands.originate(
            pbx, Originate(extension=extension, number=target, timeout_seconds=ring_seconds)
        )
    except errors.CallbridgeError as exc:
        await progress("failed", f"Call to {target} failed: {exc.message}")
        raise
    await progress("dialing", f"Your phone {extension} answered; now calling {target}")
    return {"call_id": call_id, "pbx": pbx, "extension": extension, "number": target}
