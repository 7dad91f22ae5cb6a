"""ERP connectors in the hub: builds each connector from its stored record and credentials, runs
the directory syncs on their schedule and the pusher that writes calls into the ERPs.

The wiring lives here (like ``hub.py``): ``crm/`` speaks to the ERPs and knows no SQL, ``store/``
knows no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets as pysecrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.config import Settings
from callbridge.crm.base import Check, Connector
from callbridge.crm.erpnext import ErpnextConnector
from callbridge.crm.odoo import OdooConnector
from callbridge.crm.outbox import Job, Outcome, Pusher
from callbridge.crm.sync import Progress, SyncReport, SyncStore, run_sync
from callbridge.domain.connectors import (
    CallPush,
    ConnectorError,
    ConnectorKind,
    ConnectorRecord,
    clean_base_url,
    clean_connector_name,
)
from callbridge.domain.errors import Conflict, InvalidInput
from callbridge.domain.events import Direction, Disposition
from callbridge.domain.recordings import RecordingStatus
from callbridge.services.directory import relink_numbers
from callbridge.store.connectors import OutboxJob, SqlConnectors, Written

if TYPE_CHECKING:
    from callbridge.store.db import Database

log = logging.getLogger(__name__)

CONNECTOR_RECHECK_SECONDS = 5.0
# A sync holds the connector's lease this long, renewed every third of it while it runs: of
# several hub workers (``serve --workers N``) one syncs each connector; should it die, another
# takes over when the lease runs out.
SYNC_LEASE_SECONDS = 120.0
# An incremental sync re-links the past calls of the numbers it changed, up to this many.
RELINK_MAX_NUMBERS = 2000


def build_connector(record: ConnectorRecord, secrets: dict[str, str]) -> Connector:
    config = record.config
    if record.kind is ConnectorKind.ERPNEXT:
        return ErpnextConnector(
            record.url,
            secrets.get("api_key", ""),
            secrets.get("api_secret", ""),
            time_zone=str(config.get("time_zone") or "UTC"),
        )
    return OdooConnector(
        record.url,
        str(config.get("database") or ""),
        str(config.get("username") or ""),
        secrets.get("api_key", ""),
        api=str(config.get("api") or ""),
    )


def _fingerprint(record: ConnectorRecord, secrets: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for part in (
        record.kind.value,
        record.url,
        repr(sorted(record.config.items())),
        repr(sorted(secrets.items())),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


class ConnectorHub:
    """Implements :class:`callbridge.crm.outbox.OutboxHost` over the database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._built: dict[int, tuple[str, Connector]] = {}
        self._checked: dict[int, float] = {}
        self.pusher = Pusher(self, max_backoff=settings.connector_retry_max_seconds)
        self._scheduler: asyncio.Task[None] | None = None
        self._syncing: set[int] = set()
        # This hub's name in the connectors' sync leases (unique per process and instance).
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{pysecrets.token_hex(4)}"

    # -- connectors -------------------------------------------------------------------------------

    async def connector(self, connector_id: int) -> Connector | None:
        """The connector, built once and rebuilt when its record or credentials change (checked
        at most every few seconds: the pusher asks for every call)."""
        checked = self._checked.get(connector_id)
        if checked is not None and time.monotonic() - checked < CONNECTOR_RECHECK_SECONDS:
            known = self._built.get(connector_id)
            if known is not None:
                return known[1]
        self._checked[connector_id] = time.monotonic()
        async with self.db.unit() as repos:
            record = await repos.connectors.by_id(connector_id)
            if record is None or not record.enabled:
                self._checked.pop(connector_id, None)
                return None
            secrets = await repos.connectors.secrets(record.name)
        digest = _fingerprint(record, secrets)
        known = self._built.get(connector_id)
        if known is not None and known[0] == digest:
            return known[1]
        if known is not None:
            await known[1].aclose()
        built = build_connector(record, secrets)
        self._built[connector_id] = (digest, built)
        return built

    async def _named(self, name: str) -> tuple[ConnectorRecord, Connector]:
        async with self.db.unit() as repos:
            record = await repos.connectors.get(name)
            secrets = await repos.connectors.secrets(name)
        return record, build_connector(record, secrets)

    async def test(self, name: str) -> list[Check]:
        _, connector = await self._named(name)
        try:
            return await connector.test()
        finally:
            await connector.aclose()

    @asynccontextmanager
    async def _sync_units(self) -> AsyncIterator[SyncStore]:
        async with self.db.unit() as repos:
            yield repos.connectors

    async def sync(self, name: str, *, full: bool = False, progress: Progress | None = None) -> SyncReport:
        """One sync of connector ``name``; an ERP error is recorded on the connector and raised."""
        record, connector = await self._named(name)
        try:
            return await self._sync(record, connector, full=full, progress=progress)
        finally:
            await connector.aclose()

    async def _lease(self, connector_id: int, *, due_before: datetime | None) -> bool:
        at = datetime.now(UTC)
        async with self.db.unit() as repos:
            return await repos.connectors.take_sync_lease(
                connector_id,
                self.owner,
                at,
                at + timedelta(seconds=SYNC_LEASE_SECONDS),
                due_before=due_before,
            )

    async def _keep_lease(self, record: ConnectorRecord) -> None:
        while True:
            await asyncio.sleep(SYNC_LEASE_SECONDS / 3)
            try:
                async with self.db.unit() as repos:
                    until = datetime.now(UTC) + timedelta(seconds=SYNC_LEASE_SECONDS)
                    kept = await repos.connectors.renew_sync_lease(record.id, self.owner, until)
            except Exception as exc:  # the database is restarting: try again shortly
                log.warning("connector %s: sync lease not renewed: %s", record.name, type(exc).__name__)
                continue
            if not kept:
                log.warning("connector %s: sync lease lost to another worker", record.name)
                return

    async def _sync(
        self,
        record: ConnectorRecord,
        connector: Connector,
        *,
        full: bool,
        progress: Progress | None = None,
        due_before: datetime | None = None,
    ) -> SyncReport:
        """One sync under the connector's lease. ``due_before``: only when the last sync is older
        (the schedule; checked with the lease, so another worker's fresh sync counts)."""
        if record.id in self._syncing:
            raise Conflict(f"connector {record.name} is syncing already")
        self._syncing.add(record.id)
        try:
            if not await self._lease(record.id, due_before=due_before):
                raise Conflict(f"connector {record.name} is syncing already (another hub worker)")
        except BaseException:
            self._syncing.discard(record.id)
            raise
        keeper = asyncio.create_task(self._keep_lease(record), name=f"connector-lease-{record.id}")
        try:
            report = await run_sync(
                connector,
                record.id,
                self._sync_units,
                self.settings.default_region,
                full=full,
                progress=progress,
                sweep_seconds=self.settings.connector_sweep_seconds,
            )
            if report.keys and len(report.keys) <= RELINK_MAX_NUMBERS:
                # Earlier calls of a number the ERP just gave a contact are linked to it.
                async with self.db.unit() as repos:
                    await relink_numbers(
                        repos.directory, repos.calls, self.settings.default_region, report.keys
                    )
            return report
        except ConnectorError as exc:
            async with self.db.unit() as repos:
                await repos.connectors.note_error(record.id, f"sync: {exc}")
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            with contextlib.suppress(Exception):  # else it runs out by itself
                async with self.db.unit() as repos:
                    await repos.connectors.release_sync_lease(record.id, self.owner)
            self._syncing.discard(record.id)

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.pusher.start()
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.create_task(self._schedule(), name="connector-sync")

    def wake(self) -> None:
        self.pusher.wake()

    async def _schedule(self) -> None:
        while True:
            try:
                await self.sync_due()
            except Exception as exc:  # the database is restarting: next round
                log.warning("connector sync round failed: %s", type(exc).__name__)
            await asyncio.sleep(min(5.0, self.settings.connector_sync_seconds))

    async def sync_due(self) -> None:
        """Sync every enabled connector whose last sync is older than its interval."""
        async with self.db.unit() as repos:
            records = await repos.connectors.all()
        at = datetime.now(UTC)
        for record in records:
            if not record.enabled or record.id in self._syncing:
                continue
            interval = float(str(record.config.get("sync_seconds") or self.settings.connector_sync_seconds))
            if record.last_sync_at is not None and (at - record.last_sync_at).total_seconds() < interval:
                continue
            connector = await self.connector(record.id)
            if connector is None:
                continue
            try:
                await self._sync(record, connector, full=False, due_before=at - timedelta(seconds=interval))
            except Conflict:
                continue  # another worker syncs it, or just did
            except ConnectorError as exc:
                log.warning("connector %s: sync failed: %s", record.name, exc)

    async def close(self) -> None:
        await self.pusher.close()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
            self._scheduler = None
        for _, built in self._built.values():
            with contextlib.suppress(Exception):
                await built.aclose()
        self._built.clear()

    # -- the outbox (OutboxHost) ------------------------------------------------------------------

    async def claim(self, at: datetime, limit: int, lease: timedelta) -> list[Job]:
        # In turn with ingest: on SQLite a writer left to the lock's retries waits seconds
        # behind a steady stream of ingest transactions (see Database.write_turn).
        async with self.db.write_turn(), self.db.unit() as repos:
            return list(await repos.connectors.claim(at, limit, lease))

    async def next_due_at(self) -> datetime | None:
        async with self.db.unit() as repos:
            return await repos.connectors.next_due_at()

    async def load(self, jobs: list[Job]) -> dict[int, CallPush | None]:
        out: dict[int, CallPush | None] = {}
        async with self.db.unit() as repos:
            for job in jobs:
                out[job.id] = await self._load(repos, job)
        return out

    async def _load(self, repos: Any, job: Job) -> CallPush | None:
        call = await repos.calls.find(job.call_id)
        if call is None or call.direction not in (Direction.INBOUND, Direction.OUTBOUND):
            return None
        linked = [ref.id for ref in (call.contact, call.company) if ref is not None]
        links = await repos.connectors.ext_ids_for(job.connector_id, linked)
        recording_url = job.recording_url if isinstance(job, OutboxJob) else ""
        if not recording_url and self.settings.public_url and call.recording:
            recording_url = await self._recording_link(repos, job.call_id)
        transcript = await repos.transcripts.for_call(job.call_id) if call.recording else None
        answered, placed = call.answered_by_user, call.placed_by_user
        emails = await repos.connectors.user_emails([n for n in (answered, placed) if n])
        # Only a missed inbound call has a callback task (and an ERP to-do to close).
        missed = call.direction is Direction.INBOUND and call.disposition not in (None, Disposition.ANSWERED)
        return CallPush(
            call_id=call.id,
            pbx_call_id=call.pbx_call_id,
            direction=call.direction.value,
            from_number=call.from_number,
            to_number=call.to_number,
            external_number=call.external_number,
            started_at=call.started_at,
            answered_at=call.answered_at,
            ended_at=call.ended_at,
            talk_seconds=call.talk_seconds,
            disposition=call.disposition.value if call.disposition else None,
            answered_by=call.answered_by_extension,
            answered_by_user=answered,
            answered_by_email=emails.get(answered, ""),
            placed_by_user=placed,
            placed_by_email=emails.get(placed, ""),
            recording_url=recording_url,
            summary=(transcript.summary or "") if transcript is not None else "",
            links=tuple(links),
            callback_done=missed and await repos.tasks.callback_closed(call.id),
        )

    async def _recording_link(self, repos: Any, call_id: int) -> str:
        """A signed, expiring link to the call's stored recording (a share, as a person would make)."""
        ready = [r for r in await repos.recordings.for_call(call_id) if r.status is RecordingStatus.READY]
        if not ready:
            return ""
        token = pysecrets.token_urlsafe(24)
        days = self.settings.connector_recording_link_days
        digest = hashlib.sha256(token.encode()).hexdigest()  # as web/routes/recordings.token_hash
        await repos.shares.add(ready[0].id, digest, None, datetime.now(UTC) + timedelta(days=days))
        return self.settings.public_url.rstrip("/") + f"/shared/{token}"

    async def finish(self, outcomes: list[Outcome], recovered: set[int]) -> None:
        written: list[Written] = []
        failed: list[tuple[OutboxJob, str, datetime]] = []
        for o in outcomes:
            assert isinstance(o.job, OutboxJob)
            if o.result is not None:
                written.append(Written(o.job, o.result.ext_id, o.result.url, o.result.note, o.recording_url))
            elif o.retry_at is not None:
                failed.append((o.job, o.error, o.retry_at))
        # A statement per kind of outcome, not per call: on SQLite this transaction holds the
        # write lock from its first write to its commit, and every await in between is a turn of
        # a busy event loop that ingest (a hang-up) and the next claim wait behind.
        async with self.db.write_turn(), self.db.unit() as repos:
            await repos.connectors.pushed(written)
            await repos.connectors.retry(failed)
            failing: dict[int, Outcome] = {o.job.connector_id: o for o in outcomes if o.result is None}
            for connector_id, o in failing.items():
                await repos.connectors.note_error(connector_id, f"call {o.job.call_id}: {o.error}")
            for connector_id in recovered - set(failing):
                await repos.connectors.due_now(connector_id)
                await repos.connectors.note_error(connector_id, "")
        if recovered:
            self.pusher.wake()


