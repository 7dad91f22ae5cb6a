"""SQL for ERP connectors: their records (credentials through :class:`SecretBox` only), the ERP
record behind each synced contact, and the durable outbox of calls to write into each ERP.

A page of synced records is written with a handful of statements whatever its size (existing
links, companies and owners read in one query each; contacts, numbers and tags written with
executemany), so a first sync of 100,000 records is a few hundred transactions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    UniqueConstraint,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.connectors import (
    ConnectorKind,
    ConnectorRecord,
    ConnectorState,
    ConnectorStatus,
    ExternalRef,
    PageResult,
    SyncedContact,
)
from callbridge.domain.directory import ContactKind
from callbridge.domain.errors import Conflict, NotFound
from callbridge.store.calls import calls
from callbridge.store.directory import contact_phones, contact_tags, contacts
from callbridge.store.secrets import SecretBox
from callbridge.store.tables import UtcDateTime, in_list, metadata, now, users

connectors = Table(
    "connectors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("url", String(500), nullable=False),
    # Settings that are not secret (database, user name, sync interval, time zone, API flavour).
    Column("config", JSON, nullable=False),
    # Fernet token of a JSON object of credentials; only this module reads it, via SecretBox.
    Column("secrets", Text, nullable=False, server_default=""),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    # Per stream: how far the incremental sync has read ("since" and the next page's offset).
    Column("sync_state", JSON, nullable=False),
    Column("syncing", Boolean, nullable=False, server_default="0"),
    Column("last_sync_at", UtcDateTime, nullable=True),
    Column("last_error", String(500), nullable=False, server_default=""),
    Column("last_error_at", UtcDateTime, nullable=True),
    # Who syncs the connector now, until when (a worker of several; see ConnectorHub).
    Column("sync_lease_owner", String(64), nullable=False, server_default=""),
    Column("sync_lease_until", UtcDateTime, nullable=True),
)

contact_externals = Table(
    "contact_externals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("connector_id", Integer, ForeignKey("connectors.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True),
    # ``<doctype or model>/<name or id>``
    Column("ext_id", String(200), nullable=False),
    Column("url", String(500), nullable=False, server_default=""),
    Column("modified", String(40), nullable=False, server_default=""),
    # The sync run that last saw the record in the ERP; older ones were deleted or merged there.
    Column("seen_run", Integer, nullable=False, server_default="0"),
    UniqueConstraint("connector_id", "ext_id", name="uq_contact_externals_connector_id_ext_id"),
)

# The outbox: one row per call and connector. Ingest bumps ``version`` in the transaction that
# changes the call; the pusher writes the call and records the version it wrote. A call is
# waiting while ``version > pushed_version``.
connector_calls = Table(
    "connector_calls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("connector_id", Integer, ForeignKey("connectors.id", ondelete="CASCADE"), nullable=False),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("pushed_version", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", UtcDateTime, nullable=False, index=True),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("pushed_at", UtcDateTime, nullable=True),
    Column("last_error", String(500), nullable=False, server_default=""),
    Column("ext_id", String(200), nullable=False, server_default=""),
    Column("url", String(500), nullable=False, server_default=""),
    Column("recording_url", String(1000), nullable=False, server_default=""),
    UniqueConstraint("connector_id", "call_id", name="uq_connector_calls_connector_id_call_id"),
)


@dataclass(frozen=True, slots=True)
class Written:
    """A call the ERP took: where it went (``ext_id``, ``url``), a note, the recording link sent."""

    job: OutboxJob
    ext_id: str
    url: str
    note: str = ""
    recording_url: str = ""


@dataclass(frozen=True, slots=True)
class OutboxJob:
    id: int
    connector_id: int
    call_id: int
    version: int
    attempts: int
    ext_id: str
    recording_url: str
    changed_at: datetime


def synced_external_id(connector: str, ext_id: str) -> str:
    """``<connector>:<ext id>``, at most 200 characters (a long one ends with its digest)."""
    text = f"{connector}:{ext_id}"
    if len(text) <= 200:
        return text
    return text[:150] + "#" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _record(row: Any) -> ConnectorRecord:
    state = ConnectorState.OK
    if not row.enabled:
        state = ConnectorState.DISABLED
    elif row.syncing:
        state = ConnectorState.SYNCING
    elif row.last_error:
        state = ConnectorState.FAILING
    elif row.last_sync_at is None:
        state = ConnectorState.NEW
    return ConnectorRecord(
        id=row.id,
        name=row.name,
        kind=ConnectorKind(row.kind),
        url=row.url,
        config=dict(row.config or {}),
        enabled=bool(row.enabled),
        state=state,
        last_sync_at=row.last_sync_at,
        last_error=row.last_error or "",
        created_at=row.created_at,
    )


class SqlConnectors:
    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    def _dialect_insert(self, table: Table) -> Any:
        if self.session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- records ------------------------------------------------------------------------------------

    async def add(
        self, name: str, kind: ConnectorKind, url: str, config: dict[str, Any], secrets: dict[str, str]
    ) -> ConnectorRecord:
        if await self.find(name) is not None:
            raise Conflict(f"a connector named {name!r} already exists")
        result = await self.session.execute(
            insert(connectors)
            .values(
                name=name,
                kind=kind.value,
                url=url,
                config=config,
                secrets=self.box.encrypt(secrets),
                enabled=True,
                created_at=now(),
                sync_state={},
            )
            .returning(*connectors.c)
        )
        return _record(result.one())

    async def find(self, name: str) -> ConnectorRecord | None:
        row = (await self.session.execute(select(connectors).where(connectors.c.name == name))).first()
        return _record(row) if row else None

    async def get(self, name: str) -> ConnectorRecord:
        found = await self.find(name)
        if found is None:
            raise NotFound(f"no connector named {name!r}")
        return found

    async def by_id(self, connector_id: int) -> ConnectorRecord | None:
        row = (await self.session.execute(select(connectors).where(connectors.c.id == connector_id))).first()
        return _record(row) if row else None

    async def all(self) -> list[ConnectorRecord]:
        rows = (await self.session.execute(select(connectors).order_by(connectors.c.name))).all()
        return [_record(r) for r in rows]

    async def enabled_ids(self) -> list[int]:
        query = select(connectors.c.id).where(connectors.c.enabled.is_(True))
        return [int(i) for i in (await self.session.execute(query)).scalars()]

    async def take_sync_lease(
        self, connector_id: int, owner: str, at: datetime, until: datetime, *, due_before: datetime | None
    ) -> bool:
        """Make ``owner`` the one who syncs the connector until ``until``, unless another worker
        holds an unexpired lease or (with ``due_before``) the last sync is newer than that: one
        conditional UPDATE, so of several workers asking at once exactly one gets it."""
        conditions = [
            connectors.c.id == connector_id,
            or_(
                connectors.c.sync_lease_until.is_(None),
                connectors.c.sync_lease_until <= at,
                connectors.c.sync_lease_owner == owner,
            ),
        ]
        if due_before is not None:
            conditions.append(
                or_(connectors.c.last_sync_at.is_(None), connectors.c.last_sync_at <= due_before)
            )
        result = await self.session.execute(
            update(connectors).where(*conditions).values(sync_lease_owner=owner, sync_lease_until=until)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def renew_sync_lease(self, connector_id: int, owner: str, until: datetime) -> bool:
        result = await self.session.execute(
            update(connectors)
            .where(connectors.c.id == connector_id, connectors.c.sync_lease_owner == owner)
            .values(sync_lease_until=until)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def release_sync_lease(self, connector_id: int, owner: str) -> None:
        await self.session.execute(
            update(connectors)
            .where(connectors.c.id == connector_id, connectors.c.sync_lease_owner == owner)
            .values(sync_lease_owner="", sync_lease_until=None)
        )

    async def secrets(self, name: str) -> dict[str, str]:
        row = (
            await self.session.execute(select(connectors.c.secrets).where(connectors.c.name == name))
        ).first()
        if row is None:
            raise NotFound(f"no connector named {name!r}")
        return self.box.decrypt(row.secrets)

    async def remove(self, name: str) -> None:
        record = await self.get(name)
        # Its contacts go with it: the ERP owned them.
        owned = select(contact_externals.c.contact_id).where(contact_externals.c.connector_id == record.id)
        await self.session.execute(delete(contacts).where(contacts.c.id.in_(owned)))
        await self.session.execute(delete(connectors).where(connectors.c.id == record.id))

    async def set_enabled(self, name: str, enabled: bool) -> None:
        await self.session.execute(
            update(connectors).where(connectors.c.name == name).values(enabled=enabled)
        )

    async def sync_state(self, connector_id: int) -> dict[str, Any]:
        query = select(connectors.c.sync_state).where(connectors.c.id == connector_id)
        return dict((await self.session.execute(query)).scalar() or {})

    async def save_sync_state(
        self,
        connector_id: int,
        state: dict[str, Any],
        *,
        syncing: bool | None = None,
        synced_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"sync_state": state}
        if syncing is not None:
            values["syncing"] = syncing
        if synced_at is not None:
            values["last_sync_at"] = synced_at
        if error is not None:
            values["last_error"] = error[:500]
            values["last_error_at"] = now() if error else None
        await self.session.execute(update(connectors).where(connectors.c.id == connector_id).values(**values))

    async def note_error(self, connector_id: int, error: str) -> None:
        await self.session.execute(
            update(connectors)
            .where(connectors.c.id == connector_id)
            .values(last_error=error[:500], last_error_at=now() if error else None)
        )

    async def statuses(self) -> list[ConnectorStatus]:
        records = await self.all()
        counted = (
            await self.session.execute(
                select(contact_externals.c.connector_id, func.count()).group_by(
                    contact_externals.c.connector_id
                )
            )
        ).all()
        contacts_of = {int(r[0]): int(r[1]) for r in counted}
        waiting = connector_calls.c.version > connector_calls.c.pushed_version
        rows = (
            await self.session.execute(
                select(
                    connector_calls.c.connector_id,
                    func.sum(case((waiting, 1), else_=0)),
                    # Written into the ERP: not waiting, and the ERP has a record of it.
                    func.sum(case((and_(~waiting, connector_calls.c.ext_id != ""), 1), else_=0)),
                ).group_by(connector_calls.c.connector_id)
            )
        ).all()
        calls_of = {int(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows}
        return [
            ConnectorStatus(
                record=r,
                contacts=contacts_of.get(r.id, 0),
                calls_waiting=calls_of.get(r.id, (0, 0))[0],
                calls_pushed=calls_of.get(r.id, (0, 0))[1],
            )
            for r in records
        ]

    # -- directory sync -------------------------------------------------------------------------------

    async def apply_page(self, connector_id: int, items: Sequence[SyncedContact], run: int) -> PageResult:
        """Create or update one contact per record (the ERP's fields win), by the record's ext id."""
        if not items:
            return PageResult(0, 0, frozenset())
        connector_name = (
            await self.session.execute(select(connectors.c.name).where(connectors.c.id == connector_id))
        ).scalar_one()
        # The last spelling of a record in the page wins (a page can list it twice when it changed).
        by_ext = {item.ext_id: item for item in items}
        ext_ids = list(by_ext)
        found = (
            await self.session.execute(
                select(contact_externals.c.ext_id, contact_externals.c.contact_id).where(
                    contact_externals.c.connector_id == connector_id,
                    in_list(self.session, contact_externals.c.ext_id, ext_ids),
                )
            )
        ).all()
        existing = {r.ext_id: int(r.contact_id) for r in found}
        companies_wanted = {i.company_ext_id for i in by_ext.values() if i.company_ext_id}
        company_ids: dict[str, int] = {}
        if companies_wanted:
            rows = (
                await self.session.execute(
                    select(contact_externals.c.ext_id, contact_externals.c.contact_id)
                    .select_from(
                        contact_externals.join(contacts, contacts.c.id == contact_externals.c.contact_id)
                    )
                    .where(
                        contact_externals.c.connector_id == connector_id,
                        contacts.c.kind == ContactKind.COMPANY.value,
                        in_list(self.session, contact_externals.c.ext_id, sorted(companies_wanted)),
                    )
                )
            ).all()
            company_ids = {r.ext_id: int(r.contact_id) for r in rows}
        owners = await self._owner_ids({i.owner for i in by_ext.values() if i.owner})
        stamp = now()

        def values(item: SyncedContact) -> dict[str, Any]:
            company = company_ids.get(item.company_ext_id) if item.kind is ContactKind.PERSON else None
            return {
                "kind": item.kind.value,
                "name": item.name,
                "name_folded": item.name.casefold(),
                "company_id": company,
                "email": item.email,
                "owner_id": owners.get(item.owner.casefold()) if item.owner else None,
                "updated_at": stamp,
            }

        new = [i for i in by_ext.values() if i.ext_id not in existing]
        old = [i for i in by_ext.values() if i.ext_id in existing]
        ids: dict[str, int] = dict(existing)
        if new:
            # The contact's external id names its ERP record ("erp:Contact/CONT-0001"): unique,
            # it also pairs each new row with its record in one multi-row INSERT … RETURNING.
            labels = {synced_external_id(connector_name, i.ext_id): i.ext_id for i in new}
            new_rows = [
                {
                    **values(i),
                    "notes": "",
                    "created_at": stamp,
                    "external_id": synced_external_id(connector_name, i.ext_id),
                }
                for i in new
            ]
            result = await self.session.execute(
                insert(contacts).returning(contacts.c.id, contacts.c.external_id), new_rows
            )
            for new_id, label in result.all():
                ids[labels[label]] = int(new_id)
            await self.session.execute(
                insert(contact_externals),
                [
                    {
                        "connector_id": connector_id,
                        "contact_id": ids[i.ext_id],
                        "ext_id": i.ext_id,
                        "url": i.url[:500],
                        "modified": i.modified[:40],
                        "seen_run": run,
                    }
                    for i in new
                ],
            )
        if old:
            await self.session.execute(
                update(contacts)
                .where(contacts.c.id == bindparam("b_id"))
                .values({k: bindparam(k) for k in values(old[0])}),
                [{"b_id": existing[i.ext_id], **values(i)} for i in old],
            )
            await self.session.execute(
                update(contact_externals)
                .where(
                    contact_externals.c.connector_id == connector_id,
                    contact_externals.c.ext_id == bindparam("b_ext"),
                )
                .values(url=bindparam("b_url"), modified=bindparam("b_modified"), seen_run=run),
                [{"b_ext": i.ext_id, "b_url": i.url[:500], "b_modified": i.modified[:40]} for i in old],
            )
            old_ids = [existing[i.ext_id] for i in old]
            await self.session.execute(
                delete(contact_phones).where(in_list(self.session, contact_phones.c.contact_id, old_ids))
            )
            await self.session.execute(
                delete(contact_tags).where(in_list(self.session, contact_tags.c.contact_id, old_ids))
            )
        phone_rows = [
            {"contact_id": ids[i.ext_id], "raw": p.raw[:64], "number_key": p.key, "kind": p.kind.value}
            for i in by_ext.values()
            for p in i.phones
        ]
        if phone_rows:
            await self.session.execute(insert(contact_phones), phone_rows)
        tag_rows = [
            {"contact_id": ids[i.ext_id], "tag": t, "tag_folded": t.casefold()}
            for i in by_ext.values()
            for t in i.tags
        ]
        if tag_rows:
            await self.session.execute(insert(contact_tags), tag_rows)
        keys = frozenset(p.key for i in by_ext.values() for p in i.phones)
        return PageResult(len(new), len(old), keys)

    async def _owner_ids(self, names: Iterable[str]) -> dict[str, int]:
        wanted = {n.casefold() for n in names if n}
        wanted |= {n.split("@", 1)[0] for n in wanted if "@" in n}
        if not wanted:
            return {}
        rows = (
            await self.session.execute(
                select(users.c.id, users.c.name).where(func.lower(users.c.name).in_(sorted(wanted)))
            )
        ).all()
        by_name = {str(r.name).casefold(): int(r.id) for r in rows}
        out: dict[str, int] = {}
        for name in {n.casefold() for n in names if n}:
            found = by_name.get(name) or by_name.get(name.split("@", 1)[0])
            if found is not None:
                out[name] = found
        return out

    async def remove_records(self, connector_id: int, ext_ids: Sequence[str]) -> int:
        """Delete the contacts synced from these records (archived or deleted in the ERP)."""
        if not ext_ids:
            return 0
        owned = select(contact_externals.c.contact_id).where(
            contact_externals.c.connector_id == connector_id,
            in_list(self.session, contact_externals.c.ext_id, list(ext_ids)),
        )
        result = await self.session.execute(delete(contacts).where(contacts.c.id.in_(owned)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def mark_seen(self, connector_id: int, ext_ids: Sequence[str], run: int) -> None:
        if ext_ids:
            await self.session.execute(
                update(contact_externals)
                .where(
                    contact_externals.c.connector_id == connector_id,
                    in_list(self.session, contact_externals.c.ext_id, list(ext_ids)),
                )
                .values(seen_run=run)
            )

    async def analyze(self) -> None:
        """Refresh the planner's statistics of the directory's tables: a first sync grows them
        from nothing to 100,000 rows, and a planner that still thinks them empty (SQLite has no
        statistics until ANALYZE) may scan where an index would do."""
        for table in ("contacts", "contact_phones", "contact_tags", "contact_externals"):
            await self.session.execute(text(f"ANALYZE {table}"))
        if self.session.get_bind().dialect.name == "sqlite":
            # Fold the sync's pages into the database file now, not in the commit of some call
            # later (SQLite checkpoints its write-ahead log in whichever commit crosses the mark).
            await self.session.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))

    async def sweep(self, connector_id: int, run: int) -> int:
        """Delete the contacts whose ERP record was not seen in run ``run`` (deleted or merged)."""
        gone = select(contact_externals.c.contact_id).where(
            contact_externals.c.connector_id == connector_id, contact_externals.c.seen_run != run
        )
        result = await self.session.execute(delete(contacts).where(contacts.c.id.in_(gone)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def externals_of_contacts(self, contact_ids: Sequence[int]) -> dict[int, list[ExternalRef]]:
        out: dict[int, list[ExternalRef]] = {}
        if not contact_ids:
            return out
        rows = (
            await self.session.execute(
                select(
                    contact_externals.c.contact_id,
                    contact_externals.c.ext_id,
                    contact_externals.c.url,
                    connectors.c.name,
                    connectors.c.kind,
                )
                .select_from(
                    contact_externals.join(connectors, connectors.c.id == contact_externals.c.connector_id)
                )
                .where(contact_externals.c.contact_id.in_(list(contact_ids)))
                .order_by(connectors.c.name, contact_externals.c.ext_id)
            )
        ).all()
        for r in rows:
            out.setdefault(int(r.contact_id), []).append(
                ExternalRef(r.name, ConnectorKind(r.kind), r.ext_id, r.url)
            )
        return out

    async def ext_ids_for(self, connector_id: int, contact_ids: Sequence[int]) -> list[str]:
        if not contact_ids:
            return []
        rows = (
            await self.session.execute(
                select(contact_externals.c.contact_id, contact_externals.c.ext_id).where(
                    contact_externals.c.connector_id == connector_id,
                    contact_externals.c.contact_id.in_(list(contact_ids)),
                )
            )
        ).all()
        order = {cid: n for n, cid in enumerate(contact_ids)}
        return [r.ext_id for r in sorted(rows, key=lambda r: (order.get(r.contact_id, 99), r.ext_id))]

    async def user_emails(self, names: Sequence[str]) -> dict[str, str]:
        """Each named callbridge user's e-mail address, lower-cased (their user id in an ERP): the
        address on their account, else the name itself when it is one; none for the others."""
        if not names:
            return {}
        rows = (
            await self.session.execute(
                select(users.c.name, users.c.email).where(users.c.name.in_(set(names)))
            )
        ).all()
        out: dict[str, str] = {}
        for r in rows:
            address = str(r.email or "").strip() or (str(r.name) if "@" in str(r.name) else "")
            if address:
                out[str(r.name)] = address.lower()
        return out

    # -- the outbox -------------------------------------------------------------------------------------

    async def enqueue_calls(self, call_ids: Iterable[int], connector_ids: Sequence[int] | None = None) -> int:
        """Note that these calls changed: each enabled connector writes them (again)."""
        return await enqueue_call_changes(self.session, call_ids, connector_ids)

    async def claim(self, at: datetime, limit: int, lease: timedelta) -> list[OutboxJob]:
        """Jobs due now, moved ``lease`` ahead so another worker leaves them alone meanwhile.

        One statement (``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``): on SQLite the
        write lock is taken at once and given back with the commit, not held (or fought for
        with a read snapshot gone stale) across the event loop turns between a read and a write.
        """
        due = (
            select(connector_calls.c.id)
            .select_from(connector_calls.join(connectors, connectors.c.id == connector_calls.c.connector_id))
            .where(
                connector_calls.c.version > connector_calls.c.pushed_version,
                connector_calls.c.next_at <= at,
                connectors.c.enabled.is_(True),
            )
            .order_by(connector_calls.c.next_at, connector_calls.c.id)
            .limit(limit)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(of=connector_calls, skip_locked=True)
        rows = (
            await self.session.execute(
                update(connector_calls)
                .where(connector_calls.c.id.in_(due))
                .values(next_at=at + lease)
                .returning(*connector_calls.c)
            )
        ).all()
        return [
            OutboxJob(
                r.id,
                r.connector_id,
                r.call_id,
                r.version,
                r.attempts,
                r.ext_id,
                r.recording_url,
                r.changed_at,
            )
            for r in sorted(rows, key=lambda r: int(r.id))
        ]

    async def next_due_at(self) -> datetime | None:
        query = select(func.min(connector_calls.c.next_at)).where(
            connector_calls.c.version > connector_calls.c.pushed_version
        )
        found: datetime | None = (await self.session.execute(query)).scalar()
        return found

    async def pushed(self, written: Sequence[Written]) -> None:
        """Record calls written: each job's version is the one the ERP has now. One statement
        for the whole round (see :meth:`claim`: SQLite's write lock is held for one turn)."""
        if not written:
            return
        ext_id, url = bindparam("w_ext_id", type_=String()), bindparam("w_url", type_=String())
        version = bindparam("w_version", type_=Integer())
        stamp = bindparam("w_at", type_=UtcDateTime())
        await self.session.execute(
            update(connector_calls)
            .where(connector_calls.c.id == bindparam("w_id", type_=Integer()))
            .values(
                pushed_version=case(
                    (connector_calls.c.pushed_version < version, version),
                    else_=connector_calls.c.pushed_version,
                ),
                attempts=0,
                next_at=stamp,
                pushed_at=stamp,
                last_error=bindparam("w_note", type_=String()),
                ext_id=case((ext_id != "", ext_id), else_=connector_calls.c.ext_id),
                url=case((url != "", url), else_=connector_calls.c.url),
                recording_url=bindparam("w_recording_url", type_=String()),
            ),
            [
                {
                    "w_id": w.job.id,
                    "w_version": w.job.version,
                    "w_at": now(),
                    "w_note": w.note[:500],
                    "w_ext_id": w.ext_id[:200],
                    "w_url": w.url[:500],
                    "w_recording_url": w.recording_url[:1000],
                }
                for w in written
            ],
        )

    async def due_now(self, connector_id: int) -> None:
        """The connector's waiting calls may go now (it answered again after failures)."""
        await self.session.execute(
            update(connector_calls)
            .where(
                connector_calls.c.connector_id == connector_id,
                connector_calls.c.version > connector_calls.c.pushed_version,
                connector_calls.c.attempts > 0,
            )
            .values(next_at=now(), attempts=0)
        )

    async def retry(self, failed: Sequence[tuple[OutboxJob, str, datetime]]) -> None:
        """Record calls not written: (job, error, when to try again), one statement for all."""
        if not failed:
            return
        await self.session.execute(
            update(connector_calls)
            .where(connector_calls.c.id == bindparam("r_id", type_=Integer()))
            .values(
                attempts=connector_calls.c.attempts + 1,
                next_at=bindparam("r_at", type_=UtcDateTime()),
                last_error=bindparam("r_error", type_=String()),
            ),
            [{"r_id": job.id, "r_at": at, "r_error": error[:500]} for job, error, at in failed],
        )

    async def externals_of_call(self, call_id: int) -> list[ExternalRef]:
        rows = (
            await self.session.execute(
                select(connector_calls.c.ext_id, connector_calls.c.url, connectors.c.name, connectors.c.kind)
                .select_from(
                    connector_calls.join(connectors, connectors.c.id == connector_calls.c.connector_id)
                )
                .where(connector_calls.c.call_id == call_id, connector_calls.c.ext_id != "")
                .order_by(connectors.c.name)
            )
        ).all()
        return [ExternalRef(r.name, ConnectorKind(r.kind), r.ext_id, r.url) for r in rows]

    async def call_exists(self, call_id: int) -> bool:
        return (
            await self.session.execute(select(calls.c.id).where(calls.c.id == call_id))
        ).first() is not None


async def enqueue_call_changes(
    session: AsyncSession,
    call_ids: Iterable[int],
    connector_ids: Sequence[int] | None = None,
    *,
    kinds: Sequence[ConnectorKind] | None = None,
) -> int:
    """Note that these calls changed, in the caller's transaction: each enabled connector (of
    ``kinds``, or those given) writes them (again)."""
    wanted = sorted(set(call_ids))
    if connector_ids is not None:
        targets = list(connector_ids)
    else:
        query = select(connectors.c.id).where(connectors.c.enabled.is_(True))
        if kinds is not None:
            query = query.where(connectors.c.kind.in_([k.value for k in kinds]))
        targets = [int(i) for i in (await session.execute(query)).scalars()]
    if not wanted or not targets:
        return 0
    stamp = now()
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql.insert(connector_calls)
    else:
        statement = sqlite.insert(connector_calls)
    statement = statement.on_conflict_do_update(
        index_elements=["connector_id", "call_id"],
        set_={
            "version": connector_calls.c.version + 1,
            "changed_at": stamp,
            # A call that is backing off (the ERP is down) keeps its wait: no fast loop.
            "next_at": case((connector_calls.c.attempts > 0, connector_calls.c.next_at), else_=stamp),
        },
    )
    rows = [
        {"connector_id": c, "call_id": call, "version": 1, "next_at": stamp, "changed_at": stamp}
        for c in targets
        for call in wanted
    ]
    await session.execute(statement, rows)
    return len(rows)


async def requeue_written_call(session: AsyncSession, call_id: int) -> int:
    """The call changed after it was written (its recording arrived): each connector that has it
    in the outbox writes it again, in the caller's transaction; a call no connector took (an
    internal one, or from before the connector) stays out."""
    stamp = now()
    result = await session.execute(
        update(connector_calls)
        .where(connector_calls.c.call_id == call_id)
        .values(
            version=connector_calls.c.version + 1,
            changed_at=stamp,
            next_at=case((connector_calls.c.attempts > 0, connector_calls.c.next_at), else_=stamp),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
