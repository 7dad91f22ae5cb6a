"""E-mail through the configured SMTP server, always via a durable outbox.

Nothing on the desk's path talks to the SMTP server: e-mails are rows in ``email_outbox``, and
:class:`MailWorker` (owned by the app's lifespan) sends those that are due. A server that is down
or refuses leaves the row pending with its reason, retried with a doubling back-off
(:func:`~callbridge.domain.mail.retry_after`), given up after ``MAX_ATTEMPTS``. The same worker
queues each opted-in user's daily digest once their local clock passes the digest hour (once a
day per user: the outbox key says which day, so several hub workers queue it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from callbridge.domain.mail import (
    MAX_ATTEMPTS,
    DigestLine,
    DigestUser,
    MailUnavailable,
    MissedCall,
    OutboxMail,
    digest_body,
    retry_after,
)
from callbridge.domain.numbers import format_for_region
from callbridge.domain.tasks import Task, TaskStatus
from callbridge.services.background import BackgroundWorker
from callbridge.services.tasks import start_of_today, task_title

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
IDLE_CHECK = 60.0  # seconds between two looks for digests to queue when nothing is due sooner


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    security: Security = "starttls"
    username: str = ""
    # Kept out of repr: a config printed in a traceback or a log line shows no password.
    password: str = ""
    timeout: float = 20.0

    def __repr__(self) -> str:
        return (
            f"SmtpConfig(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
            f"security={self.security!r}, username={self.username!r}, password='***')"
        )


class SmtpSender:
    """Sends one message (stdlib smtplib in a worker thread, with a timeout on every step)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self.config.sender.rpartition("@")[2] or None)
        message.set_content(body)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailUnavailable(_reason(exc)) from None

    def _send(self, message: EmailMessage) -> None:
        c = self.config
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if c.security == "tls":
            client = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=context)
        else:
            client = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        with client:
            if c.security == "starttls":
                client.starttls(context=context)
            if c.username:
                client.login(c.username, c.password)
            client.send_message(message)


def _reason(exc: BaseException) -> str:
    """Why sending failed, in words that never carry the password (smtplib's errors do not,
    but a server's reply is echoed: kept short, and the class name leads)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "the SMTP server refused the user name or password"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        return f"the SMTP server answered {exc.smtp_code}: {text[:200]}"
    if isinstance(exc, ConnectionRefusedError):
        return "the SMTP server refused the connection (is it running, is the port right?)"
    if isinstance(exc, TimeoutError):
        return "the SMTP server did not answer in time"
    return f"could not talk to the SMTP server ({type(exc).__name__})"


class MailStore(Protocol):
    """What the worker reads and writes in one unit of work (``store.mail.SqlMail`` + tasks)."""

    async def enqueue(self, key: str, to: str, subject: str, body: str) -> bool: ...

    async def due(self, at: datetime, limit: int = 20) -> Sequence[OutboxMail]: ...

    async def next_due(self) -> datetime | None: ...

    async def mark_sent(self, mail_id: int, at: datetime) -> None: ...

    async def mark_failed(self, mail_id: int, error: str, retry_at: datetime | None) -> None: ...

    async def digest_users(self) -> Sequence[DigestUser]: ...

    async def missed_calls(self, user_id: int, since: datetime) -> Sequence[MissedCall]: ...

    async def open_tasks(self, user_id: int, today: datetime) -> Sequence[Task]: ...


MailUnits = Callable[[], AbstractAsyncContextManager[MailStore]]


class MailWorker(BackgroundWorker):
    task_name = "mail-outbox"

    def __init__(
        self,
        units: MailUnits,
        sender: SmtpSender,
        *,
        digest_hour: int = 8,
        default_zone: str = "UTC",
        region: str = "US",
        desk_url: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._units = units
        self.sender = sender
        self.digest_hour = digest_hour
        self.default_zone = default_zone
        self.region = region
        self.desk_url = desk_url
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            wait = IDLE_CHECK
            try:
                await self.queue_digests()
                await self.send_due()
                async with self._units() as store:
                    upcoming = await store.next_due()
                if upcoming is not None:
                    wait = min(wait, max(0.05, (upcoming - self._clock()).total_seconds()))
            except Exception as exc:  # the database may be restarting: the next round tries again
                log.warning("mail outbox: a round failed (%s)", type(exc).__name__)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def send_due(self) -> int:
        """Send what is due now; returns how many were sent."""
        sent = 0
        at = self._clock()
        async with self._units() as store:
            due = await store.due(at)
        for mail in due:
            try:
                await self.sender.send(mail.to_address, mail.subject, mail.body)
            except MailUnavailable as exc:
                attempts = mail.attempts + 1
                retry = at + retry_after(attempts) if attempts < MAX_ATTEMPTS else None
                log.warning(
                    "e-mail %s to %s not sent (try %d): %s%s",
                    mail.id,
                    mail.to_address,
                    attempts,
                    exc.message,
                    "" if retry else "; given up",
                )
                async with self._units() as store:
                    await store.mark_failed(mail.id, exc.message, retry)
                continue
            async with self._units() as store:
                await store.mark_sent(mail.id, self._clock())
            sent += 1
            log.info("e-mail %s sent to %s", mail.id, mail.to_address)
        return sent

    async def queue_digests(self) -> int:
        """Queue today's digest for each opted-in user whose local clock has passed the hour."""
        at = self._clock()
        queued = 0
        async with self._units() as store:
            for user in await store.digest_users():
                zone = user.time_zone or self.default_zone
                local = at.astimezone(ZoneInfo(zone))
                if local.hour < self.digest_hour:
                    continue
                subject, body = await self._digest(store, user, zone, at)
                if await store.enqueue(
                    f"digest:{user.id}:{local.date().isoformat()}", user.email, subject, body
                ):
                    queued += 1
        if queued:
            log.info("mail outbox: %d daily digests queued", queued)
        return queued

    async def _digest(self, store: MailStore, user: DigestUser, zone: str, at: datetime) -> tuple[str, str]:
        tasks = [
            t
            for t in await store.open_tasks(user.id, start_of_today(zone, at))
            if t.status is TaskStatus.OPEN
        ]
        overdue = sum(1 for t in tasks if t.due_at <= at)

        def local(moment: datetime) -> str:
            return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")

        task_lines = [
            DigestLine(
                task_title(t, self.region),
                f"owed since {local(t.due_at)}" if t.due_at <= at else f"snoozed until {local(t.due_at)}",
            )
            for t in tasks
        ]
        missed = [
            DigestLine(
                format_for_region(m.number, self.region) if m.number else "unknown number",
                ", ".join(x for x in (m.contact, local(m.started_at)) if x),
            )
            for m in await store.missed_calls(user.id, at - timedelta(hours=24))
        ]
        return digest_body(user.label, task_lines, missed, overdue, self.desk_url)
