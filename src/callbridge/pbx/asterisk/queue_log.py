"""Asterisk's own ``queue_log``, read back into normalized queue events.

Each line is ``epoch|callid|queue|agent|EVENT|data1|data2|…`` (``docs.asterisk.org``, Queue
Logs). The events become the same :mod:`callbridge.domain.events` queue events the AMI tracker
emits, so the figures of :mod:`callbridge.domain.queues` can be recomputed from the PBX's own
record and compared with the ones the call log holds. A line that cannot be read is reported
with its number and skipped; events that carry no queue figure (QUEUESTART, CONFIGRELOAD, DID,
INFO, …) are passed over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callbridge.domain.errors import InvalidEvent
from callbridge.domain.events import (
    Event,
    QueueAgentMissed,
    QueueCompleted,
    QueueConnected,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
)

_LEFT = {
    # event → (outcome, index of the wait in the data fields, index of the position)
    "ABANDON": (QueueOutcome.ABANDONED, 2, 0),
    "EXITWITHTIMEOUT": (QueueOutcome.TIMEOUT, 2, 0),
    "EXITEMPTY": (QueueOutcome.LEAVE_EMPTY, 2, 0),
    "EXITWITHKEY": (QueueOutcome.LEFT, 3, 1),
}
_REFUSED = {
    "FULL": QueueOutcome.FULL,
    "JOINEMPTY": QueueOutcome.JOIN_EMPTY,
    "JOINUNAVAIL": QueueOutcome.JOIN_EMPTY,
}


@dataclass(slots=True)
class QueueLog:
    events: list[Event] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def agent_extension(agent: str) -> str:
    """``PJSIP/1001``, ``Local/1001@from-queue/n``, ``SIP/1001-0000a`` → ``1001``; a member name
    that is no interface is kept as it is."""
    if "/" not in agent:
        return agent
    rest = agent.partition("/")[2]
    return rest.split("@", 1)[0].split("/", 1)[0].split(";", 1)[0].rsplit("-", 1)[0] or agent


def _int(fields: list[str], index: int, what: str) -> int:
    try:
        text = fields[index].strip()
    except IndexError:
        raise ValueError(f"{what} missing") from None
    if not text.lstrip("-").isdigit():
        raise ValueError(f"{what} is not a whole number: {text[:20]!r}")
    return max(0, int(text))


def parse_queue_log(lines: Iterable[str], pbx: str) -> QueueLog:
    out = QueueLog()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("|")
        try:
            event = _event(parts, pbx)
        except (ValueError, InvalidEvent, OverflowError, OSError) as exc:
            out.errors.append((number, str(exc)))
            continue
        if event is not None:
            out.events.append(event)
    return out


def _event(parts: list[str], pbx: str) -> Event | None:
    if len(parts) < 5:
        raise ValueError(
            f"{len(parts)} fields; a queue_log line has at least 5 (epoch|callid|queue|agent|event)"
        )
    stamp, callid, queue, agent, name, *data = parts
    if not stamp.strip().isdigit():
        raise ValueError(f"the time is not a Unix epoch: {stamp[:20]!r}")
    at = datetime.fromtimestamp(int(stamp), UTC)
    name = name.strip().upper()
    call: dict[str, Any] = {"pbx": pbx, "at": at, "call_id": callid, "queue": queue}
    ext = agent_extension(agent)
    if name in ("PAUSE", "UNPAUSE", "ADDMEMBER", "REMOVEMEMBER"):
        if queue in ("", "NONE"):
            return None
        paused = name == "PAUSE"
        change = {"PAUSE": "paused", "UNPAUSE": "unpaused", "ADDMEMBER": "added", "REMOVEMEMBER": "removed"}[
            name
        ]
        return QueueMemberChanged(
            pbx=pbx,
            at=at,
            queue=queue,
            extension=ext,
            change=change,
            paused=paused,
            reason=(data[0] if data and paused else "")[:100],
        )
    if name == "ENTERQUEUE":
        position = _int(data, 2, "position") if len(data) > 2 and data[2] else 0
        return QueueJoined(**call, position=position)
    if name == "RINGNOANSWER":
        return QueueAgentMissed(**call, extension=ext, ring_ms=_int(data, 0, "ring time"))
    if name == "CONNECT":
        ring = _int(data, 2, "ring time") if len(data) > 2 and data[2] else 0
        return QueueConnected(
            **call, extension=ext, wait_seconds=_int(data, 0, "hold time"), ring_seconds=ring
        )
    if name in ("COMPLETECALLER", "COMPLETEAGENT"):
        return QueueCompleted(
            **call,
            extension=ext,
            wait_seconds=_int(data, 0, "hold time"),
            talk_seconds=_int(data, 1, "talk time"),
            reason="caller" if name == "COMPLETECALLER" else "agent",
        )
    if name in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
        # …|holdtime|calltime|origposition at the end, whatever comes before them.
        if len(data) < 3:
            raise ValueError(f"{name} needs hold time, talk time and position")
        return QueueCompleted(
            **call,
            extension=ext,
            wait_seconds=_int(data, len(data) - 3, "hold time"),
            talk_seconds=_int(data, len(data) - 2, "talk time"),
            reason="transfer",
        )
    if name in _LEFT:
        outcome, wait_at, position_at = _LEFT[name]
        return QueueLeft(
            **call,
            outcome=outcome,
            wait_seconds=_int(data, wait_at, "wait time"),
            position=_int(data, position_at, "position"),
        )
    if name in _REFUSED:
        return QueueLeft(**call, outcome=_REFUSED[name])
    return None
