"""The agent sends its Asterisk's voicemail messages to the hub.

app_voicemail keeps each message as ``msgNNNN.txt`` (its metadata: caller id, ``origtime``,
``duration``, ``msg_id``) beside ``msgNNNN.wav`` in ``<voicemail_dir>/<context>/<mailbox>/INBOX/``,
and raises the AMI event ``MessageWaiting`` (``Mailbox: 7001@default``) when a mailbox's count
changes. On that event (and once at start, for messages left while it was stopped) the agent
scans the mailbox's INBOX for messages it has not taken yet, and records each in its outbox
(``outbox.sqlite3``, table ``voicemails``) before sending anything: a message is taken once,
whatever the number of events, restarts or renumberings (it is known by its ``msg_id``, not by
its file name).

Each message is then announced to the hub (``POST /agent/v1/voicemails``: mailbox, caller,
time, duration, the call's Linkedid when the event carried one) and its audio uploaded in
checked chunks (``PUT /agent/v1/voicemails/{id}/data``, ``…/complete``), exactly as recordings
are. The row stays until the hub has the audio (or is told why it never will), retried with
capped back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from callbridge.agent.config import AgentConfig
from callbridge.agent.outbox import Outbox, PendingVoicemail
from callbridge.agent.uploads import MAX_MISSING_TRIES, Uploader, _Done, _expect, _Later, _message, _sha256
from callbridge.domain.errors import InvalidInput
from callbridge.domain.voicemails import parse_message_file

log = logging.getLogger(__name__)

# A context or mailbox name that is safe as one path component.
_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]{0,79}")
_MESSAGE = re.compile(r"msg\d{4}\.txt")
# The outbox's note of when the agent first ran (see VoicemailSender._catch_up).
_SINCE = "voicemail_since"


def mailbox_dir(root: Path, mailbox: str) -> Path | None:
    """``7001@default`` → ``<root>/default/7001/INBOX``; None for a name that is not one plain
    path component each (never a way out of the voicemail directory)."""
    number, _, context = mailbox.strip().partition("@")
    context = context or "default"
    if not _NAME.fullmatch(number) or not _NAME.fullmatch(context):
        return None
    return root / context / number / "INBOX"


def list_mailboxes(root: Path) -> list[str]:
    """Every mailbox with an INBOX under the voicemail directory, as ``7001@default``. Blocking I/O."""
    found: list[str] = []
    try:
        for context in sorted(root.iterdir()):
            if not _NAME.fullmatch(context.name) or not context.is_dir() or context.is_symlink():
                continue
            for box in sorted(context.iterdir()):
                if _NAME.fullmatch(box.name) and (box / "INBOX").is_dir():
                    found.append(f"{box.name}@{context.name}")
    except FileNotFoundError:
        pass  # no voicemail on this PBX (yet)
    except OSError as exc:
        log.warning("voicemail: cannot list %s (%s)", root, type(exc).__name__)
    return found


def scan_mailbox(root: Path, mailbox: str) -> list[tuple[str, dict[str, Any]]]:
    """The messages in a mailbox's INBOX: (reference, metadata) each. Blocking I/O."""
    inbox = mailbox_dir(root, mailbox)
    if inbox is None:
        log.warning("voicemail: ignoring mailbox %r (not a plain name)", mailbox[:80])
        return []
    try:
        resolved = inbox.resolve(strict=True)
        if not resolved.is_relative_to(root.resolve()):
            log.warning("voicemail: %s leads outside the voicemail directory; ignored", inbox)
            return []
        names = sorted(p.name for p in resolved.iterdir() if _MESSAGE.fullmatch(p.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        log.warning("voicemail: cannot read %s (%s)", inbox, type(exc).__name__)
        return []
    number, _, context = mailbox.strip().partition("@")
    context = context or "default"
    found: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        txt = resolved / name
        try:
            text = txt.read_text(encoding="utf-8", errors="replace")
            meta = parse_message_file(text)
        except OSError:
            continue  # renamed or deleted meanwhile: the next event scans again
        except InvalidInput as exc:
            log.warning("voicemail: %s skipped: %s", txt, exc.message)
            continue
        msg_id = _msg_id(text) or hashlib.sha256(text.encode()).hexdigest()[:24]
        reference = f"{context}/{number}/{msg_id}"
        found.append(
            (
                reference,
                {
                    "mailbox": f"{number}@{context}",
                    "reference": reference,
                    "caller_number": meta.caller_number,
                    "caller_name": meta.caller_name,
                    "received_at": meta.received_at.isoformat(),
                    "duration_seconds": meta.duration_seconds,
                    "call_id": meta.linked_id,
                    "audio": str(txt.with_suffix(".wav")),
                },
            )
        )
    return found


def _msg_id(text: str) -> str:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "msg_id":
            return re.sub(r"[^A-Za-z0-9_.\-]", "", value.strip())[:80]
    return ""


class VoicemailSender:
    def __init__(self, config: AgentConfig, outbox: Outbox, uploader: Uploader) -> None:
        self.config = config
        self.outbox = outbox
        self.uploader = uploader
        self._mailboxes: dict[str, str] = {}  # mailbox → the Linkedid its event carried
        self._wake = asyncio.Event()
        self.sent = 0  # messages whose audio the hub confirmed (figures, tests)

    def message_waiting(self, mailbox: str, linkedid: str = "") -> None:
        """AMI ``MessageWaiting``: scan that mailbox soon."""
        if mailbox:
            self._mailboxes[mailbox[:200]] = linkedid[:128]
            self._wake.set()

    async def run(self) -> None:
        await self._catch_up()
        while True:
            self._wake.clear()
            if self._mailboxes:
                mailboxes, self._mailboxes = self._mailboxes, {}
                for mailbox, linkedid in mailboxes.items():
                    await self._take(mailbox, linkedid)
            due = self.outbox.voicemails_due(time.time())
            for item in due:
                await self.send(item)
            if due or self._mailboxes:
                continue
            next_at = self.outbox.voicemails_next_at()
            wait = 60.0 if next_at is None else min(60.0, max(0.01, next_at - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _catch_up(self) -> None:
        """Messages left while the agent was stopped: no ``MessageWaiting`` reached it for them.
        At start every mailbox's INBOX is scanned once for messages left since the agent first
        ran; older ones were there before callbridge and are not announced (the first start only
        notes the time)."""
        since = self.outbox.meta(_SINCE)
        if not since:
            self.outbox.set_meta(_SINCE, str(int(time.time())))
            return
        mailboxes = await asyncio.to_thread(list_mailboxes, self.config.voicemail_dir)
        for mailbox in mailboxes:
            await self._take(mailbox, "", since=datetime.fromtimestamp(int(since), UTC))

    async def _take(self, mailbox: str, linkedid: str, *, since: datetime | None = None) -> None:
        found = await asyncio.to_thread(scan_mailbox, self.config.voicemail_dir, mailbox)
        fresh = [
            (ref, body)
            for ref, body in found
            if not self.outbox.has_voicemail(ref)
            and (since is None or datetime.fromisoformat(body["received_at"]) >= since)
        ]
        # The event names the call that left a message (its channel's Linkedid): that is the
        # one new message of this scan.
        if linkedid and len(fresh) == 1 and not fresh[0][1]["call_id"]:
            fresh[0][1]["call_id"] = linkedid
        for reference, body in fresh:
            if self.outbox.add_voicemail(reference, body):
                log.info("voicemail %s taken from mailbox %s", reference, mailbox)

    async def send(self, item: PendingVoicemail) -> None:
        try:
            await self._send(item)
        except _Done:
            self.outbox.voicemail_done(item.reference)
        except (_Later, httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            reason = str(exc) or type(exc).__name__
            delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** min(item.attempts, 20))
            delay *= random.uniform(0.8, 1.2)
            log.info("voicemail %s not sent yet (%s); next try in %.1f s", item.reference, reason, delay)
            self.outbox.voicemail_retry(item.reference, reason, time.time() + delay)

    async def _send(self, item: PendingVoicemail) -> None:
        body = {k: v for k, v in item.body.items() if k != "audio"}
        audio = Path(item.body["audio"])
        client = self.uploader.client()
        size, sha256 = await self._audio(audio, item)
        if size:
            body |= {"size": size, "sha256": sha256}
        begun = await client.post("/agent/v1/voicemails", json=body)
        if begun.status_code == 413:
            log.error("the hub refused voicemail %s: %s", item.reference, _message(begun))
            raise _Done
        _expect(begun, 200)
        state = begun.json()
        if state["status"] == "ready":
            raise _Done
        if not size:
            if item.attempts + 1 >= MAX_MISSING_TRIES:
                await self._refuse(item, f"no {audio.name} beside the message's {audio.stem}.txt")
            raise _Later(f"no {audio.name} in the mailbox (yet)")
        await self.uploader.transfer(
            client,
            "/agent/v1/voicemails",
            int(state["voicemail_id"]),
            audio,
            size,
            sha256,
            int(state["offset"]),
            state,
        )
        self.sent += 1
        log.info("voicemail %s uploaded (%d bytes)", item.reference, size)
        raise _Done

    async def _audio(self, audio: Path, item: PendingVoicemail) -> tuple[int, str]:
        """(size, SHA-256) of the message's audio once it is whole; (0, "") while it is not there."""
        try:
            resolved = await asyncio.to_thread(audio.resolve, True)
            stat = await asyncio.to_thread(resolved.stat)
        except (FileNotFoundError, NotADirectoryError):
            return 0, ""
        if not resolved.is_relative_to(self.config.voicemail_dir.resolve()) or not resolved.is_file():
            await self._refuse(item, f"{audio.name} is not a regular file inside the voicemail directory")
        if time.time() - stat.st_mtime < self.config.upload_settle_seconds:
            raise _Later("Asterisk may still be writing the message")
        if stat.st_size == 0:
            await self._refuse(item, f"{audio.name} is empty")
        if stat.st_size > self.config.recordings_max_bytes:
            await self._refuse(item, f"{audio.name} has {stat.st_size} bytes, over the agent's cap")
        return stat.st_size, await asyncio.to_thread(_sha256, resolved)

    async def _refuse(self, item: PendingVoicemail, reason: str) -> None:
        log.error("voicemail %s: audio not sent: %s", item.reference, reason)
        client = self.uploader.client()
        body = {k: v for k, v in item.body.items() if k != "audio"}
        await client.post("/agent/v1/voicemails", json=body)  # the message itself, at least
        answer = await client.post(
            "/agent/v1/voicemails/refused", json={"reference": item.reference, "reason": reason[:400]}
        )
        if answer.status_code in (204, 404):
            raise _Done
        _expect(answer, 204)


def delete_message(root: Path, reference: str) -> dict[str, str]:
    """The hub was asked to delete a message at the PBX: delete that message's files
    (``msgNNNN.txt``, ``.wav`` and any other format) in its mailbox, found by its ``msg_id``
    in any of the mailbox's folders (Asterisk renumbers and moves messages), and only inside the
    voicemail directory. ``{"result": "deleted"|"not_found"|"refused", "detail"}``. Blocking I/O."""
    context, sep, rest = reference.partition("/")
    number, sep2, msg_id = rest.partition("/")
    if not (sep and sep2) or not all(_NAME.fullmatch(p) for p in (context, number, msg_id)):
        return {"result": "refused", "detail": "not a voicemail message's reference"}
    try:
        base = root.resolve(strict=True)
        mailbox = (root / context / number).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return {"result": "not_found", "detail": f"no mailbox {number}@{context}"}
    except (OSError, RuntimeError):
        return {"result": "refused", "detail": "the mailbox cannot be resolved"}
    if not mailbox.is_relative_to(base) or mailbox == base:
        return {
            "result": "refused",
            "detail": f"mailbox {number}@{context} is outside the voicemail directory",
        }
    try:
        for folder in sorted(p for p in mailbox.iterdir() if p.is_dir() and not p.is_symlink()):
            for txt in sorted(p for p in folder.iterdir() if _MESSAGE.fullmatch(p.name)):
                try:
                    text = txt.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                found = _msg_id(text) or hashlib.sha256(text.encode()).hexdigest()[:24]
                if found != msg_id:
                    continue
                stem = txt.name[: -len(".txt")]
                files = [p for p in folder.iterdir() if p.name.split(".", 1)[0] == stem]
                for path in files:
                    if path.is_file() or path.is_symlink():
                        path.unlink(missing_ok=True)
                log.info("voicemail %s deleted (%s/%s): the hub asked", reference, folder.name, stem)
                return {"result": "deleted", "detail": f"{folder.name}/{stem} ({len(files)} files)"}
    except PermissionError:
        return {"result": "refused", "detail": "the agent may not delete the message's files (permissions)"}
    except OSError as exc:
        return {"result": "refused", "detail": f"the message could not be deleted ({type(exc).__name__})"}
    return {"result": "not_found", "detail": f"no message {msg_id} in mailbox {number}@{context}"}
