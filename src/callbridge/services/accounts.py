"""Use cases for users, sign-in and API tokens.

Storage is behind the small protocols below (``store/users.py`` implements them), so these
rules are tested the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from callbridge.domain.errors import AuthenticationFailed, Conflict, NotFound, RateLimited
from callbridge.domain.times import validate_time_zone
from callbridge.domain.users import (
    ApiToken,
    Role,
    User,
    validate_password,
    validate_username,
)

log = logging.getLogger(__name__)

TOKEN_PREFIX = "cb_"  # noqa: S105 - a marker, not a secret


@dataclass(frozen=True, slots=True)
class StoredUser:
    user: User
    password_hash: str


class UserStore(Protocol):
    async def get(self, user_id: int) -> StoredUser | None: ...
    async def get_by_name(self, name: str) -> StoredUser | None: ...
    async def add(self, name: str, role: Role, password_hash: str, display_name: str) -> User: ...
    async def all(self) -> list[User]: ...
    async def count(self) -> int: ...
    async def set_password(self, user_id: int, password_hash: str) -> None: ...
    async def set_active(self, user_id: int, active: bool) -> None: ...
    async def set_role(self, user_id: int, role: Role) -> None: ...
    async def set_time_zone(self, user_id: int, time_zone: str) -> None: ...
    async def touch_login(self, user_id: int, at: datetime) -> None: ...
    async def count_active_admins(self) -> int: ...


class TokenStore(Protocol):
    async def add(self, user_id: int, name: str, prefix: str, token_hash: str) -> ApiToken: ...
    async def find(self, token_hash: str) -> tuple[ApiToken, StoredUser] | None: ...
    async def for_user(self, user_id: int) -> list[ApiToken]: ...
    async def revoke(self, user_id: int, token_id: int, at: datetime) -> bool: ...
    async def touch(self, token_id: int, at: datetime) -> None: ...
    async def touch_many(self, uses: dict[int, datetime]) -> None: ...


class FailureStore(Protocol):
    async def record(self, keys: list[str], at: datetime) -> None: ...
    async def recent(self, key: str, since: datetime) -> list[datetime]: ...
    async def clear(self, key: str) -> None: ...
    async def prune(self, before: datetime) -> None: ...


class SessionStore(Protocol):
    async def add(self, session_hash: str, user_id: int, at: datetime, expires_at: datetime) -> None: ...
    async def alive(self, session_hash: str, user_id: int, at: datetime) -> bool: ...
    async def remove(self, session_hash: str) -> None: ...
    async def remove_for_user(self, user_id: int, keep: str | None = None) -> None: ...
    async def prune(self, before: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """How wrong passwords are throttled (see :meth:`Accounts.authenticate`).

    Failures are counted per key over ``window``. A key with ``max_failures`` (or, for the wider
    keys, ``user_max_failures`` / ``address_max_failures``) recent failures is locked: first for
    ``first_lock``, then twice as long with each further failure, up to ``lockout``.
    """

    # Per (user, address), or per (user, known device): what a typist with a wrong password hits.
    max_failures: int = 5
    window: timedelta = timedelta(minutes=10)
    lockout: timedelta = timedelta(minutes=15)
    first_lock: timedelta = timedelta(seconds=30)
    # Per user, from devices that never signed in as them (guessing spread over many addresses).
    user_max_failures: int = 20
    # Per address, any user (one address guessing many names; an office behind NAT shares it).
    address_max_failures: int = 50
    # Each failure is answered after a pause that doubles, up to ``max_delay`` seconds.
    base_delay: float = 0.25
    max_delay: float = 2.0
    # How long a browser stays signed in (the server-side record expires then, whatever the cookie says).
    session_lifetime: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class _Limit:
    key: str
    max_failures: int


# A token's "last used" time is kept to the minute: recording every request would make every
# read a write (on SQLite, a wait for the one writer).
TOKEN_USE_RESOLUTION = timedelta(minutes=1)

TokenUseSink = Callable[[int, datetime], None]


class TokenUses:
    """Token uses not yet written: at most one per token per :data:`TOKEN_USE_RESOLUTION`,
    written in one batch by whoever calls :meth:`take` (the hub, off the request path)."""

    def __init__(self) -> None:
        self.pending: dict[int, datetime] = {}

    def due(self, token: ApiToken, at: datetime) -> bool:
        if token.id in self.pending:
            return False
        return token.last_used_at is None or at - token.last_used_at >= TOKEN_USE_RESOLUTION

    def take(self) -> dict[int, datetime]:
        taken, self.pending = self.pending, {}
        return taken

    def put_back(self, uses: dict[int, datetime]) -> None:
        for token_id, at in uses.items():
            self.pending.setdefault(token_id, at)


# How long a checked API token is taken on trust before it is looked up again (see TokenCache).
TOKEN_CACHE_SECONDS = 2.0
TOKEN_CACHE_SIZE = 10_000


class TokenCache:
    """API tokens recently found valid, with their user: a client asking many times a second is
    looked up once every :data:`TOKEN_CACHE_SECONDS`, not on every request (the lookup cost
    more than the rest of a call-list request).

    A change to a user or a token made through this process (revoked, role, deactivated,
    password) empties the cache at once; one made by another process (a second worker, the CLI)
    takes effect within :data:`TOKEN_CACHE_SECONDS`. Only valid tokens are kept: a wrong one is
    looked up (and refused) every time."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = TOKEN_CACHE_SIZE) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: dict[str, tuple[float, ApiToken, User]] = {}

    def get(self, token_hash: str) -> tuple[ApiToken, User] | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._entries[token_hash]
            return None
        return entry[1], entry[2]

    def put(self, token_hash: str, token: ApiToken, user: User) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic() + self.seconds, token, user)

    def used(self, token_hash: str, at: datetime) -> None:
        """The token's use at ``at`` was noted: keep its copy in step (not its time to live)."""
        entry = self._entries.get(token_hash)
        if entry is not None:
            self._entries[token_hash] = (entry[0], replace(entry[1], last_used_at=at), entry[2])

    def clear(self) -> None:
        self._entries.clear()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def hash_token(secret: str) -> str:
    # API tokens are long random strings: a fast hash is enough and keeps lookups cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


