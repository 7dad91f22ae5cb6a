"""The hub's composition root: builds the long-lived parts once from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher

from callbridge.bus import Bus, LocalBus
from callbridge.config import Settings
from callbridge.services.accounts import Accounts, LoginPolicy
from callbridge.store.db import Database
from callbridge.store.migrate import upgrade
from callbridge.store.repos import Repos
from callbridge.store.secrets import SecretBox, load_or_create_key

log = logging.getLogger(__name__)


@dataclass
class Hub:
    settings: Settings
    db: Database
    box: SecretBox
    bus: Bus
    login_policy: LoginPolicy
    hasher: PasswordHasher | None = None
    # Long-lived services that later parts attach (PBX links, live fan-out, …).
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, *, hasher: PasswordHasher | None = None) -> Hub:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        explicit = settings.secret_key.get_secret_value() if settings.secret_key else None
        box = SecretBox(load_or_create_key(settings.data_dir, explicit))
        policy = LoginPolicy(
            max_failures=settings.login_max_failures,
            window=_seconds(settings.login_window_seconds),
            lockout=_seconds(settings.login_lockout_seconds),
            base_delay=settings.login_delay_seconds,
        )
        return cls(
            settings=settings,
            db=Database(settings.effective_database_url, box),
            box=box,
            bus=_make_bus(settings),
            login_policy=policy,
            hasher=hasher,
        )

    def accounts(self, repos: Repos) -> Accounts:
        return Accounts(
            repos.users, repos.tokens, repos.failures, policy=self.login_policy, hasher=self.hasher
        )

    async def prepare(self) -> str | None:
        """Migrate the schema and create the first admin; returns its password on first start."""
        await upgrade(self.settings.effective_database_url)
        async with self.db.unit() as repos:
            return await self.accounts(repos).ensure_admin()

    async def close(self) -> None:
        await self.bus.close()
        await self.db.dispose()


def _seconds(value: int) -> timedelta:
    return timedelta(seconds=value)


def _make_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        from callbridge.bus_redis import RedisBus

        return RedisBus(settings.redis_url)
    return LocalBus()
