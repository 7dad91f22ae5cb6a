"""One owner per PBX link across hub workers.

Two workers running the same link would ingest every event twice and log in to AMI twice. With
Redis, each worker tries to take a lock key per PBX (``SET NX PX``); the owner renews it every
third of its TTL and runs the link; a worker that cannot renew (lost the key, Redis gone) stops
its link at once, and another takes over when the key expires. Without Redis there is one
process, which owns every link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Lock(Protocol):
    async def acquire(self, key: str, owner: str, ttl: float) -> bool: ...

    async def renew(self, key: str, owner: str, ttl: float) -> bool: ...

    async def release(self, key: str, owner: str) -> None: ...


Action = Callable[[str], Awaitable[None]]


class LinkLeases:
    def __init__(
        self, lock: Lock, owner: str, on_acquire: Action, on_lose: Action, *, ttl: float = 15.0
    ) -> None:
        self.lock = lock
        self.owner = owner
        self.ttl = ttl
        self._on_acquire = on_acquire
        self._on_lose = on_lose
        self.owned: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def key(name: str) -> str:
        return f"lease:pbx:{name}"

    def watch(self, name: str) -> None:
        """Keep trying to own the link of PBX ``name`` (and run it while owned)."""
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        self._tasks[name] = asyncio.create_task(self._keep(name), name=f"lease-{name}")

    async def unwatch(self, name: str) -> None:
        """Stop trying to own PBX ``name`` (disabled or removed); give its lease back if owned."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if name in self.owned:
            self.owned.discard(name)
            with contextlib.suppress(Exception):
                await self.lock.release(self.key(name), self.owner)
            await self._on_lose(name)

    async def _keep(self, name: str) -> None:
        key = self.key(name)
        every = self.ttl / 3
        while True:
            try:
                if name in self.owned:
                    still = await self.lock.renew(key, self.owner, self.ttl)
                else:
                    still = await self.lock.acquire(key, self.owner, self.ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease of PBX %s: lock store failed (%s)", name, type(exc).__name__)
                still = False
            if still and name not in self.owned:
                self.owned.add(name)
                log.info("worker %s now runs the link of PBX %s", self.owner, name)
                try:
                    await self._on_acquire(name)
                except Exception:
                    log.exception("could not start the link of PBX %s", name)
            elif not still and name in self.owned:
                self.owned.discard(name)
                log.warning("worker %s lost the lease of PBX %s; stopping its link", self.owner, name)
                await self._on_lose(name)
            await asyncio.sleep(every)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for name in list(self.owned):
            with contextlib.suppress(Exception):
                await self.lock.release(self.key(name), self.owner)
        self.owned.clear()
