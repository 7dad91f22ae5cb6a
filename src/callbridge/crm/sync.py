"""Directory sync from an ERP: a first full sync, then incremental runs by modification time.

State (kept in the connector's row, saved after every page, so an interrupted sync resumes
where it stopped): per stream a keyset cursor ``(since, after)``; the number of the current
*run*; whether the first full sync finished; when deleted records were last looked for.

- Every record read is written with the run's number. A full sync reads every live record, so
  at its end the contacts of records it did not see are removed: deleted or merged away in the
  ERP. Between full syncs the same happens every ``sweep_seconds`` from the list of live ids
  alone (cheap: ids, no fields).
- An archived record (Odoo ``active = False``) is removed as soon as an incremental run sees it.
- The ERP owns the fields it sends (name, kind, company, numbers, e-mail, tags, owner): they are
  overwritten. The contact's notes are callbridge's and stay.
- Only one page is in memory at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from callbridge.crm.base import PAGE, Connector
from callbridge.domain.connectors import ExternalContact, PageResult, SyncedContact
from callbridge.domain.directory import (
    ContactKind,
    Phone,
    PhoneKind,
    clean_email,
    clean_name,
    clean_phones,
    clean_tags,
)
from callbridge.domain.errors import InvalidInput
from callbridge.domain.numbers import NumberKind, parse_key

_parse_key = parse_key.__wrapped__

log = logging.getLogger(__name__)

SWEEP_SECONDS = 900


class SyncStore(Protocol):
    async def sync_state(self, connector_id: int) -> dict[str, Any]: ...

    async def save_sync_state(
        self,
        connector_id: int,
        state: dict[str, Any],
        *,
        syncing: bool | None = None,
        synced_at: datetime | None = None,
        error: str | None = None,
    ) -> None: ...

    async def apply_page(self, connector_id: int, items: list[SyncedContact], run: int) -> PageResult: ...

    async def remove_records(self, connector_id: int, ext_ids: list[str]) -> int: ...

    async def mark_seen(self, connector_id: int, ext_ids: list[str], run: int) -> None: ...

    async def sweep(self, connector_id: int, run: int) -> int: ...

    async def analyze(self) -> None: ...


Units = Callable[[], AbstractAsyncContextManager[SyncStore]]
Progress = Callable[[str, int, int], None]  # stream, records done, total (0: unknown)


@dataclass(slots=True)
class SyncReport:
    full: bool = False
    created: int = 0
    updated: int = 0
    removed: int = 0
    skipped_numbers: int = 0
    read: int = 0
    seconds: float = 0.0
    keys: set[str] = field(default_factory=set)

    def summary(self) -> str:
        kind = "full sync" if self.full else "incremental sync"
        parts = [
            f"{self.read} records read",
            f"{self.created} created",
            f"{self.updated} updated",
            f"{self.removed} removed",
        ]
        if self.skipped_numbers:
            parts.append(f"{self.skipped_numbers} unreadable numbers skipped")
        return f"{kind}: " + ", ".join(parts) + f" in {self.seconds:.1f} s"


def _phone(raw: str, region: str, kind: str) -> Phone | None:
    """The number's key as every lookup computes it (:func:`parse_key`), without its cache: a
    sync reads each number once, and would only push the hot numbers of calls out of it."""
    number_kind, key = _parse_key(raw.strip(), region)
    if number_kind is not NumberKind.E164:
        return None  # junk, or an extension: neither is a number to look a caller up by
    try:
        phone_kind = PhoneKind(kind)
    except ValueError:
        phone_kind = PhoneKind.OTHER
    return Phone(raw=raw.strip()[:64], key=key, kind=phone_kind)


def to_synced(record: ExternalContact, region: str) -> tuple[SyncedContact, int]:
    """Clean one ERP record for the directory; returns it and how many of its numbers could not
    be read (those are left out, the record is kept)."""
    phones: list[Phone] = []
    bad = 0
    for raw, kind in record.phones:
        phone = _phone(raw, region, kind)
        if phone is None:
            bad += 1
        else:
            phones.append(phone)
    try:
        name = clean_name(record.name)
    except InvalidInput:
        name = record.ext_id
    try:
        email = clean_email(record.email)
    except InvalidInput:
        email = ""
    try:
        tags = clean_tags(record.tags)
    except InvalidInput:
        tags = ()
    return (
        SyncedContact(
            ext_id=record.ext_id,
            url=record.url,
            modified=record.modified,
            kind=ContactKind.COMPANY if record.is_company else ContactKind.PERSON,
            name=name,
            phones=clean_phones(phones[:20]),
            email=email,
            tags=tags,
            owner=record.owner,
            company_ext_id=record.company_ext_id,
        ),
        bad,
    )


def _key(ext_id: str) -> str:
    return ext_id.partition("/")[2]


async def run_sync(
    connector: Connector,
    connector_id: int,
    units: Units,
    region: str,
    *,
    full: bool = False,
    progress: Progress | None = None,
    page_size: int = PAGE,
    sweep_seconds: float = SWEEP_SECONDS,
) -> SyncReport:
    """One sync run (full when asked or when the first full sync never finished). Raises the
    connector's error (the caller records it); what was written page by page stays."""
    started = time.monotonic()
    async with units() as store:
        state = await store.sync_state(connector_id)
    full = full or not state.get("full_done")
    report = SyncReport(full=full)
    cursors: dict[str, Any] = dict(state.get("streams") or {})
    run = int(state.get("run") or 0)
    if full:
        if not state.get("full_running"):
            # A new full sync (not one resumed): a new run, every cursor from the start.
            run += 1
            cursors = {}
        state = {**state, "run": run, "full_running": True, "streams": cursors}
        async with units() as store:
            await store.save_sync_state(connector_id, state, syncing=True)
    for stream in connector.streams:
        total = await connector.count(stream) if full and progress else 0
        done = 0
        cursor = dict(cursors.get(stream) or {"since": "", "after": ""})
        fetching = asyncio.ensure_future(connector.page(stream, cursor["since"], cursor["after"], page_size))
        try:
            while True:
                page = await fetching
                if not page:
                    break
                if len(page) >= page_size:
                    # The next page travels while this one is cleaned and written (one page ahead,
                    # never more: memory stays at two pages).
                    last = page[-1]
                    fetching = asyncio.ensure_future(
                        connector.page(stream, last.modified, _key(last.ext_id), page_size)
                    )
                report.read += len(page)
                live = [r for r in page if r.active]
                gone = [r.ext_id for r in page if not r.active]
                items = []
                for record in live:
                    item, bad = to_synced(record, region)
                    items.append(item)
                    report.skipped_numbers += bad
                last = page[-1]
                cursor = {"since": last.modified, "after": _key(last.ext_id)}
                cursors[stream] = cursor
                async with units() as store:
                    result = await store.apply_page(connector_id, items, run)
                    if gone:
                        report.removed += await store.remove_records(connector_id, gone)
                    await store.save_sync_state(connector_id, {**state, "run": run, "streams": cursors})
                report.created += result.created
                report.updated += result.updated
                if not full:
                    report.keys |= result.keys
                done += len(page)
                if progress:
                    progress(stream, done, max(total, done))
                if len(page) < page_size:
                    break
        finally:
            if not fetching.done():
                fetching.cancel()  # an error on this page: the next one is not wanted
    now = datetime.now(UTC)
    state = {**state, "run": run, "streams": cursors}
    if full:
        async with units() as store:
            report.removed += await store.sweep(connector_id, run)
        async with units() as store:
            await store.analyze()
        state.update(full_done=True, full_running=False, swept_at=now.timestamp())
    elif now.timestamp() - float(state.get("swept_at") or 0) >= sweep_seconds:
        run += 1
        state["run"] = run
        for stream in connector.streams:
            after = ""
            while True:
                ids = await connector.ids(stream, after, page_size * 4)
                if not ids:
                    break
                async with units() as store:
                    await store.mark_seen(connector_id, ids, run)
                after = _key(ids[-1])
                if len(ids) < page_size * 4:
                    break
        async with units() as store:
            report.removed += await store.sweep(connector_id, run)
        state["swept_at"] = now.timestamp()
    report.seconds = time.monotonic() - started
    async with units() as store:
        await store.save_sync_state(connector_id, state, syncing=False, synced_at=now, error="")
    log.info("connector %s: %s", connector_id, report.summary())
    return report