_default_hasher = PasswordHasher()


class Accounts:
    def __init__(
        self,
        users: UserStore,
        tokens: TokenStore,
        failures: FailureStore,
        sessions: SessionStore,
        *,
        policy: LoginPolicy | None = None,
        hasher: PasswordHasher | None = None,
        token_uses: TokenUses | None = None,
        token_used: Callable[[], None] | None = None,
        token_cache: TokenCache | None = None,
    ) -> None:
        # With ``token_uses``, token use is noted in memory and ``token_used`` is told (the hub
        # writes it shortly after, in its own transaction); without, it is written here.
        self.token_uses = token_uses
        self.token_used = token_used
        self.token_cache = token_cache
        self.users = users
        self.tokens = tokens
        self.failures = failures
        self.sessions = sessions
        self.policy = policy or LoginPolicy()
        self.hasher = hasher or _default_hasher

    async def _hash(self, password: str) -> str:
        # argon2 is deliberately slow: keep it off the event loop.
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # --- users -----------------------------------------------------------------------------
    async def create_user(
        self, name: str, role: Role, password: str | None = None, display_name: str = ""
    ) -> tuple[User, str | None]:
        """Returns the user and the generated password when none was given."""
        name = validate_username(name)
        generated = None
        if password is None:
            password = generated = generate_password()
        validate_password(password)
        user = await self.users.add(name, role, await self._hash(password), display_name.strip())
        log.info("user %s created with role %s", name, role.value)
        return user, generated

    async def ensure_admin(self) -> str | None:
        """On first start, create ``admin`` and return its generated password (shown once)."""
        if await self.users.count() > 0:
            return None
        _, password = await self.create_user("admin", Role.ADMIN)
        return password

    async def get_user(self, name: str) -> User:
        stored = await self.users.get_by_name(name)
        if stored is None:
            raise NotFound(f"no user named {name!r}")
        return stored.user

    async def set_password(self, name: str, password: str | None = None) -> str | None:
        user = await self.get_user(name)
        generated = None
        if password is None:
            password = generated = generate_password()
        validate_password(password)
        await self.users.set_password(user.id, await self._hash(password))
        self._forget_tokens()
        return generated

    async def change_password(self, user: User, current: str, new: str) -> None:
        """Throttled like sign-in: a stolen session must not become a way to guess the password."""
        now = datetime.now(UTC)
        limits = [_Limit(f"pw:{user.id}", self.policy.max_failures)]
        await self._check_locks(limits, now, "password checks")
        stored = await self.users.get(user.id)
        if stored is None or not await self._verify(stored.password_hash, current):
            count = await self._failed(limits, now)
            log.info("wrong current password for user %s (%d recent)", user.id, count)
            raise AuthenticationFailed("the current password is wrong")
        validate_password(new)
        await self.failures.clear(limits[0].key)
        await self.users.set_password(user.id, await self._hash(new))
        self._forget_tokens()

    async def _keep_an_admin(self, user: User) -> None:
        """Refuse to leave the hub without an active admin: nobody could manage it any more."""
        if user.is_admin and user.active and await self.users.count_active_admins() <= 1:
            raise Conflict(f"{user.name} is the last active admin; make another user admin first")

    async def set_active(self, name: str, active: bool) -> User:
        user = await self.get_user(name)
        if not active:
            await self._keep_an_admin(user)
        await self.users.set_active(user.id, active)
        self._forget_tokens()
        if not active:
            await self.sessions.remove_for_user(user.id)
        return user

    async def set_role(self, name: str, role: Role) -> User:
        user = await self.get_user(name)
        if role is not Role.ADMIN:
            await self._keep_an_admin(user)
        await self.users.set_role(user.id, role)
        self._forget_tokens()
        return await self.get_user(name)

    async def set_time_zone(self, user: User, time_zone: str | None) -> User:
        """Set the zone ``user`` sees times in; empty or None: follow the hub's default."""
        chosen = validate_time_zone(time_zone) if time_zone and time_zone.strip() else ""
        await self.users.set_time_zone(user.id, chosen)
        self._forget_tokens()
        stored = await self.users.get(user.id)
        if stored is None:
            raise NotFound(f"no user {user.name!r}")
        return stored.user

    async def reset_password(self, name: str) -> tuple[User, str]:
        """An admin's reset: a new generated password (shown once); the user's sessions end."""
        user = await self.get_user(name)
        password = generate_password()
        await self.users.set_password(user.id, await self._hash(password))
        self._forget_tokens()
        await self.sessions.remove_for_user(user.id)
        log.info("password of user %s reset by an admin", user.name)
        return user, password

    # --- sign-in ---------------------------------------------------------------------------
    def _sign_in_limits(self, name: str, address: str, known_device: str | None) -> list[_Limit]:
        user = name.strip().lower()[:64]
        if known_device:
            # A browser this user signed in from before: its own counter only, so neither guesses
            # from elsewhere nor a shared (NAT) address can lock its owner out.
            return [_Limit(f"dev:{user}|{known_device[:64]}", self.policy.max_failures)]
        return [
            _Limit(f"ua:{user}|{address}", self.policy.max_failures),
            _Limit(f"user:{user}", self.policy.user_max_failures),
            _Limit(f"ip:{address}", self.policy.address_max_failures),
        ]

    async def _check_locks(self, limits: list[_Limit], now: datetime, what: str) -> None:
        for limit in limits:
            recent = await self.failures.recent(limit.key, now - self.policy.window)
            extra = len(recent) - limit.max_failures
            if extra < 0:
                continue
            lock = min(self.policy.lockout, self.policy.first_lock * 2 ** min(extra, 30))
            until = max(recent) + lock
            if until > now:
                raise RateLimited(
                    f"too many failed {what}; try again in {_wait_text((until - now).total_seconds())}",
                    retry_after=(until - now).total_seconds(),
                )

    async def _failed(self, limits: list[_Limit], now: datetime) -> int:
        """Record a failure under every key; pause a little longer each time; returns the count
        of the narrowest key."""
        await self.failures.record([limit.key for limit in limits], now)
        # Failures older than any window or lockout mean nothing: keep the table small.
        await self.failures.prune(now - self.policy.window - self.policy.lockout)
        count = len(await self.failures.recent(limits[0].key, now - self.policy.window))
        delay = min(self.policy.max_delay, self.policy.base_delay * 2 ** max(0, count - 1))
        if delay > 0:
            await asyncio.sleep(delay)
        return count

    async def authenticate(
        self, name: str, password: str, address: str, known_device: str | None = None
    ) -> User:
        """Check a sign-in. ``known_device`` is the id from a (verified) known-device cookie
        issued to this user name, if the browser sent one."""
        now = datetime.now(UTC)
        limits = self._sign_in_limits(name, address, known_device)
        await self._check_locks(limits, now, "sign-ins")
        stored = await self.users.get_by_name(name.strip())
        ok = False
        if stored is not None:
            ok = await self._verify(stored.password_hash, password)
        else:
            # Spend the same time as a real check so timing does not reveal which names exist.
            await self._verify(_dummy_hash(), password)
        if not ok or stored is None or not stored.user.active:
            count = await self._failed(limits, now)
            log.info(
                "failed sign-in for %r from %s%s (%d recent)",
                name[:64],
                address,
                " (known device)" if known_device else "",
                count,
            )
            raise AuthenticationFailed("wrong user name or password")
        await self.failures.clear(limits[0].key)
        await self.users.touch_login(stored.user.id, now)
        return stored.user

    # --- other secrets guessed over the network (enrollment codes) ------------------------------
    async def check_guesses(self, key: str, what: str) -> None:
        """Refuse (RateLimited) while ``key`` is locked by recent failures, as sign-in is."""
        await self._check_locks([_Limit(key, self.policy.max_failures)], datetime.now(UTC), what)

    async def failed_guess(self, key: str) -> int:
        """Count a failure under ``key`` (with sign-in's growing pause); returns the recent count."""
        return await self._failed([_Limit(key, self.policy.max_failures)], datetime.now(UTC))

    # --- browser sessions ------------------------------------------------------------------
    async def start_session(self, user: User) -> str:
        """Record a new signed-in browser; returns the random id its cookie carries."""
        now = datetime.now(UTC)
        session_id = secrets.token_urlsafe(32)
        await self.sessions.prune(now)
        await self.sessions.add(hash_token(session_id), user.id, now, now + self.policy.session_lifetime)
        return session_id

    async def end_session(self, session_id: str) -> None:
        await self.sessions.remove(hash_token(session_id))

    async def end_other_sessions(self, user: User, keep: str | None) -> None:
        """After a password change: every other browser of ``user`` is signed out."""
        await self.sessions.remove_for_user(user.id, hash_token(keep) if keep else None)

    async def user_for_session(self, user_id: int, session_version: int, session_id: str) -> User | None:
        """The user a session cookie speaks for, or None when the session was ended (sign-out,
        expiry), the user was disabled or changed their password since."""
        stored = await self.users.get(user_id)
        if stored is None or not stored.user.active or stored.user.session_version != session_version:
            return None
        if not await self.sessions.alive(hash_token(session_id), user_id, datetime.now(UTC)):
            return None
        return stored.user

    # --- API tokens ------------------------------------------------------------------------
    async def create_token(self, user: User, name: str) -> tuple[ApiToken, str]:
        name = name.strip()[:100] or "token"
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = await self.tokens.add(user.id, name, secret[:10], hash_token(secret))
        log.info("API token %s (%s) created for user %s", token.id, token.prefix, user.name)
        return token, secret

    async def user_for_token(self, secret: str) -> User:
        if not secret.startswith(TOKEN_PREFIX):
            raise AuthenticationFailed("the API token is not valid")
        key = hash_token(secret)
        cached = self.token_cache.get(key) if self.token_cache is not None else None
        if cached is not None:
            token, user = cached
        else:
            found = await self.tokens.find(key)
            if found is None:
                raise AuthenticationFailed("the API token is not valid")
            token, stored = found
            user = stored.user
            if not token.active or not user.active:
                raise AuthenticationFailed("the API token is not valid")
            if self.token_cache is not None:
                self.token_cache.put(key, token, user)
        now = datetime.now(UTC)
        if self.token_uses is None:
            if token.last_used_at is None or now - token.last_used_at >= TOKEN_USE_RESOLUTION:
                await self.tokens.touch(token.id, now)
        elif self.token_uses.due(token, now):
            self.token_uses.pending[token.id] = now
            if self.token_cache is not None:
                self.token_cache.used(key, now)
            if self.token_used is not None:
                self.token_used()
        return user

    def _forget_tokens(self) -> None:
        """A user or a token changed: no token is taken on trust any more (see TokenCache)."""
        if self.token_cache is not None:
            self.token_cache.clear()

    async def list_tokens(self, user: User) -> list[ApiToken]:
        return await self.tokens.for_user(user.id)

    async def revoke_token(self, user: User, token_id: int) -> None:
        if not await self.tokens.revoke(user.id, token_id, datetime.now(UTC)):
            raise NotFound(f"no active token {token_id}")
        self._forget_tokens()


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


@functools.cache
def _dummy_hash() -> str:
    return _default_hasher.hash("callbridge-timing-equalizer")
