"""Users and what their role lets them do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from callbridge.domain.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


class Role(StrEnum):
    ADMIN = "admin"  # everything
    MANAGER = "manager"  # all calls and contacts, no settings
    AGENT = "agent"  # their own calls, and calls of contacts they own


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    active: bool = True
    display_name: str = ""
    session_version: int = 1
    last_login_at: datetime | None = None
    time_zone: str = ""  # an IANA name; empty: the hub's (CALLBRIDGE_TIME_ZONE)

    def zone_or(self, default: str) -> str:
        """The zone this user's times are shown in."""
        return self.time_zone or default

    @property
    def label(self) -> str:
        return self.display_name or self.name

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def sees_all_calls(self) -> bool:
        return self.role in (Role.ADMIN, Role.MANAGER)


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def validate_username(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidInput(
            "a user name is 1 to 64 letters, digits or . _ @ - and starts with a letter or digit"
        )
    return name


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError as exc:
        raise InvalidInput(f"unknown role {value!r}; use admin, manager or agent") from exc


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    return password
