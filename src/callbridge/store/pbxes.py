"""SQL for configured PBXs. Their secrets pass through :class:`store.secrets.SecretBox` only."""

from __future__ import annotations

import hashlib
import secrets as pysecrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.errors import Conflict, NotFound
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.store.agents import agent_bans
from callbridge.store.directory import extension_users
from callbridge.store.secrets import SecretBox
from callbridge.store.tables import now, pbxes, webhook_inbox


def _record(row: Any) -> PbxRecord:
    return PbxRecord(
        id=row.id,
        name=row.name,
        kind=PbxKind(row.kind),
        config=dict(row.config or {}),
        webhook_key=row.webhook_key,
        enabled=bool(row.enabled),
        created_at=row.created_at,
        last_event_at=row.last_event_at,
        link_up=bool(row.link_up),
        link_detail=row.link_detail or "",
        link_checked_at=row.link_checked_at,
    )


class SqlPbxStore:
    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    async def add(
        self, name: str, kind: PbxKind, config: dict[str, Any], secrets: dict[str, str]
    ) -> PbxRecord:
        if await self.find(name) is not None:
            raise Conflict(f"a PBX named {name!r} already exists")
        result = await self.session.execute(
            insert(pbxes)
            .values(
                name=name,
                kind=kind.value,
                config=config,
                secrets=self.box.encrypt(secrets),
                webhook_key=pysecrets.token_urlsafe(24),
                enabled=True,
                created_at=now(),
            )
            .returning(*pbxes.c)
        )
        return _record(result.one())

    async def find(self, name: str) -> PbxRecord | None:
        row = (await self.session.execute(select(pbxes).where(pbxes.c.name == name))).first()
        return _record(row) if row else None

    async def get(self, name: str) -> PbxRecord:
        record = await self.find(name)
        if record is None:
            raise NotFound(f"no PBX named {name!r}")
        return record

    async def by_webhook_key(self, key: str) -> PbxRecord | None:
        row = (await self.session.execute(select(pbxes).where(pbxes.c.webhook_key == key))).first()
        return _record(row) if row else None

    async def all(self) -> list[PbxRecord]:
        rows = (await self.session.execute(select(pbxes).order_by(pbxes.c.name))).all()
        return [_record(r) for r in rows]

    async def secrets(self, name: str) -> dict[str, str]:
        row = (await self.session.execute(select(pbxes.c.secrets).where(pbxes.c.name == name))).first()
        if row is None:
            raise NotFound(f"no PBX named {name!r}")
        return self.box.decrypt(row.secrets)

    async def update_secrets(self, name: str, values: dict[str, str]) -> None:
        merged = {**await self.secrets(name), **values}
        await self.session.execute(
            update(pbxes).where(pbxes.c.name == name).values(secrets=self.box.encrypt(merged))
        )

    async def replace_secrets(self, name: str, values: dict[str, str]) -> None:
        await self.session.execute(
            update(pbxes).where(pbxes.c.name == name).values(secrets=self.box.encrypt(values))
        )

    async def links(self) -> list[tuple[PbxRecord, dict[str, str], str]]:
        """Every PBX with its secrets and a digest of what its link is built from (kind,
        settings, secrets, enabled), all from one SELECT, so a running hub builds a link and
        remembers its digest from the same moment, and sees a PBX edited by another process."""
        rows = (await self.session.execute(select(pbxes).order_by(pbxes.c.name))).all()
        out: list[tuple[PbxRecord, dict[str, str], str]] = []
        for row in rows:
            digest = hashlib.sha256()
            for part in (row.kind, repr(sorted((row.config or {}).items())), row.secrets, row.enabled):
                digest.update(str(part).encode() + b"\0")
            out.append((_record(row), self.box.decrypt(row.secrets), digest.hexdigest()))
        return out

    async def remove(self, name: str) -> None:
        """Delete a PBX with what only it used (extension map, bans, agent token, dialplan token,
        webhooks not yet read). Its calls stay in the log under its name."""
        await self.get(name)
        for table in (extension_users, agent_bans, webhook_inbox):
            await self.session.execute(delete(table).where(table.c.pbx == name))
        await self.session.execute(delete(pbxes).where(pbxes.c.name == name))

    async def update_config(self, name: str, config: dict[str, Any]) -> None:
        await self.session.execute(update(pbxes).where(pbxes.c.name == name).values(config=config))

    async def set_enabled(self, name: str, enabled: bool) -> None:
        await self.session.execute(update(pbxes).where(pbxes.c.name == name).values(enabled=enabled))

    async def record_status(
        self, name: str, up: bool, detail: str, last_event_at: datetime | None, at: datetime
    ) -> None:
        values: dict[str, Any] = {"link_up": up, "link_detail": detail[:500], "link_checked_at": at}
        if last_event_at is not None:
            values["last_event_at"] = last_event_at
        await self.session.execute(update(pbxes).where(pbxes.c.name == name).values(**values))
