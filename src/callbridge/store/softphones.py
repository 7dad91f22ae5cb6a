"""SQL for the softphone: one SIP account per user. The SIP secret and the TURN credentials are
encrypted with the hub's secret box (like a PBX's secrets); the page-facing read never holds the
SIP secret, which leaves only through a one-time nonce (:meth:`SqlSoftphones.take_secret`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.store.secrets import SecretBox
from callbridge.store.tables import UtcDateTime, metadata, now

softphones = Table(
    "softphones",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("ws_url", String(500), nullable=False),
    Column("sip_uri", String(300), nullable=False),
    Column("auth_user", String(128), nullable=False),
    # STUN/TURN servers without their credentials ({"urls": [...], "username": ...}); the
    # credentials sit in ``secrets`` under "turn:<index>".
    Column("ice_servers", JSON, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("nonce_hash", String(64), nullable=True),
    Column("nonce_expires_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False, default=now),
)


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username:
            out["username"] = self.username
        if self.credential:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, slots=True)
class Softphone:
    """A user's SIP account, without the SIP secret."""

    user_id: int
    enabled: bool
    ws_url: str
    sip_uri: str
    auth_user: str
    ice_servers: tuple[IceServer, ...]
    has_secret: bool


def _hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


class SqlSoftphones:
    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    async def _row(self, user_id: int) -> Any:
        return (await self.session.execute(select(softphones).where(softphones.c.user_id == user_id))).first()

    def _of(self, row: Any, stored: dict[str, str]) -> Softphone:
        servers = tuple(
            IceServer(
                urls=tuple(s.get("urls", ())),
                username=str(s.get("username", "")),
                credential=stored.get(f"turn:{i}", ""),
            )
            for i, s in enumerate(row.ice_servers or [])
        )
        return Softphone(
            user_id=row.user_id,
            enabled=bool(row.enabled),
            ws_url=row.ws_url,
            sip_uri=row.sip_uri,
            auth_user=row.auth_user,
            ice_servers=servers,
            has_secret=bool(stored.get("secret")),
        )

    async def get(self, user_id: int) -> Softphone | None:
        row = await self._row(user_id)
        if row is None:
            return None
        return self._of(row, self.box.decrypt(row.secrets))

    async def all(self) -> dict[int, Softphone]:
        """Every user's softphone, by user id (the admin page)."""
        rows = (await self.session.execute(select(softphones))).all()
        return {row.user_id: self._of(row, self.box.decrypt(row.secrets)) for row in rows}

    async def put(
        self,
        user_id: int,
        *,
        enabled: bool,
        ws_url: str,
        sip_uri: str,
        auth_user: str,
        ice_servers: list[IceServer],
        secret: str | None,
    ) -> Softphone:
        """Create or replace the account. ``secret=None`` keeps the stored secret; any pending
        nonce is dropped (a tab registering with the old settings fetches again)."""
        row = await self._row(user_id)
        old = self.box.decrypt(row.secrets) if row is not None else {}
        stored = {"secret": secret if secret is not None else old.get("secret", "")}
        for i, server in enumerate(ice_servers):
            if server.credential:
                stored[f"turn:{i}"] = server.credential
        values: dict[str, Any] = {
            "enabled": enabled,
            "ws_url": ws_url,
            "sip_uri": sip_uri,
            "auth_user": auth_user,
            "ice_servers": [
                {"urls": list(s.urls), **({"username": s.username} if s.username else {})}
                for s in ice_servers
            ],
            "secrets": self.box.encrypt(stored),
            "nonce_hash": None,
            "nonce_expires_at": None,
            "updated_at": now(),
        }
        dialect = self.session.get_bind().dialect.name
        maker = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = maker(softphones).values(user_id=user_id, **values)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=[softphones.c.user_id], set_=values)
        )
        found = await self.get(user_id)
        assert found is not None
        return found

    async def delete(self, user_id: int) -> bool:
        result = await self.session.execute(softphones.delete().where(softphones.c.user_id == user_id))
        return bool(getattr(result, "rowcount", 0))

    async def set_nonce(self, user_id: int, nonce: str, expires_at: datetime) -> bool:
        """Store the user's one pending nonce (a newer one replaces it); False if no account."""
        result = await self.session.execute(
            update(softphones)
            .where(softphones.c.user_id == user_id, softphones.c.enabled.is_(True))
            .values(nonce_hash=_hash(nonce), nonce_expires_at=expires_at)
        )
        return bool(getattr(result, "rowcount", 0))

    async def take_secret(self, user_id: int, nonce: str, at: datetime) -> str | None:
        """The SIP secret for a live nonce of this user, which is used up by the same statement
        (two fetches with one nonce: one wins, even on two workers). None otherwise."""
        result = await self.session.execute(
            update(softphones)
            .where(
                softphones.c.user_id == user_id,
                softphones.c.enabled.is_(True),
                softphones.c.nonce_hash == _hash(nonce),
                softphones.c.nonce_expires_at > at,
            )
            .values(nonce_hash=None, nonce_expires_at=None)
        )
        if not getattr(result, "rowcount", 0):
            return None
        row = await self._row(user_id)
        return self.box.decrypt(row.secrets).get("secret") or None
