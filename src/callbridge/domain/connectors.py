"""ERP connectors (ERPNext/Frappe, Odoo): what callbridge knows of them, in its own words.

A connector has a kind, a name and a base URL; its credentials are secrets (encrypted at rest by
the store). The directory takes records from it (:class:`ExternalContact`), and calls go to it
(:class:`CallPush`). Nothing here knows HTTP, SQL or either ERP's field names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.errors import CallbridgeError, InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConnectorKind(StrEnum):
    ERPNEXT = "erpnext"
    ODOO = "odoo"

    @property
    def label(self) -> str:
        return "ERPNext" if self is ConnectorKind.ERPNEXT else "Odoo"


# What a connector is doing, as its page shows it.
class ConnectorState(StrEnum):
    NEW = "new"  # never synced
    SYNCING = "syncing"  # a full sync is under way
    OK = "ok"  # the last sync and the last push went through
    FAILING = "failing"  # the last attempt failed (see last_error)
    DISABLED = "disabled"


# -- errors: what went wrong talking to an ERP, in words a person acts on ------------------------


class ConnectorError(CallbridgeError):
    code = "connector_error"
    # Whether trying again later may succeed (the ERP is down, slow, rate-limiting).
    transient = True
    retry_after: float | None = None


class ErpUnreachable(ConnectorError):
    code = "erp_unreachable"


class ErpAuthFailed(ConnectorError):
    code = "erp_auth_failed"
    transient = False


class ErpForbidden(ConnectorError):
    code = "erp_forbidden"
    transient = False


class ErpRejected(ConnectorError):
    """The ERP refused the data (a validation error): sending it again unchanged will not help."""

    code = "erp_rejected"
    transient = False
    # Frappe's DuplicateEntryError (409): the record exists already.
    duplicate = False


class ErpMissing(ConnectorError):
    """A record the request named does not exist (deleted meanwhile)."""

    code = "erp_missing"
    transient = False


class ErpBusy(ConnectorError):
    """Rate limited (429) or overloaded: wait ``retry_after`` seconds."""

    code = "erp_busy"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ErpBroken(ConnectorError):
    """A 5xx, an HTML page where JSON was due, an answer that makes no sense."""

    code = "erp_broken"


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectorRecord:
    id: int
    name: str
    kind: ConnectorKind
    url: str
    config: dict[str, object]
    enabled: bool = True
    state: ConnectorState = ConnectorState.NEW
    last_sync_at: datetime | None = None
    last_error: str = ""
    created_at: datetime | None = None

    @property
    def label(self) -> str:
        return self.kind.label


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """One line of ``GET /api/v1/connectors``."""

    record: ConnectorRecord
    contacts: int
    calls_pushed: int
    calls_waiting: int


@dataclass(frozen=True, slots=True)
class ExternalRef:
    """Where a contact or a call lives in an ERP: ``{"connector", "kind", "id", "url"}``."""

    connector: str
    kind: ConnectorKind
    id: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"connector": self.connector, "kind": self.kind.value, "id": self.id, "url": self.url}


@dataclass(frozen=True, slots=True)
class ExternalContact:
    """A directory record read from an ERP, before it is matched to a contact.

    ``ext_id`` is ``<doctype or model>/<name or id>`` (``Contact/CONT-0001``,
    ``res.partner/42``); ``company_ext_id`` names the record of the company it belongs to."""

    ext_id: str
    url: str
    is_company: bool
    name: str
    phones: tuple[tuple[str, str], ...] = ()  # (raw number, kind: work/mobile/home/other)
    email: str = ""
    tags: tuple[str, ...] = ()
    owner: str = ""  # the ERP's user (login or e-mail) who owns the record
    company_ext_id: str = ""
    modified: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class ContactLinkTarget:
    """The ERP record a call links to, with the contact it was synced as."""

    ext_id: str
    contact_id: int


@dataclass(frozen=True, slots=True)
class CallPush:
    """What a connector writes for one call (built from the call log, pushed as it progresses)."""

    call_id: int
    pbx_call_id: str
    direction: str  # inbound / outbound / internal
    from_number: str
    to_number: str
    external_number: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    talk_seconds: int
    disposition: str | None  # None while in progress
    answered_by: str = ""  # extension
    answered_by_user: str = ""  # callbridge user name
    answered_by_email: str = ""  # that user's e-mail address (their user id in an ERP)
    placed_by_user: str = ""
    placed_by_email: str = ""
    recording_url: str = ""
    summary: str = ""
    links: tuple[str, ...] = field(default=())  # ext ids of the contact (and its company)
    # A missed call whose callback task is done (the ERP's to-do for it is closed).
    callback_done: bool = False

    @property
    def complete(self) -> bool:
        return self.disposition is not None

    @property
    def missed(self) -> bool:
        return self.disposition in {"missed", "abandoned", "busy", "voicemail", "failed"}

    @property
    def marker(self) -> str:
        """The stable id a call is known by in the ERP: makes every write idempotent."""
        return f"callbridge-{self.call_id}"


def clean_connector_name(name: str) -> str:
    text = (name or "").strip()
    if not _NAME.match(text):
        raise InvalidInput(
            f"connector name {text!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return text


def clean_base_url(url: str) -> str:
    text = (url or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+(:\d+)?(/\S*)?$", text):
        raise InvalidInput(f"url {url!r}: must be an http:// or https:// address")
    return text


@dataclass(frozen=True, slots=True)
class SyncedContact:
    """One ERP record, cleaned, ready to be written as a contact (see crm/sync.py)."""

    ext_id: str
    url: str
    modified: str
    kind: ContactKind
    name: str
    phones: tuple[Phone, ...]
    email: str
    tags: tuple[str, ...]
    owner: str  # an ERP user: matched to a callbridge user by name or e-mail's local part
    company_ext_id: str


@dataclass(frozen=True, slots=True)
class PageResult:
    created: int
    updated: int
    keys: frozenset[str]