def connector_settings(
    kind: ConnectorKind,
    *,
    api_key: str,
    api_secret: str = "",
    database: str = "",
    username: str = "",
    time_zone: str = "",
    api: str = "",
    sync_seconds: float | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check what a person gave for a connector; returns (settings, credentials) or raises
    :class:`InvalidInput` naming the first missing or wrong value."""
    if not api_key.strip():
        raise InvalidInput("the API key is required")
    config: dict[str, Any] = {}
    if sync_seconds is not None:
        if not 5 <= sync_seconds <= 86400:
            raise InvalidInput("sync interval: between 5 and 86400 seconds")
        config["sync_seconds"] = sync_seconds
    if kind is ConnectorKind.ERPNEXT:
        if not api_secret.strip():
            raise InvalidInput("the API secret is required (ERPNext: User → API Access → Generate Keys)")
        if time_zone:
            try:
                ZoneInfo(time_zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise InvalidInput(f"time zone {time_zone!r} is not an IANA zone name") from exc
            config["time_zone"] = time_zone
        return config, {"api_key": api_key.strip(), "api_secret": api_secret.strip()}
    if not database.strip() or not username.strip():
        raise InvalidInput("Odoo needs the database name and the user name (login) of the API key's user")
    if api and api not in ("jsonrpc", "json2"):
        raise InvalidInput("api: jsonrpc (Odoo 16-18) or json2 (Odoo 19+); empty: ask the server")
    config.update(database=database.strip(), username=username.strip())
    if api:
        config["api"] = api
    return config, {"api_key": api_key.strip()}


async def add_connector(
    store: SqlConnectors,
    kind: ConnectorKind,
    name: str,
    url: str,
    config: dict[str, Any],
    secrets: dict[str, str],
) -> ConnectorRecord:
    return await store.add(clean_connector_name(name), kind, clean_base_url(url), config, secrets)
