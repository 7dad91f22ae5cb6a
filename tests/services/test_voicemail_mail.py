"""The e-mail for a new voicemail, through the mail outbox to a real SMTP server (aiosmtpd on
loopback): sent to the mailbox's user who opted in, to nobody else, once per message."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from tests.agent.conftest import add_agent_pbx
from tests.conftest import add_user, api_token
from tests.services.test_mail_outbox import Inbox, sender, smtp  # noqa: F401 (smtp: a fixture)

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput
from callbridge.services.mail import MailWorker
from callbridge.services.voicemails import MessageLeft
from callbridge.store.mail import MailPrefs

ADA = "+14155550100"


def left(n: int, mailbox: str = "7001@default") -> MessageLeft:
    return MessageLeft(
        mailbox=mailbox,
        reference=f"default/{mailbox[:4]}/msg-{n}",
        caller_number=ADA,
        caller_name="Ada",
        received_at=datetime(2026, 12, 6, 10, 12, 40, tzinfo=UTC),
        duration_seconds=75,
    )


async def test_a_new_voicemail_mails_its_mailboxs_user_who_opted_in(
    hub: Hub,
    smtp: tuple[Inbox, int],  # noqa: F811 (the fixture imported above)
) -> None:
    inbox, port = smtp
    await add_agent_pbx(hub, "office")
    ann = await add_user(hub, "ann", Role.AGENT)
    bob = await add_user(hub, "bob", Role.AGENT)
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "7001", ann.id)
        await repos.extensions.map("office", "7002", bob.id)
        await repos.directory.create(
            ContactInput(kind=ContactKind.PERSON, name="Ada Lovelace", phones=(Phone("(415) 555-0100", ADA),))
        )
        await repos.mail.set_prefs(ann.id, MailPrefs("ann@example.com", False, True))
        await repos.mail.set_prefs(bob.id, MailPrefs("bob@example.com", True, False))  # digest only
    hub.mail = MailWorker(hub._mail_units, sender(port), digest_hour=0)
    assert hub.voicemails is not None
    await hub.voicemails.announce("office", left(1), None)
    await hub.voicemails.announce("office", left(1), None)  # announced again: no second e-mail
    await hub.voicemails.announce("office", left(2, "7002@default"), None)  # bob: not opted in
    assert await hub.mail.send_due() == 1
    [(to, message)] = inbox.messages
    assert to == ["ann@example.com"]
    assert message["Subject"] == "callbridge: voicemail from (415) 555-0100, Ada Lovelace, Ada (1:15)"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "A new voicemail in mailbox 7001@default:" in body
    assert "Left:   2026-12-06 10:12 UTC" in body and "Length: 1:15" in body


async def test_the_voicemail_e_mail_opt_in_is_kept_and_needs_an_address(app: object, hub: Hub) -> None:
    await add_user(hub, "ann", Role.AGENT)
    token = await api_token(hub, "ann")
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as api:
        refused = await api.put("/api/v1/me/email", json={"email": "", "new_voicemail": True})
        assert refused.status_code == 400
        assert "needs an e-mail address" in refused.json()["error"]["message"]
        on = await api.put("/api/v1/me/email", json={"email": "ann@example.com", "new_voicemail": True})
        assert on.json() == {"email": "ann@example.com", "daily_digest": False, "new_voicemail": True}
        # A client that knows only the digest leaves the voicemail opt-in as it was.
        kept = await api.put("/api/v1/me/email", json={"email": "ann@example.com", "daily_digest": True})
        assert kept.json()["new_voicemail"] is True
        assert (await api.get("/api/v1/me/email")).json()["new_voicemail"] is True
