"""SQL for the directory: contacts, their numbers and tags, extension ↔ user, dialplan tokens.

The number lookup is an equality on ``contact_phones.number_key`` (the E.164 form), which has a
plain B-tree index on SQLite and PostgreSQL: one index probe per lookup, whatever the size of
the directory. The raw text a user typed is kept beside it for display only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets as pysecrets
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from callbridge.domain.directory import Contact, ContactKind, Phone, PhoneKind
from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.services.contacts_import import ContactDraft
from callbridge.services.directory import ContactInput, number_key
from callbridge.store.secrets import SecretBox
from callbridge.store.tables import UtcDateTime, in_list, metadata, now, pbxes, users

if TYPE_CHECKING:
    from callbridge.store.db import Database

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    # Lower-cased name: search and sort without a function index.
    Column("name_folded", String(200), nullable=False, index=True),
    Column("company_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("email", String(254), nullable=False, server_default=""),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("notes", Text, nullable=False, server_default=""),
    Column("external_id", String(200), nullable=True, unique=True),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("updated_at", UtcDateTime, nullable=False, default=now),
)

contact_phones = Table(
    "contact_phones",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("raw", String(64), nullable=False),
    # E.164 form: the only thing lookups compare.
    Column("number_key", String(20), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    UniqueConstraint("contact_id", "number_key", name="uq_contact_phones_contact_id_number_key"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(40), nullable=False),
    Column("tag_folded", String(40), nullable=False, index=True),
    PrimaryKeyConstraint("contact_id", "tag_folded", name="pk_contact_tags"),
)

extension_users = Table(
    "extension_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    UniqueConstraint("pbx", "extension", name="uq_extension_users_pbx_extension"),
)

dialplan_tokens = Table(
    "dialplan_tokens",
    metadata,
    Column("pbx_id", Integer, ForeignKey("pbxes.id", ondelete="CASCADE"), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # The token itself, encrypted, so `callbridge pbx token` can show it again.
    Column("token_secret", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=now),
)

Index("ix_contacts_kind_name", contacts.c.kind, contacts.c.name_folded)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ContactQuery:
    text: str = ""
    number_key: str = ""
    digits: str = ""
    tag: str = ""
    kind: ContactKind | None = None
    owner_id: int | None = None
    company_id: int | None = None


@dataclass(frozen=True, slots=True)
class ExtensionMapping:
    pbx: str
    extension: str
    user_id: int
    user_name: str


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("the cursor is not valid; start from the first page") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidInput("the cursor is not valid; start from the first page")
    return values


_company = contacts.alias("company")


def _contact_select() -> Select[Any]:
    return select(
        contacts.c.id,
        contacts.c.kind,
        contacts.c.name,
        contacts.c.company_id,
        _company.c.name.label("company_name"),
        contacts.c.email,
        contacts.c.owner_id,
        contacts.c.notes,
        contacts.c.external_id,
    ).select_from(contacts.outerjoin(_company, _company.c.id == contacts.c.company_id))


def _contact(row: Any, phones: Sequence[Phone] = (), tags: Sequence[str] = ()) -> Contact:
    return Contact(
        id=row.id,
        kind=ContactKind(row.kind),
        name=row.name,
        company_id=row.company_id,
        company_name=row.company_name or "",
        phones=tuple(phones),
        email=row.email or "",
        tags=tuple(tags),
        owner_id=row.owner_id,
        notes=row.notes or "",
        external_id=row.external_id or "",
    )


class SqlDirectory:
    """Contacts and their numbers; implements ``services.directory.ContactFinder``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- lookups (the hot path) ------------------------------------------------------------------

    @staticmethod
    def _by_number_query() -> Any:
        return select(
            contact_phones.c.number_key,
            contacts.c.id,
            contacts.c.kind,
            contacts.c.name,
            contacts.c.company_id,
            _company.c.name.label("company_name"),
            contacts.c.email,
            contacts.c.owner_id,
            contacts.c.notes,
            contacts.c.external_id,
        ).select_from(
            contact_phones.join(contacts, contacts.c.id == contact_phones.c.contact_id).outerjoin(
                _company, _company.c.id == contacts.c.company_id
            )
        )

    async def by_number_key(self, key: str) -> list[Contact]:
        query = self._by_number_query().where(contact_phones.c.number_key == key)
        rows = (await self.session.execute(query)).all()
        return [_contact(r) for r in rows]

    async def by_number_keys(self, keys: Sequence[str]) -> dict[str, list[Contact]]:
        """:meth:`by_number_key` for many numbers in one statement (every key is in the answer)."""
        found: dict[str, list[Contact]] = {key: [] for key in keys}
        if found:
            query = self._by_number_query().where(in_list(self.session, contact_phones.c.number_key, found))
            for row in (await self.session.execute(query)).all():
                found[row.number_key].append(_contact(row))
        return found

    async def tags_of(self, contact_id: int) -> list[str]:
        query = select(contact_tags.c.tag).where(contact_tags.c.contact_id == contact_id)
        return sorted((await self.session.execute(query)).scalars(), key=str.casefold)

    # -- reading -----------------------------------------------------------------------------------

    async def find(self, contact_id: int) -> Contact | None:
        row = (await self.session.execute(_contact_select().where(contacts.c.id == contact_id))).first()
        if row is None:
            return None
        phones = await self._phones([contact_id])
        tags = await self._tags([contact_id])
        return _contact(row, phones.get(contact_id, ()), tags.get(contact_id, ()))

    async def get(self, contact_id: int) -> Contact:
        found = await self.find(contact_id)
        if found is None:
            raise NotFound(f"no contact with id {contact_id}")
        return found

    async def _children(self, table: Table, ids: Sequence[int], order: Any) -> dict[int, list[Any]]:
        """Rows of ``table`` for each contact id, in ``order``."""
        out: dict[int, list[Any]] = {}
        if ids:
            query = select(table).where(table.c.contact_id.in_(ids)).order_by(table.c.contact_id, order)
            for r in (await self.session.execute(query)).all():
                out.setdefault(r.contact_id, []).append(r)
        return out

    async def _phones(self, ids: Sequence[int]) -> dict[int, list[Phone]]:
        rows = await self._children(contact_phones, ids, contact_phones.c.id)
        return {k: [Phone(r.raw, r.number_key, PhoneKind(r.kind)) for r in v] for k, v in rows.items()}

    async def _tags(self, ids: Sequence[int]) -> dict[int, list[str]]:
        rows = await self._children(contact_tags, ids, contact_tags.c.tag_folded)
        return {k: [r.tag for r in v] for k, v in rows.items()}

    async def search(
        self, query: ContactQuery, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Contact], str | None]:
        """Contacts by name order, keyset-paginated."""
        stmt = _contact_select()
        if query.number_key:
            stmt = stmt.where(
                contacts.c.id.in_(
                    select(contact_phones.c.contact_id).where(contact_phones.c.number_key == query.number_key)
                )
            )
        elif query.digits:
            # A fragment of a number ("5550100"): a scan, for the search box only.
            stmt = stmt.where(
                contacts.c.id.in_(
                    select(contact_phones.c.contact_id).where(
                        contact_phones.c.number_key.contains(query.digits, autoescape=True)
                    )
                )
            )
        elif query.text:
            folded = query.text.casefold()
            stmt = stmt.where(
                or_(
                    contacts.c.name_folded.contains(folded, autoescape=True),
                    func.lower(contacts.c.email).contains(folded, autoescape=True),
                )
            )
        if query.tag:
            stmt = stmt.where(
                contacts.c.id.in_(
                    select(contact_tags.c.contact_id).where(contact_tags.c.tag_folded == query.tag.casefold())
                )
            )
        if query.kind is not None:
            stmt = stmt.where(contacts.c.kind == query.kind.value)
        if query.owner_id is not None:
            stmt = stmt.where(contacts.c.owner_id == query.owner_id)
        if query.company_id is not None:
            stmt = stmt.where(contacts.c.company_id == query.company_id)
        if cursor:
            name, last_id = decode_cursor(cursor, 2)
            if not isinstance(name, str) or not isinstance(last_id, int):
                raise InvalidInput("the cursor is not valid; start from the first page")
            stmt = stmt.where(
                or_(
                    contacts.c.name_folded > name,
                    and_(contacts.c.name_folded == name, contacts.c.id > last_id),
                )
            )
        stmt = stmt.order_by(contacts.c.name_folded, contacts.c.id).limit(limit + 1)
        rows = (await self.session.execute(stmt)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows]
        phones, tags = await self._phones(ids), await self._tags(ids)
        items = [_contact(r, phones.get(r.id, ()), tags.get(r.id, ())) for r in rows]
        next_cursor = encode_cursor([rows[-1].name.casefold(), rows[-1].id]) if more and rows else None
        return items, next_cursor

    async def people_of(self, company_id: int) -> list[Contact]:
        rows = (
            await self.session.execute(
                _contact_select().where(contacts.c.company_id == company_id).order_by(contacts.c.name_folded)
            )
        ).all()
        return [_contact(r) for r in rows]

    async def companies(self) -> list[tuple[int, str]]:
        query = (
            select(contacts.c.id, contacts.c.name)
            .where(contacts.c.kind == ContactKind.COMPANY.value)
            .order_by(contacts.c.name_folded)
        )
        return [(r.id, r.name) for r in (await self.session.execute(query)).all()]

    async def all_tags(self) -> list[tuple[str, int]]:
        query = (
            select(func.min(contact_tags.c.tag), func.count())
            .group_by(contact_tags.c.tag_folded)
            .order_by(contact_tags.c.tag_folded)
        )
        return [(r[0], int(r[1])) for r in (await self.session.execute(query)).all()]

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(contacts))).scalar_one())

    # -- writing -----------------------------------------------------------------------------------

    async def _check_company(self, company_id: int | None, contact_id: int | None = None) -> None:
        if company_id is None:
            return
        row = (await self.session.execute(select(contacts.c.kind).where(contacts.c.id == company_id))).first()
        if row is None or row.kind != ContactKind.COMPANY.value:
            raise InvalidInput(f"company {company_id} is not a company in the directory")
        if contact_id is not None and company_id == contact_id:
            raise InvalidInput("a contact cannot be its own company")

    async def _check_external_id(self, external_id: str, contact_id: int | None = None) -> None:
        if not external_id:
            return
        query = select(contacts.c.id).where(contacts.c.external_id == external_id)
        found = (await self.session.execute(query)).scalar()
        if found is not None and found != contact_id:
            raise InvalidInput(f"external id {external_id!r} belongs to contact {found}")

    async def create(self, data: ContactInput) -> int:
        await self._check_company(data.company_id)
        await self._check_external_id(data.external_id)
        stamp = now()
        result = await self.session.execute(
            insert(contacts)
            .values(
                kind=data.kind.value,
                name=data.name,
                name_folded=data.name.casefold(),
                company_id=data.company_id if data.kind is ContactKind.PERSON else None,
                email=data.email,
                owner_id=data.owner_id,
                notes=data.notes,
                external_id=data.external_id or None,
                created_at=stamp,
                updated_at=stamp,
            )
            .returning(contacts.c.id)
        )
        contact_id = int(result.scalar_one())
        await self._write_children(contact_id, data.phones, data.tags)
        return contact_id

    async def update(self, contact_id: int, data: ContactInput) -> None:
        kind_row = (
            await self.session.execute(select(contacts.c.kind).where(contacts.c.id == contact_id))
        ).first()
        if kind_row is None:
            raise NotFound(f"no contact with id {contact_id}")
        await self._check_company(data.company_id, contact_id)
        await self._check_external_id(data.external_id, contact_id)
        if data.kind is ContactKind.PERSON and kind_row.kind == ContactKind.COMPANY.value:
            people = await self.session.execute(
                select(func.count()).select_from(contacts).where(contacts.c.company_id == contact_id)
            )
            if people.scalar_one():
                raise InvalidInput("this company still has people; move them before making it a person")
        await self.session.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values(
                kind=data.kind.value,
                name=data.name,
                name_folded=data.name.casefold(),
                company_id=data.company_id if data.kind is ContactKind.PERSON else None,
                email=data.email,
                owner_id=data.owner_id,
                notes=data.notes,
                external_id=data.external_id or None,
                updated_at=now(),
            )
        )
        await self.session.execute(delete(contact_phones).where(contact_phones.c.contact_id == contact_id))
        await self.session.execute(delete(contact_tags).where(contact_tags.c.contact_id == contact_id))
        await self._write_children(contact_id, data.phones, data.tags)

    async def _write_children(self, contact_id: int, phones: Iterable[Phone], tags: Iterable[str]) -> None:
        phone_rows = [
            {"contact_id": contact_id, "raw": p.raw[:64], "number_key": p.key, "kind": p.kind.value}
            for p in phones
        ]
        if phone_rows:
            await self.session.execute(insert(contact_phones), phone_rows)
        tag_rows = [{"contact_id": contact_id, "tag": t, "tag_folded": t.casefold()} for t in tags]
        if tag_rows:
            await self.session.execute(insert(contact_tags), tag_rows)

    async def create_for_unknown(self, number: str, name: str) -> int:
        """``services.calllog.ContactCreator``: a person for an unknown caller."""
        phone = Phone(raw=number, key=number_key(number, "ZZ") or number, kind=PhoneKind.OTHER)
        label = " ".join(name.split())[:200] or number
        return await self.create(ContactInput(ContactKind.PERSON, label, phones=(phone,), tags=("auto",)))

    async def delete(self, contact_id: int) -> None:
        result = await self.session.execute(delete(contacts).where(contacts.c.id == contact_id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"no contact with id {contact_id}")

    async def rename_tag(self, old: str, new: str) -> int:
        rows = (
            await self.session.execute(
                select(contact_tags.c.contact_id).where(contact_tags.c.tag_folded == old.casefold())
            )
        ).scalars()
        ids = list(rows)
        for contact_id in ids:
            await self.session.execute(
                delete(contact_tags).where(
                    contact_tags.c.contact_id == contact_id,
                    contact_tags.c.tag_folded.in_({old.casefold(), new.casefold()}),
                )
            )
            await self.session.execute(
                insert(contact_tags).values(contact_id=contact_id, tag=new, tag_folded=new.casefold())
            )
        return len(ids)

    async def delete_tag(self, tag: str) -> int:
        result = await self.session.execute(
            delete(contact_tags).where(contact_tags.c.tag_folded == tag.casefold())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class SqlImportTarget:
    """``services.directory.ImportTarget`` over the directory tables."""

    def __init__(self, directory: SqlDirectory) -> None:
        self.directory = directory
        self.session = directory.session

    async def id_by_external_id(self, external_id: str) -> int | None:
        query = select(contacts.c.id).where(contacts.c.external_id == external_id)
        found = (await self.session.execute(query)).scalar()
        return int(found) if found is not None else None

    async def id_by_number_keys(self, keys: Sequence[str]) -> int | None:
        query = (
            select(contact_phones.c.contact_id)
            .where(contact_phones.c.number_key.in_(list(keys)))
            .order_by(contact_phones.c.contact_id)
            .limit(1)
        )
        found = (await self.session.execute(query)).scalar()
        return int(found) if found is not None else None

    async def company_id_by_name(self, name: str) -> int | None:
        query = (
            select(contacts.c.id)
            .where(contacts.c.kind == ContactKind.COMPANY.value, contacts.c.name_folded == name.casefold())
            .order_by(contacts.c.id)
            .limit(1)
        )
        found = (await self.session.execute(query)).scalar()
        return int(found) if found is not None else None

    async def person_id_by_name(self, name: str, company_id: int | None, email: str) -> int | None:
        query = (
            select(contacts.c.id)
            .where(
                contacts.c.kind == ContactKind.PERSON.value,
                contacts.c.name_folded == name.casefold(),
                contacts.c.company_id.is_(None)
                if company_id is None
                else contacts.c.company_id == company_id,
                func.lower(contacts.c.email) == email.lower(),
            )
            .order_by(contacts.c.id)
            .limit(1)
        )
        found = (await self.session.execute(query)).scalar()
        return int(found) if found is not None else None

    async def owner_id_by_name(self, name: str) -> int | None:
        query = select(users.c.id).where(func.lower(users.c.name) == name.lower())
        found = (await self.session.execute(query)).scalar()
        return int(found) if found is not None else None

    def _input(self, draft: ContactDraft, company_id: int | None, owner_id: int | None) -> ContactInput:
        return ContactInput(
            kind=draft.kind,
            name=draft.name,
            company_id=company_id,
            phones=draft.phones,
            email=draft.email,
            tags=draft.tags,
            owner_id=owner_id,
            notes=draft.notes,
            external_id=draft.external_id,
        )

    async def create(self, draft: ContactDraft, company_id: int | None, owner_id: int | None) -> int:
        return await self.directory.create(self._input(draft, company_id, owner_id))

    async def update(
        self, contact_id: int, draft: ContactDraft, company_id: int | None, owner_id: int | None
    ) -> None:
        current = await self.directory.get(contact_id)
        # An import fills in; it does not wipe what the file leaves empty.
        merged = ContactInput(
            kind=draft.kind,
            name=draft.name,
            company_id=company_id if company_id is not None else current.company_id,
            phones=_merge_phones(current.phones, draft.phones),
            email=draft.email or current.email,
            tags=tuple(dict.fromkeys([*current.tags, *draft.tags])),
            owner_id=owner_id if owner_id is not None else current.owner_id,
            notes=draft.notes or current.notes,
            external_id=draft.external_id or current.external_id,
        )
        await self.directory.update(contact_id, merged)


def _merge_phones(current: Sequence[Phone], new: Sequence[Phone]) -> tuple[Phone, ...]:
    seen: dict[str, Phone] = {p.key: p for p in current}
    for phone in new:
        seen.setdefault(phone.key, phone)
    return tuple(seen.values())


class SqlExtensions:
    """Extension ↔ user mapping; implements ``services.calllog.ExtensionUsers``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        wanted = [e for e in extensions if e]
        if not wanted:
            return {}
        query = select(extension_users.c.extension, extension_users.c.user_id).where(
            extension_users.c.pbx == pbx, in_list(self.session, extension_users.c.extension, wanted)
        )
        return {r.extension: r.user_id for r in (await self.session.execute(query)).all()}

    async def map(self, pbx: str, extension: str, user_id: int) -> None:
        await self.session.execute(
            delete(extension_users).where(
                extension_users.c.pbx == pbx, extension_users.c.extension == extension
            )
        )
        await self.session.execute(
            insert(extension_users).values(pbx=pbx, extension=extension, user_id=user_id)
        )

    async def unmap(self, pbx: str, extension: str) -> bool:
        result = await self.session.execute(
            delete(extension_users).where(
                extension_users.c.pbx == pbx, extension_users.c.extension == extension
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def all(self) -> list[ExtensionMapping]:
        query = (
            select(
                extension_users.c.pbx, extension_users.c.extension, extension_users.c.user_id, users.c.name
            )
            .select_from(extension_users.join(users, users.c.id == extension_users.c.user_id))
            .order_by(extension_users.c.pbx, extension_users.c.extension)
        )
        return [
            ExtensionMapping(r.pbx, r.extension, r.user_id, r.name)
            for r in (await self.session.execute(query)).all()
        ]

    async def extension_of(self, pbx: str, user_id: int) -> str:
        query = (
            select(extension_users.c.extension)
            .where(extension_users.c.pbx == pbx, extension_users.c.user_id == user_id)
            .order_by(extension_users.c.extension)
            .limit(1)
        )
        return str((await self.session.execute(query)).scalar() or "")


@dataclass(frozen=True, slots=True)
class DialplanPbx:
    id: int
    name: str
    kind: str
    config: dict[str, Any]


class SqlDialplanTokens:
    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    async def token_for(self, pbx_name: str, *, rotate: bool = False) -> str:
        """The PBX's dialplan token, created on first use (or replaced with ``rotate``)."""
        row = (await self.session.execute(select(pbxes.c.id).where(pbxes.c.name == pbx_name))).first()
        if row is None:
            raise NotFound(f"no PBX named {pbx_name!r}")
        current = (
            await self.session.execute(select(dialplan_tokens).where(dialplan_tokens.c.pbx_id == row.id))
        ).first()
        if current is not None and not rotate:
            return self.box.decrypt(current.token_secret)["token"]
        token = pysecrets.token_urlsafe(24)
        await self.session.execute(delete(dialplan_tokens).where(dialplan_tokens.c.pbx_id == row.id))
        await self.session.execute(
            insert(dialplan_tokens).values(
                pbx_id=row.id,
                token_hash=token_hash(token),
                token_secret=self.box.encrypt({"token": token}),
                created_at=now(),
            )
        )
        return token

    async def pbx_for(self, token: str) -> DialplanPbx | None:
        query = (
            select(pbxes.c.id, pbxes.c.name, pbxes.c.kind, pbxes.c.config)
            .select_from(dialplan_tokens.join(pbxes, pbxes.c.id == dialplan_tokens.c.pbx_id))
            .where(dialplan_tokens.c.token_hash == token_hash(token), pbxes.c.enabled.is_(True))
        )
        row = (await self.session.execute(query)).first()
        return DialplanPbx(row.id, row.name, row.kind, dict(row.config or {})) if row else None


class DialplanReader:
    """Everything a dialplan question may need, over one read-only session."""

    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.tokens = SqlDialplanTokens(session, box)
        self.directory = SqlDirectory(session)
        self.extensions = SqlExtensions(session)

    async def user_name(self, user_id: int) -> str:
        query = select(users.c.name).where(users.c.id == user_id)
        return str((await self.session.execute(query)).scalar() or "")


@asynccontextmanager
async def dialplan_reader(db: Database) -> AsyncIterator[DialplanReader]:
    # No commit: nothing is written, and skipping it saves a round trip on the hot path.
    async with db.sessionmaker() as session:
        yield DialplanReader(session, db.box)


async def renormalize_numbers(session: AsyncSession, region: str) -> tuple[int, int, int]:
    """Recompute every stored number's key from its raw text with ``region`` (after the default
    region changed). Returns (checked, changed, unreadable); unreadable numbers keep their key."""
    rows = (
        await session.execute(
            select(
                contact_phones.c.id,
                contact_phones.c.contact_id,
                contact_phones.c.raw,
                contact_phones.c.number_key,
            ).order_by(contact_phones.c.contact_id, contact_phones.c.id)
        )
    ).all()
    changed = unreadable = 0
    keys_by_contact: dict[int, set[str]] = {}
    for row in rows:
        key = number_key(row.raw, region)
        if not key:
            unreadable += 1
            key = row.number_key
        seen = keys_by_contact.setdefault(row.contact_id, set())
        if key in seen:
            # Two spellings of one number on one contact: keep the first.
            await session.execute(delete(contact_phones).where(contact_phones.c.id == row.id))
            changed += 1
            continue
        seen.add(key)
        if key != row.number_key:
            await session.execute(
                update(contact_phones).where(contact_phones.c.id == row.id).values(number_key=key)
            )
            changed += 1
    return len(rows), changed, unreadable


# -- the dialplan's hot path --------------------------------------------------------------------------

# What _fast_contact reads, from contacts c and their company co.
_FAST_CONTACT_COLUMNS = "c.id, c.kind, c.name, c.company_id, co.name AS company_name, c.owner_id"
_LOOKUP_SQL = (
    f"SELECT {_FAST_CONTACT_COLUMNS} "  # noqa: S608 - constants only; values are bound
    "FROM contact_phones p JOIN contacts c ON c.id = p.contact_id "
    "LEFT JOIN contacts co ON co.id = c.company_id WHERE p.number_key = {0}"
)
_PBX_BY_HASH_SQL = (
    "SELECT x.id, x.name, x.kind, x.config FROM dialplan_tokens t JOIN pbxes x ON x.id = t.pbx_id "
    "WHERE t.token_hash = {0} AND x.enabled"
)
_TAGS_SQL = "SELECT tag FROM contact_tags WHERE contact_id = {0}"
_CONTACT_SQL = (
    f"SELECT {_FAST_CONTACT_COLUMNS} "  # noqa: S608 - constants only; values are bound
    "FROM contacts c LEFT JOIN contacts co ON co.id = c.company_id WHERE c.id = {0}"
)
_USER_LABEL_SQL = "SELECT display_name, name FROM users WHERE id = {0}"
_EXTENSION_MAP_SQL = "SELECT pbx, extension, user_id FROM extension_users"
_EXTERNAL_SQL = (
    "SELECT n.name, n.kind, x.ext_id, x.url FROM contact_externals x "
    "JOIN connectors n ON n.id = x.connector_id WHERE x.contact_id = {0} ORDER BY n.name, x.ext_id"
)
_OWNER_SQL = "SELECT owner_id FROM contacts WHERE id = {0}"
_COLLEAGUE_SQL = (
    "SELECT u.display_name, u.name FROM extension_users e JOIN users u ON u.id = e.user_id "
    "WHERE e.pbx = {0} AND e.extension = {1}"
)
# The open follow-up tasks for a number (store/tasks.py's table): a pop says a call is owed.
_OWED_SQL = (
    "SELECT assignee_id, created_at FROM tasks WHERE status = 'open' AND number = {0} ORDER BY created_at, id"
)
_EXTENSION_SQL = (
    "SELECT e.extension, u.name FROM extension_users e JOIN users u ON u.id = e.user_id "
    "WHERE e.pbx = {0} AND e.user_id = {1} ORDER BY e.extension LIMIT 1"
)


def _fast_contact(row: Sequence[Any]) -> Contact:
    return Contact(
        id=int(row[0]),
        kind=ContactKind(row[1]),
        name=str(row[2]),
        company_id=row[3],
        company_name=row[4] or "",
        owner_id=row[5],
    )


def _config(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        loaded = json.loads(value or "{}")
        return loaded if isinstance(loaded, dict) else {}
    return dict(value or {})


def _utc(value: Any) -> datetime:
    """A timestamp as the driver gives it (SQLite: text, naive UTC) as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class FastDirectory:
    """The dialplan lookups without the ORM session machinery: a few prepared point queries on
    the driver itself (a read-only sqlite3 connection, or an asyncpg pool). Every query is an
    index probe, so on SQLite it runs inline: a thread hop would cost more than the query."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._sqlite: sqlite3.Connection | None = None
        self._pool: Any = None
        self._pg_dsn = ""
        if self.is_sqlite:
            self._sqlite_path = parsed.database or ""
        else:
            self._pg_dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._lock = asyncio.Lock()

    def _sql(self, template: str, arity: int = 1) -> str:
        marks = ["?"] * arity if self.is_sqlite else [f"${i + 1}" for i in range(arity)]
        return template.format(*marks)

    async def _fetch(self, template: str, *args: Any) -> list[Sequence[Any]]:
        sql = self._sql(template, len(args))
        if self.is_sqlite:
            if self._sqlite is None:
                db = sqlite3.connect(self._sqlite_path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA query_only=ON")
                db.execute("PRAGMA busy_timeout=200")
                self._sqlite = db
            return list(self._sqlite.execute(sql, args).fetchall())
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg  # type: ignore[import-untyped]

                    self._pool = await asyncpg.create_pool(
                        self._pg_dsn, min_size=1, max_size=4, command_timeout=5
                    )
        rows: list[Sequence[Any]] = await self._pool.fetch(sql, *args)
        return rows

    async def by_number_key(self, key: str) -> list[Contact]:
        return [_fast_contact(r) for r in await self._fetch(_LOOKUP_SQL, key)]

    async def pbx_for(self, token: str) -> DialplanPbx | None:
        rows = await self._fetch(_PBX_BY_HASH_SQL, token_hash(token))
        if not rows:
            return None
        row = rows[0]
        return DialplanPbx(int(row[0]), str(row[1]), str(row[2]), _config(row[3]))

    async def tags_of(self, contact_id: int) -> list[str]:
        return sorted((str(r[0]) for r in await self._fetch(_TAGS_SQL, contact_id)), key=str.casefold)

    async def owner_of(self, contact_id: int) -> int | None:
        rows = await self._fetch(_OWNER_SQL, contact_id)
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def extension_of(self, pbx: str, user_id: int) -> tuple[str, str]:
        rows = await self._fetch(_EXTENSION_SQL, pbx, user_id)
        return (str(rows[0][0]), str(rows[0][1])) if rows else ("", "")

    # The live desk's early pop reads these (see services/live.py).

    async def extension_map(self) -> dict[tuple[str, str], int]:
        """Every mapped extension: (PBX, extension) → user id."""
        return {(str(r[0]), str(r[1])): int(r[2]) for r in await self._fetch(_EXTENSION_MAP_SQL)}

    async def contact(self, contact_id: int) -> Contact | None:
        rows = await self._fetch(_CONTACT_SQL, contact_id)
        if not rows:
            return None
        found = _fast_contact(rows[0])
        return replace(found, tags=tuple(await self.tags_of(contact_id)))

    async def external_links(self, contact_id: int) -> list[dict[str, str]]:
        """Where the contact lives in connected ERPs: ``{"connector", "kind", "id", "url"}``."""
        rows = await self._fetch(_EXTERNAL_SQL, contact_id)
        return [{"connector": str(r[0]), "kind": str(r[1]), "id": str(r[2]), "url": str(r[3])} for r in rows]

    async def user_label(self, user_id: int) -> str:
        rows = await self._fetch(_USER_LABEL_SQL, user_id)
        return str(rows[0][0] or rows[0][1]) if rows else ""

    async def colleague(self, pbx: str, extension: str) -> str:
        rows = await self._fetch(_COLLEAGUE_SQL, pbx, extension)
        return str(rows[0][0] or rows[0][1]) if rows else ""

    async def owed(self, number: str) -> list[tuple[int | None, datetime]]:
        return [
            (int(r[0]) if r[0] is not None else None, _utc(r[1]))
            for r in await self._fetch(_OWED_SQL, number)
        ]

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
