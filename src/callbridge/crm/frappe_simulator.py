"""A Frappe/ERPNext site simulator for tests and the bench (reference: crm_connectors.md).

Served on loopback. Strict where the real one is:

- ``Authorization: token <key>:<secret>`` only (a Bearer or Basic header, a missing colon, a
  wrong secret → 401 ``AuthenticationError``);
- ``/api/resource/<Doctype>``: ``fields``/``filters``/``order_by`` as JSON in the query,
  ``limit_start``/``limit_page_length`` (default 20, 0 = all); an unknown field in any of them
  → 417 ``DataError``; no read permission → 403 ``PermissionError``; unknown doctype → 404;
- writes: a Select value outside its options or a Link to a record that does not exist (the
  Call Log's ``links`` rows, ``employee_user_id``) → 417 ``ValidationError`` /
  ``LinkValidationError`` with ``_server_messages``; a second record with the same name → 409
  ``DuplicateEntryError``; unknown keys in a body are dropped, as Frappe does;
- ``/api/method/frappe.client.get_list`` (child tables need ``parent`` and read permission on
  it), ``frappe.client.get_count``, ``frappe.auth.get_logged_user``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.crm.simulator_base import LoopbackServer, QueryError, Table, check_op

CHILD = {"Contact Phone", "Dynamic Link", "Contact Email"}
META: dict[str, dict[str, str]] = {
    "Customer": {
        "customer_name": "Data",
        "customer_type": "Select",
        "mobile_no": "Data",
        "email_id": "Data",
        "customer_primary_contact": "Link",
    },
    "Lead": {
        "lead_name": "Data",
        "company_name": "Data",
        "phone": "Data",
        "mobile_no": "Data",
        "email_id": "Data",
        "lead_owner": "Link",
        "status": "Select",
    },
    "Supplier": {"supplier_name": "Data"},
    "Contact": {
        "first_name": "Data",
        "last_name": "Data",
        "email_id": "Data",
        "phone": "Data",
        "mobile_no": "Data",
        "phone_nos": "Table",
        "links": "Table",
    },
    "Contact Phone": {"phone": "Data", "is_primary_phone": "Check", "is_primary_mobile_no": "Check"},
    "Dynamic Link": {"link_doctype": "Link", "link_name": "Dynamic Link", "link_title": "Data"},
    "Call Log": {
        "id": "Data",
        "from": "Data",
        "to": "Data",
        "call_received_by": "Link",
        "employee_user_id": "Link",
        "medium": "Data",
        "start_time": "Datetime",
        "end_time": "Datetime",
        "type": "Select",
        "customer": "Link",
        "status": "Select",
        "duration": "Duration",
        "recording_url": "Data",
        "type_of_call": "Link",
        "summary": "Small Text",
        "links": "Table",
    },
    "User": {"full_name": "Data", "enabled": "Check"},
    "Employee": {"employee_name": "Data", "user_id": "Link", "cell_number": "Data"},
    "Deleted Document": {"deleted_doctype": "Data", "deleted_name": "Data"},
}
SELECT = {
    ("Call Log", "type"): ("Incoming", "Outgoing"),
    ("Call Log", "status"): (
        "Ringing",
        "In Progress",
        "Completed",
        "Failed",
        "Busy",
        "No Answer",
        "Queued",
        "Canceled",
    ),
    ("Customer", "customer_type"): ("Company", "Individual", "Partnership"),
    ("Lead", "status"): (
        "Lead",
        "Open",
        "Replied",
        "Opportunity",
        "Quotation",
        "Converted",
        "Do Not Contact",
    ),
}
LINKS = {
    ("Call Log", "employee_user_id"): "User",
    ("Call Log", "call_received_by"): "Employee",
    ("Call Log", "customer"): "Customer",
    ("Lead", "lead_owner"): "User",
}
CHILD_TABLES = {
    ("Contact", "phone_nos"): "Contact Phone",
    ("Contact", "links"): "Dynamic Link",
    ("Call Log", "links"): "Dynamic Link",
}
STANDARD = {"name", "owner", "creation", "modified", "modified_by", "docstatus", "idx"}
CHILD_STANDARD = {"parent", "parenttype", "parentfield"}


@dataclass(slots=True)
class ApiUser:
    user: str
    secret: str
    read: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)


class FrappeError(Exception):
    def __init__(self, status: int, exc_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.exc_type, self.message = status, exc_type, message

    def response(self) -> JSONResponse:
        body = {
            "exc_type": self.exc_type,
            "exception": f"frappe.exceptions.{self.exc_type}: {self.message}",
            "_server_messages": json.dumps([json.dumps({"message": self.message})]),
        }
        return JSONResponse(body, self.status)


class FrappeSimulator(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, Table] = {d: Table("name") for d in META}
        self.keys: dict[str, ApiUser] = {}
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._ids = itertools.count(1)
        self.writes: list[tuple[str, str, str]] = []  # (method, doctype, name)
        # (name, status, wall-clock time) of every Call Log write: how long a call took to arrive.
        self.call_log_times: list[tuple[str, str, float]] = []
        self.app = Starlette(
            routes=[
                Route("/api/resource/{doctype}", self._resource, methods=["GET", "POST"]),
                Route(
                    "/api/resource/{doctype}/{name:path}", self._document, methods=["GET", "PUT", "DELETE"]
                ),
                Route("/api/method/{method:path}", self._method, methods=["GET", "POST"]),
            ]
        )
        self.add_record("User", {"name": "Administrator", "full_name": "Administrator", "enabled": 1})

    # -- set-up from tests ------------------------------------------------------------------------

    def add_key(
        self,
        key: str,
        secret: str,
        user: str = "integration@example.com",
        read: set[str] | None = None,
        write: set[str] | None = None,
    ) -> None:
        everything = {d for d in META if d not in CHILD}
        self.keys[key] = ApiUser(
            user,
            secret,
            set(everything if read is None else read),
            set(everything if write is None else write),
        )
        if user not in self.tables["User"].rows:
            self.add_record("User", {"name": user, "full_name": user, "enabled": 1})

    def tick(self) -> str:
        self._clock += timedelta(microseconds=1000)
        return self._clock.strftime("%Y-%m-%d %H:%M:%S.%f")

    def add_record(self, doctype: str, doc: dict[str, Any], modified: str | None = None) -> dict[str, Any]:
        doc = dict(doc)
        doc.setdefault("name", f"{doctype[:4].upper()}-{next(self._ids):06d}")
        doc["modified"] = modified or self.tick()
        doc.setdefault("creation", doc["modified"])
        doc.setdefault("docstatus", 0)
        for (parent_type, fieldname), child in CHILD_TABLES.items():
            if parent_type == doctype:
                rows = []
                for idx, row in enumerate(doc.get(fieldname) or [], start=1):
                    rows.append(
                        {
                            **row,
                            "parent": doc["name"],
                            "parenttype": doctype,
                            "parentfield": fieldname,
                            "idx": idx,
                            "name": f"{child[:3]}{next(self._ids)}",
                        }
                    )
                doc[fieldname] = rows
        self.tables[doctype].put(doc)
        return doc

    def update_record(self, doctype: str, name: str, **values: Any) -> None:
        doc = {**self.tables[doctype].rows[name], **values}
        doc.pop("modified", None)
        self.add_record(doctype, doc)

    def delete_record(self, doctype: str, name: str) -> None:
        self.tables[doctype].delete(name)
        self.add_record("Deleted Document", {"deleted_doctype": doctype, "deleted_name": name})

    def doc(self, doctype: str, name: str) -> dict[str, Any] | None:
        return self.tables[doctype].rows.get(name)

    # -- the wire ------------------------------------------------------------------------------------

    def _auth(self, request: Request) -> ApiUser:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        key, colon, secret = value.strip().partition(":")
        if scheme != "token" or not colon:
            raise FrappeError(401, "AuthenticationError", "Invalid or missing token: use 'token key:secret'")
        user = self.keys.get(key)
        if user is None or user.secret != secret:
            raise FrappeError(401, "AuthenticationError", "Invalid API key or secret")
        return user

    def _meta(self, doctype: str) -> dict[str, str]:
        meta = META.get(doctype)
        if meta is None:
            raise FrappeError(404, "DoesNotExistError", f"DocType {doctype} not found")
        return meta

    def _check_fields(self, doctype: str, names: list[str], child: bool = False) -> None:
        meta = self._meta(doctype)
        allowed = set(meta) | STANDARD | (CHILD_STANDARD if child else set())
        for name in names:
            if name == "*":
                continue
            if name.lstrip("`").rstrip("`") not in allowed:
                raise FrappeError(417, "DataError", f"Field not permitted in query: {name}")

    def _parse_filters(self, doctype: str, raw: Any, child: bool = False) -> list[tuple[str, str, Any]]:
        if raw in (None, "", []):
            return []
        items = json.loads(raw) if isinstance(raw, str) else raw
        out: list[tuple[str, str, Any]] = []
        if isinstance(items, dict):
            items = [[k, *(v if isinstance(v, list) else ["=", v])] for k, v in items.items()]
        for item in items:
            if not isinstance(item, list) or len(item) not in (3, 4):
                raise FrappeError(417, "ValidationError", f"Invalid filter: {item!r}")
            if len(item) == 4:
                item = item[1:]
            fieldname, op, value = item
            try:
                check_op(str(op))
            except QueryError as exc:
                raise FrappeError(417, "ValidationError", str(exc)) from None
            self._check_fields(doctype, [fieldname], child)
            out.append((fieldname, op, value))
        return out

    def _parse_order(self, doctype: str, text: str, child: bool = False) -> list[tuple[str, bool]]:
        out = []
        for part in (text or "modified desc").split(","):
            bits = part.split()
            if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                raise FrappeError(417, "ValidationError", f"Invalid order_by: {text}")
            self._check_fields(doctype, [bits[0]], child)
            out.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
        return out

    def _query(self, doctype: str, args: dict[str, Any], child: bool = False) -> list[dict[str, Any]]:
        fields = args.get("fields") or '["name"]'
        fields = json.loads(fields) if isinstance(fields, str) else fields
        if not isinstance(fields, list):
            raise FrappeError(417, "ValidationError", "fields must be a list")
        self._check_fields(doctype, fields, child)
        filters = self._parse_filters(doctype, args.get("filters"), child)
        order = self._parse_order(doctype, str(args.get("order_by") or ""), child)
        try:
            start = int(args.get("limit_start") or 0)
            length = int(
                args.get("limit_page_length", 20) if args.get("limit_page_length") is not None else 20
            )
        except ValueError:
            raise FrappeError(
                417, "ValidationError", "limit_start and limit_page_length are numbers"
            ) from None
        table = self.tables[doctype]
        if child:
            parent_type = str(args.get("parent"))
            fieldnames = [f for (p, f), c in CHILD_TABLES.items() if p == parent_type and c == doctype]
            parents = self.tables[parent_type].rows
            wanted = next((v for f, o, v in filters if f == "parent" and o == "in"), None)
            docs = (
                [parents[n] for n in wanted if n in parents] if isinstance(wanted, list) else parents.values()
            )
            table = Table("name")
            for doc in docs:
                for fieldname in fieldnames:
                    for row in doc.get(fieldname) or []:
                        table.rows[row["name"]] = row
        try:
            found = table.select(filters, order, start, length or None)
        except QueryError as exc:
            raise FrappeError(417, "ValidationError", str(exc)) from None
        if fields == ["*"]:
            return [dict(r) for r in found]
        return [{f: r.get(f) for f in fields} for r in found]

    async def _guard(self, request: Request) -> tuple[ApiUser | None, Response | None]:
        fault = await self.fault_for(request.url.path)
        if fault is not None:
            return None, fault
        try:
            return self._auth(request), None
        except FrappeError as exc:
            return None, exc.response()

    async def _resource(self, request: Request) -> Response:
        user, early = await self._guard(request)
        if early is not None or user is None:
            return early or Response(status_code=500)
        doctype = unquote(request.path_params["doctype"])
        try:
            self._meta(doctype)
            if request.method == "GET":
                if doctype not in user.read:
                    raise FrappeError(403, "PermissionError", f"No permission for {doctype}")
                if doctype in CHILD:
                    raise FrappeError(403, "PermissionError", f"Child DocType {doctype} is not allowed here")
                return JSONResponse({"data": self._query(doctype, dict(request.query_params))})
            if doctype not in user.write:
                raise FrappeError(403, "PermissionError", f"No permission to create {doctype}")
            body = await self._json(request)
            return JSONResponse({"data": self._insert(doctype, body, user)})
        except FrappeError as exc:
            return exc.response()

    async def _document(self, request: Request) -> Response:
        user, early = await self._guard(request)
        if early is not None or user is None:
            return early or Response(status_code=500)
        doctype = unquote(request.path_params["doctype"])
        name = unquote(request.path_params["name"])
        try:
            self._meta(doctype)
            allowed = user.read if request.method == "GET" else user.write
            if doctype not in allowed:
                raise FrappeError(403, "PermissionError", f"No permission for {doctype}")
            current = self.tables[doctype].rows.get(name)
            if current is None:
                raise FrappeError(404, "DoesNotExistError", f"{doctype} {name} not found")
            if request.method == "GET":
                return JSONResponse({"data": current})
            if request.method == "DELETE":
                self.delete_record(doctype, name)
                return JSONResponse({"message": "ok"})
            body = await self._json(request)
            merged = {**current, **self._clean(doctype, body)}
            self._validate(doctype, merged)
            merged.pop("modified", None)
            saved = self.add_record(doctype, merged)
            self.writes.append(("PUT", doctype, name))
            if doctype == "Call Log":
                self.call_log_times.append((name, str(saved.get("status")), time.time()))
            return JSONResponse({"data": saved})
        except FrappeError as exc:
            return exc.response()

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise FrappeError(417, "ValidationError", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise FrappeError(417, "ValidationError", "the body must be an object")
        return body

    def _clean(self, doctype: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = self._meta(doctype)
        return {k: v for k, v in body.items() if k in meta or k == "name"}  # unknown keys: dropped

    def _validate(self, doctype: str, doc: dict[str, Any]) -> None:
        for (dt, fieldname), options in SELECT.items():
            if dt == doctype and doc.get(fieldname) not in (None, "", *options):
                raise FrappeError(
                    417,
                    "ValidationError",
                    f'{fieldname.title()} cannot be "{doc[fieldname]}". It should be one of '
                    + ", ".join(f'"{o}"' for o in options),
                )
        for (dt, fieldname), target in LINKS.items():
            value = doc.get(fieldname)
            if dt == doctype and value and value not in self.tables[target].rows:
                label = fieldname.replace("_", " ").title()
                raise FrappeError(417, "LinkValidationError", f"Could not find {label}: {value}")
        for fieldname in ("start_time", "end_time"):
            value = doc.get(fieldname)
            if value:
                try:
                    datetime.strptime(str(value)[:19], "%Y-%m-%d %H:%M:%S")
                except ValueError:
                    raise FrappeError(
                        417, "ValidationError", f"{fieldname} {value!r} is not a datetime"
                    ) from None
        for (dt, fieldname), child in CHILD_TABLES.items():
            if dt != doctype:
                continue
            for idx, row in enumerate(doc.get(fieldname) or [], start=1):
                if not isinstance(row, dict):
                    raise FrappeError(417, "ValidationError", f"Row #{idx}: not an object")
                if child == "Dynamic Link":
                    target = str(row.get("link_doctype"))
                    if target not in META:
                        raise FrappeError(
                            417,
                            "LinkValidationError",
                            f"Could not find Row #{idx}: Link Document Type: {target}",
                        )
                    if row.get("link_name") not in self.tables[str(target)].rows:
                        raise FrappeError(
                            417,
                            "LinkValidationError",
                            f"Could not find Row #{idx}: Link Name: {row.get('link_name')}",
                        )

    def _insert(self, doctype: str, body: dict[str, Any], user: ApiUser) -> dict[str, Any]:
        doc = self._clean(doctype, body)
        if doctype == "Call Log":
            if not doc.get("id"):
                raise FrappeError(417, "MandatoryError", "Call Log: id is mandatory")
            doc["name"] = doc["id"]  # autoname: field:id
        self._validate(doctype, doc)
        if doc.get("name") in self.tables[doctype].rows:
            raise FrappeError(409, "DuplicateEntryError", f"{doctype} {doc['name']} already exists")
        doc["owner"] = user.user
        saved = self.add_record(doctype, doc)
        self.writes.append(("POST", doctype, saved["name"]))
        if doctype == "Call Log":
            self.call_log_times.append((saved["name"], str(saved.get("status")), time.time()))
        return saved

    async def _method(self, request: Request) -> Response:
        user, early = await self._guard(request)
        if early is not None or user is None:
            return early or Response(status_code=500)
        method = request.path_params["method"]
        args: dict[str, Any] = dict(request.query_params)
        if request.method == "POST":
            try:
                args.update(await self._json(request))
            except FrappeError as exc:
                return exc.response()
        try:
            if method == "callbridge.simulator.call_log_times":
                return JSONResponse({"message": self.call_log_times})
            if method == "frappe.auth.get_logged_user":
                return JSONResponse({"message": user.user})
            if method == "frappe.client.get_count":
                doctype = str(args.get("doctype"))
                self._meta(doctype)
                if doctype not in user.read:
                    raise FrappeError(403, "PermissionError", f"No permission for {doctype}")
                filters = self._parse_filters(doctype, args.get("filters"))
                count = (
                    len(self.tables[doctype].select(filters, [], 0, None))
                    if filters
                    else len(self.tables[doctype].rows)
                )
                return JSONResponse({"message": count})
            if method == "frappe.client.get_list":
                doctype = str(args.get("doctype"))
                self._meta(doctype)
                if doctype in CHILD:
                    parent = args.get("parent")
                    if not parent:
                        raise FrappeError(
                            403, "PermissionError", f"Please specify a valid parent DocType for {doctype}"
                        )
                    if parent not in user.read:
                        raise FrappeError(403, "PermissionError", f"No permission for {parent}")
                    return JSONResponse({"message": self._query(doctype, args, child=True)})
                if doctype not in user.read:
                    raise FrappeError(403, "PermissionError", f"No permission for {doctype}")
                return JSONResponse({"message": self._query(doctype, args)})
            raise FrappeError(404, "DoesNotExistError", f"Method {method} not found")
        except FrappeError as exc:
            return exc.response()


def populate(sim: FrappeSimulator, contacts: int, seed: int = 7) -> None:
    """``contacts`` Contacts (one or two numbers each, most linked to one of contacts/20
    Customers), for the bench and demos."""
    rng = random.Random(seed)
    customers = max(1, contacts // 20)
    for n in range(customers):
        sim.add_record(
            "Customer",
            {
                "name": f"CUST-{n:06d}",
                "customer_name": f"Customer {n}",
                "customer_type": "Company",
                "mobile_no": f"+1 212 555 {n % 10000:04d}" if n < 10000 else "",
            },
        )
    for n in range(contacts):
        phones = [{"phone": f"+1 415 {200 + n // 10000:03d} {n % 10000:04d}", "is_primary_phone": 1}]
        if rng.random() < 0.3:
            phones.append({"phone": f"+44 7700 {n % 1000000:06d}", "is_primary_mobile_no": 1})
        links = [{"link_doctype": "Customer", "link_name": f"CUST-{rng.randrange(customers):06d}"}]
        sim.add_record(
            "Contact",
            {
                "name": f"CONT-{n:07d}",
                "first_name": f"First{n}",
                "last_name": f"Last{n}",
                "email_id": f"p{n}@example.com",
                "phone_nos": phones,
                "links": links if rng.random() < 0.8 else [],
            },
        )


def main() -> None:
    """Serve a populated simulator on loopback until stopped (the bench runs it in its own process)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--key", default="bench-key")
    parser.add_argument("--secret", default="bench-secret")
    args = parser.parse_args()

    async def serve() -> None:
        sim = FrappeSimulator()
        sim.add_key(args.key, args.secret)
        populate(sim, args.contacts)
        # 100,000 records are a million objects: out of the collector's full passes, which
        # would otherwise stop the simulated site for a long while now and then.
        gc.collect()
        gc.freeze()
        await sim.start(args.port)
        print(f"ready on {sim.base_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
