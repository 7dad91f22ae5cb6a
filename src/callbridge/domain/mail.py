"""E-mail the hub sends: addresses, the outbox's retry schedule, the daily digest's text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from callbridge.domain.errors import CallbridgeError, InvalidInput

_ADDRESS = re.compile(
    r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
MAX_ATTEMPTS = 12  # about a day and a half of retries with the back-off below
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=4)


class MailUnavailable(CallbridgeError):
    """The SMTP server could not be reached or refused the message; the outbox retries."""

    code = "mail_unavailable"


def validate_address(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _ADDRESS.match(value):
        raise InvalidInput(f"{value!r} is not an e-mail address (name@example.com)")
    return value


def retry_after(attempts: int) -> timedelta:
    """How long the outbox waits after ``attempts`` failed tries: doubling, capped."""
    wait: timedelta = FIRST_RETRY * (2 ** max(0, attempts - 1))
    return min(LONGEST_RETRY, wait)


@dataclass(frozen=True, slots=True)
class DigestLine:
    text: str
    detail: str = ""


def digest_body(
    name: str, tasks: Sequence[DigestLine], missed: Sequence[DigestLine], overdue: int, link: str
) -> tuple[str, str]:
    """The daily digest's subject and plain-text body."""
    subject = f"callbridge: {len(tasks)} follow-up{'s' if len(tasks) != 1 else ''} open"
    if overdue:
        subject += f" ({overdue} overdue)"
    subject += f", {len(missed)} missed call{'s' if len(missed) != 1 else ''}"
    lines = [f"Hello {name},", ""]
    if tasks:
        lines.append(f"Calls you owe ({len(tasks)}, {overdue} overdue):")
        lines += [f"  - {t.text}" + (f" ({t.detail})" if t.detail else "") for t in tasks]
    else:
        lines.append("Nobody is waiting for a call from you.")
    lines.append("")
    if missed:
        lines.append(f"Missed calls in the last 24 hours ({len(missed)}):")
        lines += [f"  - {m.text}" + (f" ({m.detail})" if m.detail else "") for m in missed]
    else:
        lines.append("No missed calls in the last 24 hours.")
    if link:
        lines += ["", f"Your desk: {link}"]
    lines += ["", "You get this e-mail because you turned on the daily digest in callbridge."]
    return subject, "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class OutboxMail:
    id: int
    key: str
    to_address: str
    subject: str
    body: str
    attempts: int
    status: str
    last_error: str
    next_attempt_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class DigestUser:
    id: int
    name: str
    label: str
    email: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class MissedCall:
    id: int
    number: str
    started_at: datetime
    contact: str
