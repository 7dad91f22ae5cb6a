"""A Yeastar PBX's voicemail messages, fetched through its OpenAPI.

The CDR that says a call went to voicemail (status ``VOICEMAIL``) names the mailbox (the called
extension) and the caller, not the message. The message is found in the mailbox's list
(``vm/get?number=``): a message from that caller that no other voicemail of the hub has taken,
the one left nearest the call's end when the PBX's time is readable (else the oldest). Its audio
comes as a recording's does: ``vm/download?msg_id=`` gives a one-time download path, fetched
with the access token; neither ever leaves the hub.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.domain.recordings import RecordingNotReady
from callbridge.domain.voicemails import Voicemail
from callbridge.pbx.yeastar.client import VoicemailMessage, YeastarClient
from callbridge.services.voicemails import FetchedMessage

_DIGITS = re.compile(r"\D")


def same_caller(pbx_number: str, caller_number: str) -> bool:
    """Whether the mailbox list's caller (as the PBX writes it: ``+1415…``, ``001415…``, ``2005``)
    is the voicemail's caller (E.164 or an extension): equal digits, or one ends with the other
    over at least seven digits (a national or international prefix added or dropped)."""
    a, b = _DIGITS.sub("", pbx_number), _DIGITS.sub("", caller_number)
    if not a or not b:
        return not a and not b
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 7 and long.endswith(short)


def _left_at(message: VoicemailMessage, zone: ZoneInfo) -> datetime | None:
    try:
        local = datetime.strptime(message.time.strip()[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return local.replace(tzinfo=zone).astimezone(UTC)


def pick_message(
    messages: Collection[VoicemailMessage],
    voicemail: Voicemail,
    taken: Collection[str],
    zone: ZoneInfo,
) -> VoicemailMessage | None:
    candidates = [
        m for m in messages if m.msg_id not in taken and same_caller(m.caller_number, voicemail.caller_number)
    ]
    if not candidates:
        return None

    def distance(message: VoicemailMessage) -> float:
        at = _left_at(message, zone)
        return abs((at - voicemail.received_at).total_seconds()) if at is not None else float("inf")

    # Nearest in time first; among unreadable times, the PBX's order (oldest first).
    order = {m.msg_id: n for n, m in enumerate(candidates)}
    return min(candidates, key=lambda m: (distance(m), order[m.msg_id]))


class YeastarVoicemails:
    """:class:`~callbridge.services.voicemails.VoicemailSource` over the link's client (one token
    per PBX: the link's). PBX errors are ``PbxError``s: the fetcher retries them with back-off."""

    def __init__(self, client: YeastarClient, timezone: str = "UTC") -> None:
        self.client = client
        try:
            self.zone = ZoneInfo(timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = ZoneInfo("UTC")

    async def fetch(self, voicemail: Voicemail, taken: Collection[str], dest: Path) -> FetchedMessage:
        messages = await self.client.list_voicemails(voicemail.mailbox_number)
        found = pick_message(messages, voicemail, taken, self.zone)
        if found is None:
            raise RecordingNotReady(
                f"mailbox {voicemail.mailbox_number} on the phone system lists no message from "
                "this caller yet"
            )
        name = await self.client.download_voicemail(found.msg_id, dest)
        return FetchedMessage(
            message_id=found.msg_id,
            name=name or found.file_name or f"{found.msg_id}.wav",
            duration_seconds=found.duration,
            caller_name=found.caller_name,
        )
