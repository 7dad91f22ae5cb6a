"""SQL for users, API tokens and sign-in failures (implements services.accounts' stores)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.errors import Conflict
from callbridge.domain.users import ApiToken, Role, User
from callbridge.services.accounts import StoredUser
from callbridge.store.tables import api_tokens, login_failures, now, users, web_sessions


def _user(row: Any) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        active=bool(row.active),
        display_name=row.display_name or "",
        session_version=row.session_version,
        last_login_at=row.last_login_at,
        time_zone=row.time_zone or "",
    )


def _stored(row: Any) -> StoredUser:
    return StoredUser(user=_user(row), password_hash=row.password_hash)


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlUserStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> StoredUser | None:
        row = (await self.session.execute(select(users).where(users.c.id == user_id))).first()
        return _stored(row) if row else None

    async def signed_in(self, sessions: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Those of ``(user id, session version)`` that are still good: the user is active and
        has not been signed out everywhere since (one statement for any number of tabs)."""
        if not sessions:
            return set()
        query = select(users.c.id, users.c.session_version).where(
            users.c.id.in_({user_id for user_id, _ in sessions}), users.c.active.is_(True)
        )
        current = {(row.id, row.session_version) for row in (await self.session.execute(query)).all()}
        return sessions & current

    async def get_by_name(self, name: str) -> StoredUser | None:
        query = select(users).where(func.lower(users.c.name) == name.lower())
        row = (await self.session.execute(query)).first()
        return _stored(row) if row else None

    async def add(self, name: str, role: Role, password_hash: str, display_name: str) -> User:
        if await self.get_by_name(name) is not None:
            raise Conflict(f"a user named {name!r} already exists")
        try:
            async with self.session.begin_nested():
                result = await self.session.execute(
                    insert(users)
                    .values(
                        name=name,
                        role=role.value,
                        password_hash=password_hash,
                        display_name=display_name,
                        active=True,
                        session_version=1,
                        created_at=now(),
                    )
                    .returning(*users.c)
                )
                row = result.one()
        except IntegrityError as exc:
            raise Conflict(f"a user named {name!r} already exists") from exc
        return _user(row)

    async def all(self) -> list[User]:
        rows = (await self.session.execute(select(users).order_by(users.c.name))).all()
        return [_user(r) for r in rows]

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(users))).scalar_one())

    async def _update(self, user_id: int, bump: bool, **values: Any) -> None:
        if bump:
            values["session_version"] = users.c.session_version + 1
        await self.session.execute(update(users).where(users.c.id == user_id).values(**values))

    async def set_password(self, user_id: int, password_hash: str) -> None:
        await self._update(user_id, True, password_hash=password_hash)

    async def set_active(self, user_id: int, active: bool) -> None:
        await self._update(user_id, True, active=active)

    async def set_role(self, user_id: int, role: Role) -> None:
        await self._update(user_id, False, role=role.value)

    async def set_time_zone(self, user_id: int, time_zone: str) -> None:
        await self._update(user_id, False, time_zone=time_zone)

    async def touch_login(self, user_id: int, at: datetime) -> None:
        await self._update(user_id, False, last_login_at=at)

    async def count_active_admins(self) -> int:
        query = (
            select(func.count())
            .select_from(users)
            .where(users.c.role == Role.ADMIN.value, users.c.active.is_(True))
        )
        return int((await self.session.execute(query)).scalar_one())


class SqlTokenStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, user_id: int, name: str, prefix: str, token_hash: str) -> ApiToken:
        result = await self.session.execute(
            insert(api_tokens)
            .values(user_id=user_id, name=name, prefix=prefix, token_hash=token_hash, created_at=now())
            .returning(*api_tokens.c)
        )
        return _token(result.one())

    async def find(self, token_hash: str) -> tuple[ApiToken, StoredUser] | None:
        """The token and its user, in one statement (it runs on every API request)."""
        query = (
            select(
                api_tokens.c.id.label("token_id"),
                api_tokens.c.user_id,
                api_tokens.c.name.label("token_name"),
                api_tokens.c.prefix,
                api_tokens.c.created_at.label("token_created_at"),
                api_tokens.c.last_used_at,
                api_tokens.c.revoked_at,
                users,
            )
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == token_hash)
        )
        row = (await self.session.execute(query)).first()
        if row is None:
            return None
        token = ApiToken(
            id=row.token_id,
            user_id=row.user_id,
            name=row.token_name,
            prefix=row.prefix,
            created_at=row.token_created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )
        return token, _stored(row)

    async def for_user(self, user_id: int) -> list[ApiToken]:
        query = select(api_tokens).where(api_tokens.c.user_id == user_id).order_by(api_tokens.c.id)
        return [_token(r) for r in (await self.session.execute(query)).all()]

    async def revoke(self, user_id: int, token_id: int, at: datetime) -> bool:
        result = await self.session.execute(
            update(api_tokens)
            .where(
                api_tokens.c.id == token_id,
                api_tokens.c.user_id == user_id,
                api_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )
        return bool(getattr(result, "rowcount", 0))

    async def touch(self, token_id: int, at: datetime) -> None:
        await self.session.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at)
        )

    async def touch_many(self, uses: dict[int, datetime]) -> None:
        for token_id, at in sorted(uses.items()):
            await self.session.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.id == token_id,
                    (api_tokens.c.last_used_at.is_(None)) | (api_tokens.c.last_used_at < at),
                )
                .values(last_used_at=at)
            )


class SqlFailureStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, keys: list[str], at: datetime) -> None:
        await self.session.execute(insert(login_failures), [{"key": k[:200], "at": at} for k in keys])

    async def recent(self, key: str, since: datetime) -> list[datetime]:
        query = select(login_failures.c.at).where(
            login_failures.c.key == key[:200], login_failures.c.at >= since
        )
        return [r.at for r in (await self.session.execute(query)).all()]

    async def clear(self, key: str) -> None:
        await self.session.execute(delete(login_failures).where(login_failures.c.key == key[:200]))

    async def prune(self, before: datetime) -> None:
        await self.session.execute(delete(login_failures).where(login_failures.c.at < before))


class SqlSessionStore:
    """Server-side records of signed-in browsers (``web_sessions``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, session_hash: str, user_id: int, at: datetime, expires_at: datetime) -> None:
        await self.session.execute(
            insert(web_sessions).values(
                id=session_hash, user_id=user_id, created_at=at, expires_at=expires_at
            )
        )

    async def alive(self, session_hash: str, user_id: int, at: datetime) -> bool:
        query = select(web_sessions.c.id).where(
            web_sessions.c.id == session_hash,
            web_sessions.c.user_id == user_id,
            web_sessions.c.expires_at > at,
        )
        return (await self.session.execute(query)).first() is not None

    async def remove(self, session_hash: str) -> None:
        await self.session.execute(delete(web_sessions).where(web_sessions.c.id == session_hash))

    async def remove_for_user(self, user_id: int, keep: str | None = None) -> None:
        query = delete(web_sessions).where(web_sessions.c.user_id == user_id)
        if keep is not None:
            query = query.where(web_sessions.c.id != keep)
        await self.session.execute(query)

    async def prune(self, before: datetime) -> None:
        await self.session.execute(delete(web_sessions).where(web_sessions.c.expires_at < before))
