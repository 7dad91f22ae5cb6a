"""ERPNext / Frappe over its REST API (``/api/resource``, ``/api/method``), token auth.

Directory: Customer (companies, or people for "Individual" customers), Lead, Contact with its
``phone_nos`` (Contact Phone) and ``links`` (Dynamic Link) child tables, read for a whole page of
contacts at once with ``frappe.client.get_list`` (``parent="Contact"``): three requests per page
of 500, never one per record.

Calls: the standard Call Log doctype, named by its ``id`` field (``callbridge-<call id>``), so a
write is idempotent: created once (a 409 "duplicate" means an earlier attempt got through and is
followed by an update), then updated as the call progresses.

Who took the call: the callbridge user of the extension that answered (inbound) or placed
(outbound) it is an ERPNext User by e-mail address; ``employee_user_id`` is that User and
``call_received_by`` the Employee whose ``user_id`` it is (both Links: a value ERPNext lacks is a
417, so they are looked up first, cached for a few minutes, and left empty when not found).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

from callbridge.crm.base import Check, Pushed
from callbridge.crm.http import TIMEOUT, decode_json, send, short, status_error
from callbridge.domain.connectors import (
    CallPush,
    ConnectorError,
    ErpAuthFailed,
    ErpBusy,
    ErpForbidden,
    ErpMissing,
    ErpRejected,
    ErpUnreachable,
    ExternalContact,
)

STREAMS = ("Customer", "Lead", "Contact")
_FIELDS = {
    "Customer": ["name", "customer_name", "customer_type", "mobile_no", "email_id", "modified"],
    "Lead": ["name", "lead_name", "company_name", "phone", "mobile_no", "email_id", "lead_owner", "modified"],
    "Contact": ["name", "first_name", "last_name", "email_id", "modified"],
}
# What "who took the call" reads, and the Call Log field each fills.
PEOPLE = (("Employee", "call_received_by"), ("User", "employee_user_id"))
# How long who-is-who (User → Employee) is believed before ERPNext is asked again.
PEOPLE_TTL = 300.0
_STATUS = {
    "answered": "Completed",
    "missed": "No Answer",
    "abandoned": "No Answer",
    "voicemail": "No Answer",
    "busy": "Busy",
    "failed": "Failed",
}


def server_message(body: Any) -> str:
    """The readable part of a Frappe error body (``_server_messages``, ``exception``, ``message``)."""
    if not isinstance(body, dict):
        return ""
    raw = body.get("_server_messages")
    if isinstance(raw, str):
        try:
            items = json.loads(raw)
            texts = []
            for item in items if isinstance(items, list) else []:
                inner = json.loads(item) if isinstance(item, str) else item
                if isinstance(inner, dict) and inner.get("message"):
                    texts.append(str(inner["message"]))
            if texts:
                return "; ".join(texts)
        except (ValueError, TypeError):
            pass
    for key in ("exception", "message", "exc_type"):
        if body.get(key):
            return str(body[key])
    return ""


def _slug(doctype: str) -> str:
    return doctype.lower().replace(" ", "-")


class ErpnextConnector:
    streams: Sequence[str] = STREAMS

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        time_zone: str = "UTC",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.zone = ZoneInfo(time_zone or "UTC")
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT)
        self._headers = {"Authorization": f"token {api_key}:{api_secret}", "Accept": "application/json"}
        # e-mail → (Employee name, User name, believed until): "" when ERPNext has none.
        self._people: dict[str, tuple[str, str, float]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the wire ---------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = await send(self._client, method, self.url + path, what, headers=self._headers, **kwargs)
        if response.status_code >= 400:
            body: Any = None
            try:
                body = response.json()
            except ValueError:
                body = None
            error = status_error(response, what, server_message(body))
            if isinstance(error, ErpRejected) and isinstance(body, dict):
                error.duplicate = "DuplicateEntryError" in str(body.get("exc_type"))
            raise error
        return decode_json(response, what)

    async def _list(
        self, doctype: str, fields: list[str], filters: list[Any], offset: int, limit: int, order: str
    ) -> list[dict[str, Any]]:
        params = {
            "fields": json.dumps(fields),
            "filters": json.dumps(filters),
            "limit_start": str(offset),
            "limit_page_length": str(limit),
            "order_by": order,
        }
        body = await self._call("GET", f"/api/resource/{quote(doctype)}", f"reading {doctype}", params=params)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ConnectorError(f"reading {doctype}: the answer has no list of records")
        return [row for row in data if isinstance(row, dict)]

    async def _children(self, doctype: str, fields: list[str], parents: list[str]) -> list[dict[str, Any]]:
        if not parents:
            return []
        payload = {
            "doctype": doctype,
            "parent": "Contact",
            "fields": fields,
            "filters": [["parenttype", "=", "Contact"], ["parent", "in", parents]],
            "limit_page_length": 0,
        }
        body = await self._call(
            "POST", "/api/method/frappe.client.get_list", f"reading {doctype} of contacts", json=payload
        )
        data = body.get("message") if isinstance(body, dict) else None
        return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []

    # -- test connection -------------------------------------------------------------------------

    async def test(self) -> list[Check]:
        checks: list[Check] = []
        try:
            body = await self._call("GET", "/api/method/frappe.auth.get_logged_user", "signing in")
            user = body.get("message", "") if isinstance(body, dict) else ""
            checks.append(Check("sign in", True, f"signed in as {user}"))
        except ConnectorError as exc:
            return [Check("sign in", False, str(exc))]
        for doctype in (*STREAMS, "Call Log"):
            try:
                await self._list(doctype, ["name"], [], 0, 1, "modified desc")
                checks.append(Check(f"read {doctype}", True))
            except ErpForbidden:
                checks.append(Check(f"read {doctype}", False, f"the API user may not read {doctype}"))
            except ConnectorError as exc:
                checks.append(Check(f"read {doctype}", False, str(exc)))
        # Who took each call: the Employee whose user_id is the person's address, else the User.
        for doctype, field in PEOPLE:
            try:
                await self._list(doctype, ["name"], [], 0, 1, "modified desc")
                checks.append(Check(f"read {doctype}", True))
            except ErpForbidden:
                why = (
                    f"the API user may not read {doctype} (needed for the Call Log's {field}):"
                    " calls are written without who took them"
                )
                checks.append(Check(f"read {doctype}", False, why))
            except ConnectorError as exc:
                checks.append(Check(f"read {doctype}", False, str(exc)))
        return checks

    # -- directory ----------------------------------------------------------------------------------

    def deep_link(self, ext_id: str) -> str:
        doctype, _, name = ext_id.partition("/")
        return f"{self.url}/app/{_slug(doctype)}/{quote(name, safe='')}"

    async def count(self, stream: str) -> int:
        body = await self._call(
            "GET", "/api/method/frappe.client.get_count", f"counting {stream}", params={"doctype": stream}
        )
        value = body.get("message") if isinstance(body, dict) else None
        return int(value) if isinstance(value, int) else 0

    async def page(self, stream: str, since: str, after: str, limit: int) -> list[ExternalContact]:
        fields = _FIELDS[stream]
        rows: list[dict[str, Any]] = []
        if since:
            same = [["modified", "=", since], ["name", ">", after]]
            rows = await self._list(stream, fields, same, 0, limit, "modified asc, name asc")
        if len(rows) < limit:
            later = [["modified", ">", since]] if since else []
            rows += await self._list(stream, fields, later, 0, limit - len(rows), "modified asc, name asc")
        if stream == "Customer":
            return [self._customer(r) for r in rows]
        if stream == "Lead":
            return [self._lead(r) for r in rows]
        names = [str(r["name"]) for r in rows]
        phones: dict[str, list[tuple[str, str]]] = {}
        for child in await self._children(
            "Contact Phone", ["parent", "phone", "is_primary_mobile_no", "idx"], names
        ):
            kind = "mobile" if child.get("is_primary_mobile_no") else "work"
            if child.get("phone"):
                phones.setdefault(str(child.get("parent")), []).append((str(child["phone"]), kind))
        links: dict[str, list[tuple[str, str]]] = {}
        for child in await self._children("Dynamic Link", ["parent", "link_doctype", "link_name"], names):
            links.setdefault(str(child.get("parent")), []).append(
                (str(child.get("link_doctype")), str(child.get("link_name")))
            )
        out = []
        for row in rows:
            name = str(row["name"])
            full = " ".join(str(row.get(k) or "") for k in ("first_name", "last_name")).strip() or name
            company = next((f"{d}/{n}" for d, n in links.get(name, []) if d == "Customer"), "")
            tags = tuple(sorted({d for d, _ in links.get(name, []) if d in ("Lead", "Supplier")}))
            ext = f"Contact/{name}"
            out.append(
                ExternalContact(
                    ext_id=ext,
                    url=self.deep_link(ext),
                    is_company=False,
                    name=full,
                    phones=tuple(phones.get(name, [])),
                    email=str(row.get("email_id") or ""),
                    tags=tags,
                    company_ext_id=company,
                    modified=str(row.get("modified") or ""),
                )
            )
        return out

    def _customer(self, row: dict[str, Any]) -> ExternalContact:
        ext = f"Customer/{row['name']}"
        return ExternalContact(
            ext_id=ext,
            url=self.deep_link(ext),
            is_company=row.get("customer_type") != "Individual",
            name=str(row.get("customer_name") or row["name"]),
            phones=((str(row["mobile_no"]), "mobile"),) if row.get("mobile_no") else (),
            email=str(row.get("email_id") or ""),
            tags=("Customer",),
            modified=str(row.get("modified") or ""),
        )

    def _lead(self, row: dict[str, Any]) -> ExternalContact:
        ext = f"Lead/{row['name']}"
        phones = [
            (str(row[k]), kind) for k, kind in (("phone", "work"), ("mobile_no", "mobile")) if row.get(k)
        ]
        return ExternalContact(
            ext_id=ext,
            url=self.deep_link(ext),
            is_company=False,
            name=str(row.get("lead_name") or row.get("company_name") or row["name"]),
            phones=tuple(phones),
            email=str(row.get("email_id") or ""),
            tags=("Lead",),
            owner=str(row.get("lead_owner") or ""),
            modified=str(row.get("modified") or ""),
        )

    async def ids(self, stream: str, after: str, limit: int) -> list[str]:
        filters = [["name", ">", after]] if after else []
        rows = await self._list(stream, ["name"], filters, 0, limit, "name asc")
        return [f"{stream}/{r['name']}" for r in rows]

    # -- calls ----------------------------------------------------------------------------------------

    def _time(self, value: datetime | None) -> str | None:
        # Frappe keeps naive datetimes in the site's time zone.
        return value.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S") if value else None

    async def person(self, address: str) -> tuple[str, str]:
        """(Employee, User) in ERPNext for the user with this e-mail address; empty strings when
        ERPNext has no such User (or Employee), or the API user may not read them."""
        address = address.strip().lower()
        if not address:
            return "", ""
        known = self._people.get(address)
        if known is not None and time.monotonic() < known[2]:
            return known[0], known[1]
        employee = user = ""
        try:
            rows = await self._list(
                "Employee", ["name", "user_id"], [["user_id", "=", address]], 0, 1, "name asc"
            )
            if rows:
                employee, user = str(rows[0]["name"]), str(rows[0].get("user_id") or address)
            else:
                found = await self._list("User", ["name"], [["name", "=", address]], 0, 1, "name asc")
                user = str(found[0]["name"]) if found else ""
        except (ErpUnreachable, ErpBusy):
            raise  # the write would fail as well: the call waits and tries again
        except ConnectorError:
            pass  # no permission on Employee/User, or a site without them: the fields stay empty
        self._people[address] = (employee, user, time.monotonic() + PEOPLE_TTL)
        return employee, user

    def call_log(
        self, call: CallPush, with_links: bool = True, person: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        if call.disposition is None:
            status = "In Progress" if call.answered_at else "Ringing"
        else:
            status = _STATUS.get(call.disposition, "Completed")
        inbound = call.direction == "inbound"
        doc: dict[str, Any] = {
            "id": call.marker,
            "from": call.from_number,
            "to": call.to_number,
            "type": "Incoming" if inbound else "Outgoing",
            "status": status,
            "start_time": self._time(call.started_at),
            "end_time": self._time(call.ended_at),
            "duration": call.talk_seconds,
            "medium": call.to_number if inbound else call.from_number,
            "summary": call.summary,
            "recording_url": call.recording_url,
            "links": [
                {"link_doctype": ext.partition("/")[0], "link_name": ext.partition("/")[2]}
                for ext in (call.links if with_links else ())
            ],
        }
        if person is not None:
            # None: not sent, so what ERPNext filled in itself (by Employee.cell_number) stays.
            employee, user = person
            doc["employee_user_id"] = user or None
            doc["call_received_by"] = employee or None
        return doc

    async def push(self, call: CallPush, known: str) -> Pushed:
        address = call.answered_by_email if call.direction == "inbound" else call.placed_by_email
        found = await self.person(address)
        person: tuple[str, str] | None = found if any(found) else None
        with_links = True
        notes: list[str] = []
        while True:
            try:
                pushed = await self._write(call, known, with_links=with_links, person=person)
                return Pushed(pushed.ext_id, pushed.url, "; ".join(notes))
            except ErpRejected as exc:
                words = str(exc).lower()
                if "could not find" not in words:
                    raise
                if person != ("", "") and ("call received by" in words or "employee user id" in words):
                    # The Employee (or User) went away since it was looked up (or since ERPNext
                    # set it): written without, explicitly, as the stored value fails too.
                    self._people.pop(address.strip().lower(), None)
                    person = ("", "")
                    notes.append(f"written without who took it: {short(str(exc))}")
                elif with_links and call.links:
                    # A linked record was deleted (or merged away) in ERPNext meanwhile: the call
                    # is still written, without the link, and the reason is kept.
                    with_links = False
                    notes.append(f"written without its link: {short(str(exc))}")
                else:
                    raise

    async def _write(
        self, call: CallPush, known: str, *, with_links: bool, person: tuple[str, str] | None = None
    ) -> Pushed:
        doc = self.call_log(call, with_links, person)
        name = call.marker
        ext = f"Call Log/{name}"
        path = f"/api/resource/{quote('Call Log')}"
        if known:
            try:
                await self._call("PUT", f"{path}/{quote(name, safe='')}", "updating the Call Log", json=doc)
                return Pushed(ext, self.deep_link(ext))
            except ErpMissing:
                pass  # deleted in ERPNext: written again
        try:
            await self._call("POST", path, "writing the Call Log", json=doc)
        except ErpRejected as exc:
            if not exc.duplicate:
                raise
            # An earlier attempt got through but its answer was lost: update that one.
            await self._call("PUT", f"{path}/{quote(name, safe='')}", "updating the Call Log", json=doc)
        return Pushed(ext, self.deep_link(ext))


__all__ = ["ErpAuthFailed", "ErpUnreachable", "ErpnextConnector", "server_message"]
