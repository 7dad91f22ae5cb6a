"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/versions`` create them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    any_,
    bindparam,
    false,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; always gives back UTC-aware ones (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None] | None:
        # SQLite gives the stored text: parsed straight to an aware datetime in one step, where
        # the generic path makes three calls per value (a page of the call log reads 200).
        if dialect.name == "sqlite":
            return _utc_from_text
        return super().result_processor(dialect, coltype)


def _utc_from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def in_list(session: AsyncSession, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values``. On PostgreSQL as ``= ANY(array)``: one statement text whatever the
    number of values, so a batch's statements are prepared once, not once per list length."""
    items = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, items, type_=postgresql.ARRAY(column.type)))
    return column.in_(items)


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    # Bumped on password change / disable: every session cookie issued before is void.
    Column("session_version", Integer, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("last_login_at", UtcDateTime, nullable=True),
    # An IANA zone name; empty: the hub's default (CALLBRIDGE_TIME_ZONE).
    Column("time_zone", String(64), nullable=False, server_default=""),
    # The live desk's alerts for an incoming call, each opted into by the user (Account page).
    Column("ring_sound", Boolean, nullable=False, server_default=false()),
    Column("desktop_notifications", Boolean, nullable=False, server_default=false()),
    # E-mail (migration 0019): where, and whether the user wants the daily digest.
    Column("email", String(254), nullable=False, server_default=""),
    Column("email_digest", Boolean, nullable=False, server_default=false()),
    # An e-mail for each new voicemail in the user's mailboxes (migration 0024).
    Column("email_voicemail", Boolean, nullable=False, server_default=false()),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("last_used_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

# One row per signed-in browser. Sign-out deletes it, so a copied or replayed cookie is refused
# afterwards; ``id`` is the SHA-256 of the random id the (signed) cookie carries.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False, default=now),
    Index("ix_login_failures_key_at", "key", "at"),
)

pbxes = Table(
    "pbxes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    # Settings that are not secret (host, port, trunk patterns, base URL, …).
    Column("config", JSON, nullable=False),
    # Fernet token of a JSON object of secrets; only store.secrets reads it.
    Column("secrets", Text, nullable=False, server_default=""),
    # Part of the webhook URL; unguessable, not a secret by itself (the signature is).
    Column("webhook_key", String(64), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("last_event_at", UtcDateTime, nullable=True),
    # Written by the hub process that runs the link (migration 0003).
    Column("link_up", Boolean, nullable=False, server_default="0"),
    Column("link_detail", String(500), nullable=False, server_default=""),
    Column("link_checked_at", UtcDateTime, nullable=True),
)

# Verified Yeastar webhook bodies, stored before the PBX gets its 200 and deleted once ingested
# (migration 0006). Read in id order: the order they arrived.
webhook_inbox = Table(
    "webhook_inbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Index("ix_webhook_inbox_pbx_id", "pbx", "id"),
)

# One row per hub process that asked "can the database write?" (readiness): the answer is a
# real write and commit, which a read-only or full database refuses while SELECT 1 still works.
write_probe = Table(
    "write_probe",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
)

# What a PBX link has processed already, by key (a webhook body's hash, a decoded event's
# digest): a replay or a retry after a restart is known as such. Kept for SEEN_KEEP (store/inbox).
webhook_seen = Table(
    "webhook_seen",
    metadata,
    Column("pbx", String(64), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("seen_at", UtcDateTime, nullable=False),
    Index("ix_webhook_seen_seen_at", "seen_at"),
)
