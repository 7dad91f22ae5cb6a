"""E-mail through a real SMTP server (aiosmtpd, started here on loopback): the daily digest
arrives with the user's follow-ups and missed calls; a server that is down keeps the e-mail and
retries it later; a server that hangs never holds up the desk."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from tests.conftest import add_user
from tests.services.test_followup_tasks import ADA, T0, missed

from callbridge.config import Settings
from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput
from callbridge.services.mail import MailWorker, SmtpConfig, SmtpSender
from callbridge.store.mail import MailPrefs

PASSWORD = "smtp-pass-never-logged"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def sender(port: int, timeout: float = 5.0) -> SmtpSender:
    return SmtpSender(
        SmtpConfig(
            host="127.0.0.1",
            port=port,
            sender="hub@example.com",
            security="none",
            timeout=timeout,
        )
    )


async def _people(hub: Hub) -> dict[str, int]:
    users = {n: (await add_user(hub, n, Role.AGENT)).id for n in ("ann", "bob")}
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "1001", users["ann"])
        await repos.directory.create(
            ContactInput(kind=ContactKind.PERSON, name="Ada Lovelace", phones=(Phone("(415) 555-0100", ADA),))
        )
        await repos.mail.set_prefs(users["ann"], MailPrefs("ann@example.com", True))
        await repos.mail.set_prefs(users["bob"], MailPrefs("bob@example.com", False))  # not opted in
    return users


async def test_the_daily_digest_arrives_with_the_right_content(hub: Hub, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    await _people(hub)
    await hub.handle_events(missed(ADA, ("1001",), T0))
    await hub.handle_events(missed(ADA, ("1001",), T0 + timedelta(minutes=2)))
    worker = MailWorker(hub._mail_units, sender(port), digest_hour=0, desk_url="https://hub.example.com/desk")
    assert await worker.queue_digests() == 1  # ann only
    assert await worker.queue_digests() == 0  # once a day
    assert await worker.send_due() == 1
    [(to, message)] = inbox.messages
    assert to == ["ann@example.com"]
    assert message["From"] == "hub@example.com"
    assert message["Subject"] == "callbridge: 1 follow-up open (1 overdue), 2 missed calls"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Hello ann," in body
    assert "call back (415) 555-0100, Ada Lovelace, missed 2× today (owed since" in body
    assert "Missed calls in the last 24 hours (2):" in body
    assert body.count("  - (415) 555-0100 (Ada Lovelace, ") == 2
    assert "Your desk: https://hub.example.com/desk" in body
    async with hub.db.unit() as repos:
        [row] = await repos.mail.all()
    assert (row.status, row.attempts, row.sent_at is not None) == ("sent", 1, True)


async def test_smtp_down_keeps_the_mail_and_retries_with_back_off(
    hub: Hub, smtp: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, port = smtp
    await _people(hub)
    now = datetime.now(UTC) + timedelta(seconds=1)  # the queued mail is due by then
    clock = [now]
    down = SmtpSender(
        SmtpConfig(
            host="127.0.0.1",
            port=free_port(),  # nothing listens there
            sender="hub@example.com",
            security="none",
            username="hub",
            password=PASSWORD,
            timeout=5,
        )
    )
    worker = MailWorker(hub._mail_units, down, digest_hour=0, clock=lambda: clock[0])
    assert await worker.queue_digests() == 1
    with caplog.at_level(logging.DEBUG):
        assert await worker.send_due() == 0
    async with hub.db.unit() as repos:
        [row] = await repos.mail.all()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "refused the connection" in row.last_error
    assert row.next_attempt_at == now + timedelta(seconds=30)
    assert PASSWORD not in caplog.text and PASSWORD not in row.last_error
    assert PASSWORD not in repr(down.config)
    # Second failure: the wait doubles.
    clock[0] = now + timedelta(seconds=31)
    assert await worker.send_due() == 0
    async with hub.db.unit() as repos:
        [row] = await repos.mail.all()
    assert row.attempts == 2 and row.next_attempt_at == clock[0] + timedelta(seconds=60)
    # The server is back: nothing goes before its time, then it does.
    worker.sender = sender(port)
    clock[0] += timedelta(seconds=30)
    assert await worker.send_due() == 0 and inbox.messages == []
    clock[0] += timedelta(seconds=31)
    assert await worker.send_due() == 1
    assert [to for to, _ in inbox.messages] == [["ann@example.com"]]


async def test_a_hanging_smtp_server_never_holds_up_the_desk(settings: Settings) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # takes connections and never says a word
    port = silent.getsockname()[1]
    from tests.conftest import FAST_HASHER

    hub = Hub.build(
        settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_security": "none",
                "smtp_timeout_seconds": 3,
            }
        ),
        hasher=FAST_HASHER,
    )
    await hub.prepare()
    try:
        assert hub.mail is not None
        await _people(hub)
        async with hub.db.unit() as repos:
            await repos.mail.enqueue("test:1", "ann@example.com", "hello", "body")
        hub.start_recordings()  # the lifespan starts the mail worker with the other workers
        hub.mail.wake()
        await asyncio.sleep(0.3)  # the worker is now waiting on the silent server
        started = time.monotonic()
        await hub.handle_events(missed(ADA, ("1001",), T0))
        assert time.monotonic() - started < 1.0
        async with hub.db.unit() as repos:
            found, _ = await repos.tasks.search(status=None, assignee_id=None, any_assignee=True)
        assert len(found) == 1
    finally:
        await hub.close()
        silent.close()


async def test_two_workers_never_take_the_same_mail(hub: Hub) -> None:
    async with hub.db.unit() as repos:
        await repos.mail.enqueue("test:1", "ann@example.com", "hello", "body")
        assert not await repos.mail.enqueue("test:1", "ann@example.com", "hello", "body")  # queued once
    at = datetime.now(UTC) + timedelta(seconds=1)
    async with hub.db.unit() as repos:
        assert [m.key for m in await repos.mail.due(at)] == ["test:1"]
    async with hub.db.unit() as repos:
        assert await repos.mail.due(at) == []  # the first worker holds it while it sends
    async with hub.db.unit() as repos:
        # A worker that died mid-send: the mail is taken again once the claim has run out.
        assert [m.key for m in await repos.mail.due(at + timedelta(minutes=6))] == ["test:1"]
