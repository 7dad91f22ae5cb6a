"""AMI actions a user can trigger: click-to-call (Originate), hang up, blind transfer.

Each turns Asterisk's answer into either a result or a domain error whose message a user
understands ("your phone is busy"), never a raw AMI text. Originate is sent with
``Async: true`` (a synchronous Originate blocks the whole AMI session, events included) and
its outcome is read from the ``OriginateResponse`` event matched by our ActionID.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass

from callbridge.domain.errors import InvalidNumber, PbxRejected, PbxTimeout, PbxUnavailable
from callbridge.pbx.asterisk.client import AmiClient
from callbridge.pbx.asterisk.codec import HeaderValue
from callbridge.services.ports import Originate

log = logging.getLogger(__name__)

# OriginateResponse Reason (AST_CONTROL codes, main/pbx.c pbx_dial_reason) → user words.
ORIGINATE_REASONS = {
    "0": "your phone {ext} is not registered or cannot be reached",
    "1": "your phone {ext} hung up before the call was placed",
    "3": "your phone {ext} did not answer",
    "5": "your phone {ext} is busy",
    "8": "your phone {ext} rejected the call",
}
_DIALABLE = re.compile(r"^\+?[0-9*#]{1,32}$")
_EXTENSION = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class OriginateOptions:
    context: str = "from-internal"
    tech: str = "PJSIP"
    direction_variable: str = "CALLBRIDGE_DIRECTION"
    # Margin on top of the ring timeout for the OriginateResponse to arrive.
    response_margin: float = 10.0


def dialable(number: str) -> str:
    """Strip what people type around numbers; refuse anything that is not digits/+/*/#."""
    cleaned = re.sub(r"[\s\-().]", "", number)
    if not _DIALABLE.match(cleaned):
        raise InvalidNumber(f"{number!r} is not a number that can be dialed")
    return cleaned


def new_channel_id() -> str:
    # Becomes the first leg's Uniqueid and so the call's Linkedid: the call id we return.
    return f"cb-{secrets.token_hex(8)}"


def originate_fields(
    request: Originate, options: OriginateOptions, channel_id: str
) -> dict[str, HeaderValue]:
    if not _EXTENSION.match(request.extension):
        raise InvalidNumber(f"{request.extension!r} is not an extension")
    number = dialable(request.number)
    shown = re.sub(r'["<>\r\n]', "", request.caller_id or number)
    variables = [f"__{options.direction_variable}=outbound", f"__CALLBRIDGE_CALL_ID={channel_id}"]
    if request.auto_answer:
        # Desk phones answer on their own when the INVITE carries these (Polycom/Yealink/Snom/
        # Grandstream read Call-Info, Cisco/others Alert-Info).
        variables.append("PJSIP_HEADER(add,Call-Info)=<uri>;answer-after=0")
        variables.append("PJSIP_HEADER(add,Alert-Info)=<http://localhost>;info=alert-autoanswer;delay=0")
    return {
        "Channel": f"{options.tech}/{request.extension}",
        "Context": options.context,
        "Exten": number,
        "Priority": 1,
        "CallerID": f'"{shown}" <{number}>',
        "Timeout": int(request.timeout_seconds * 1000),
        "Async": True,
        "ChannelId": channel_id,
        "Variable": variables,
    }


async def originate(
    client: AmiClient, request: Originate, options: OriginateOptions, channel_id: str | None = None
) -> str:
    """Ring ``request.extension``; when it answers Asterisk dials the number. Returns the call id."""
    channel_id = channel_id or new_channel_id()
    fields = originate_fields(request, options, channel_id)
    action_id = client.new_action_id()
    outcome = client.expect_event(action_id)
    try:
        reply = await client.send_action("Originate", fields, action_id=action_id)
        if reply.get("Response") != "Success":
            raise PbxRejected(f"the PBX refused the call: {reply.get('Message') or 'no reason given'}")
        try:
            event = await asyncio.wait_for(outcome, timeout=request.timeout_seconds + options.response_margin)
        except TimeoutError as exc:
            raise PbxTimeout("the PBX did not report whether the call was placed") from exc
    finally:
        client.forget_event(action_id)
        if not outcome.done():
            outcome.cancel()
    if event.get("Response") == "Success":
        log.info("originate %s: %s answered, dialing out", channel_id, request.extension)
        return channel_id
    reason = event.get("Reason")
    words = ORIGINATE_REASONS.get(reason, "the call could not be placed from {ext}").format(
        ext=request.extension
    )
    log.info("originate %s failed: reason %s", channel_id, reason)
    raise PbxRejected(words)


async def hangup(client: AmiClient, channel: str) -> None:
    reply = await client.send_action("Hangup", {"Channel": channel})
    if reply.get("Response") != "Success":
        message = reply.get("Message")
        if "No such channel" in message:
            raise PbxRejected("the call has already ended")
        raise PbxRejected(f"the PBX could not hang up: {message or 'no reason given'}")


async def redirect(client: AmiClient, channel: str, destination: str, context: str) -> None:
    """Blind transfer: send ``channel`` to ``destination`` in ``context``."""
    target = dialable(destination)
    reply = await client.send_action(
        "Redirect", {"Channel": channel, "Exten": target, "Context": context, "Priority": 1}
    )
    if reply.get("Response") != "Success":
        message = reply.get("Message")
        if "does not exist" in message or "not up" in message:
            raise PbxRejected("the call has already ended")
        raise PbxRejected(f"the PBX could not transfer the call: {message or 'no reason given'}")


# ChanSpy options (app_chanspy): q = no beep; w = whisper (the agent hears the supervisor, the
# caller does not); B = barge (both hear the supervisor). Neither w nor B: listen only.
SPY_OPTIONS = {"listen": "q", "whisper": "qw", "barge": "qB"}


async def queue_pause(client: AmiClient, interface: str, queue: str, paused: bool, reason: str) -> None:
    """``QueuePause`` one member (in ``queue``, or every queue when empty) with a reason."""
    fields: dict[str, str] = {"Interface": interface, "Paused": "true" if paused else "false"}
    if queue:
        fields["Queue"] = queue
    if reason and paused:
        fields["Reason"] = reason
    reply = await client.send_action("QueuePause", fields)
    if reply.get("Response") != "Success":
        message = reply.get("Message")
        if "not found" in message.lower():
            raise PbxRejected(f"{interface} is not a member of queue {queue or '(any)'}")
        raise PbxRejected(f"the PBX could not pause the member: {message or 'no reason given'}")


async def spy(client: AmiClient, supervisor: str, channel: str, mode: str, context: str) -> None:
    """Ring the supervisor's phone ``supervisor`` (``PJSIP/1005``); when answered it runs
    ``ChanSpy(<channel>,<options>)`` on the call's channel."""
    options = SPY_OPTIONS.get(mode)
    if options is None:
        raise PbxRejected(f"unknown way to join a call: {mode!r} (listen, whisper or barge)")
    fields = {
        "Channel": supervisor,
        "Application": "ChanSpy",
        "Data": f"{channel},{options}",
        "CallerID": f'"{mode.title()}" <{supervisor.rsplit("/", 1)[-1]}>',
        "Async": "true",
        "Timeout": "30000",
        "Context": context,
    }
    reply = await client.send_action("Originate", fields)
    if reply.get("Response") != "Success":
        raise PbxRejected(f"the PBX could not ring {supervisor}: {reply.get('Message') or 'no reason given'}")


__all__ = [
    "ORIGINATE_REASONS",
    "OriginateOptions",
    "PbxUnavailable",
    "dialable",
    "hangup",
    "new_channel_id",
    "originate",
    "originate_fields",
    "queue_pause",
    "redirect",
    "spy",
]
