"""Persist first, process after: verified webhook bodies go to a durable inbox before the PBX
gets its 200, and one ordered consumer per PBX feeds them to the mapper afterwards.

Why: the PBX retries on timeouts, and ingest (fold, directory lookup, commit, publish) costs far
more than the PBX should wait. Writes are group-committed — the requests that reach the inbox in
the same turn of the event loop, or while a commit is in flight, share one — so one transaction
carries several webhooks and the ack costs a share of one short insert. A body is acknowledged
only after its commit, so a verified event is never lost: what a crash leaves in the inbox is
processed when the link starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from callbridge.domain.errors import PbxUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    id: int
    received_at: datetime
    body: bytes


class InboxStore(Protocol):
    """Durable, ordered storage for verified webhook bodies (implemented in ``store/``)."""

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        """Insert in order and commit before returning."""
        ...

    def add_now(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> bool:
        """Like :meth:`add`, on the caller's thread without waiting, where the store can (a local
        file with no other writer); False, having stored nothing, where it cannot."""
        ...

    async def pending(self, pbx: str, limit: int) -> list[StoredWebhook]:
        """Oldest first."""
        ...

    async def done(self, pbx: str, ids: Sequence[int], seen: Sequence[str] = ()) -> None:
        """Delete the processed rows ``ids`` and remember the keys ``seen`` (of their bodies and
        events), in one transaction."""
        ...

    async def seen(self, pbx: str, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` remembered by :meth:`done` (for SEEN_KEEP at least)."""
        ...


class WebhookInbox:
    """Group-committing writer for one PBX's webhooks."""

    def __init__(self, pbx: str, store: InboxStore, *, batch_limit: int = 500) -> None:
        self.pbx = pbx
        self.store = store
        self._batch_limit = batch_limit
        self._pending: list[tuple[datetime, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._scheduled = False
        self.stored = asyncio.Event()  # set after every commit: wakes the consumer
        self.commits = 0

    async def persist(self, body: bytes, received_at: datetime | None = None) -> None:
        """Return once ``body`` is committed; raises :class:`PbxUnavailable` when it could not
        be stored (the web layer answers 503 and the PBX retries later)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((received_at or datetime.now(UTC), body, future))
        if not self._scheduled and (self._flusher is None or self._flusher.done()):
            # After the other requests ready in this turn of the loop have joined the batch.
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        # Not shielded: a request cancelled while it waits leaves its body in the batch (stored,
        # never acknowledged, so the PBX sends it again and the retry is known as a duplicate).
        await future

    def _flush_soon(self) -> None:
        self._scheduled = False
        if self._flusher is not None and not self._flusher.done():
            return  # the running flush takes them
        while self._pending:  # a store that can commit right here does
            batch = self._take()
            try:
                stored = self.store.add_now(self.pbx, [(at, body) for at, body, _ in batch])
            except Exception as exc:
                self._failed(batch, exc)
                continue
            if stored:
                self._stored(batch)
            else:
                self._pending[:0] = batch  # not open yet: the asynchronous path opens it
                break
        if self._pending:
            # A task of its own, so a request cancelled mid-commit cannot abort others' commit.
            self._flusher = asyncio.create_task(self._flush(), name=f"yeastar-inbox-{self.pbx}")

    def _take(self) -> list[tuple[datetime, bytes, asyncio.Future[None]]]:
        batch = self._pending[: self._batch_limit]
        del self._pending[: len(batch)]
        return batch

    async def _flush(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                await self.store.add(self.pbx, [(at, body) for at, body, _ in batch])
            except Exception as exc:
                self._failed(batch, exc)
                continue
            self._stored(batch)

    def _stored(self, batch: list[tuple[datetime, bytes, asyncio.Future[None]]]) -> None:
        self.commits += 1
        for *_, future in batch:
            if not future.done():
                future.set_result(None)
        self.stored.set()

    def _failed(self, batch: list[tuple[datetime, bytes, asyncio.Future[None]]], exc: Exception) -> None:
        log.error("yeastar %s: could not store %d webhooks: %s", self.pbx, len(batch), type(exc).__name__)
        for *_, future in batch:
            if not future.done():
                future.set_exception(PbxUnavailable("the hub could not store the event; retry later"))

    async def aclose(self) -> None:
        """Finish the commit in flight (its requests are waiting for it)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher


__all__ = ["InboxStore", "StoredWebhook", "WebhookInbox"]
