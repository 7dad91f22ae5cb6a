"""An Odoo server simulator for tests and the bench (reference: crm_connectors.md).

Speaks JSON-RPC (``/jsonrpc``: ``common.login``/``authenticate``/``version``,
``object.execute_kw``) like Odoo 16-18, and JSON-2 (``/json/2/<model>/<method>`` with
``Authorization: bearer <key>``, named arguments only) like Odoo 19; ``/web/version`` answers
without auth. Strict where the real one is: JSON-RPC errors come back as HTTP 200 with an
``error`` member (``data.name`` = ``odoo.exceptions.AccessDenied`` / ``AccessError`` /
``MissingError`` / ``ValueError``), JSON-2 errors with a status (401/403/404/422); an unknown
field in ``fields``, a domain or ``order`` → ``ValueError``; a private method → refused; a
user without the model's access → ``AccessError``; archived records hidden unless the context
says ``active_test: False``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.crm.simulator_base import LoopbackServer, QueryError, Table, check_op

M2O, M2M = "many2one", "many2many"
MODELS: dict[str, dict[str, str]] = {
    "res.partner": {
        "name": "char",
        "display_name": "char",
        "is_company": "boolean",
        "parent_id": M2O,
        "phone": "char",
        "mobile": "char",
        "email": "char",
        "user_id": M2O,
        "category_id": M2M,
        "write_date": "datetime",
        "active": "boolean",
    },
    "res.partner.category": {"name": "char", "write_date": "datetime"},
    "res.users": {"name": "char", "login": "char", "write_date": "datetime", "active": "boolean"},
    "crm.lead": {
        "name": "char",
        "partner_name": "char",
        "contact_name": "char",
        "phone": "char",
        "mobile": "char",
        "email_from": "char",
        "user_id": M2O,
        "tag_ids": M2M,
        "write_date": "datetime",
        "active": "boolean",
    },
    "crm.tag": {"name": "char", "write_date": "datetime"},
    "mail.message": {
        "model": "char",
        "res_id": "integer",
        "body": "html",
        "message_type": "selection",
        "subtype_xmlid": "char",
        "author_id": M2O,
        "write_date": "datetime",
    },
    "mail.activity": {
        "res_model_id": M2O,
        "res_model": "char",
        "res_id": "integer",
        "activity_type_id": M2O,
        "summary": "char",
        "note": "html",
        "user_id": M2O,
        "date_deadline": "date",
        "write_date": "datetime",
    },
    "mail.activity.type": {"name": "char", "category": "selection", "write_date": "datetime"},
    "ir.model": {"model": "char", "name": "char", "write_date": "datetime"},
}
RELATION = {
    ("res.partner", "parent_id"): "res.partner",
    ("res.partner", "user_id"): "res.users",
    ("res.partner", "category_id"): "res.partner.category",
    ("crm.lead", "user_id"): "res.users",
    ("crm.lead", "tag_ids"): "crm.tag",
    ("mail.activity", "user_id"): "res.users",
    ("mail.activity", "activity_type_id"): "mail.activity.type",
    ("mail.activity", "res_model_id"): "ir.model",
    ("mail.message", "author_id"): "res.partner",
}
MAIL_THREADS = {"res.partner", "crm.lead"}
_MARKER = re.compile(r"\[(callbridge-\d+)\]")
MESSAGE_TYPES = {"comment", "notification", "email", "user_notification", "auto_comment"}
_LABEL = {"res.partner": "Contact", "crm.lead": "Lead/Opportunity", "mail.activity": "Activity"}


class OdooError(Exception):
    def __init__(self, name: str, message: str, status: int) -> None:
        super().__init__(message)
        self.name, self.message, self.status = name, message, status

    def data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "message": self.message,
            "arguments": [self.message],
            "context": {},
            "debug": f"Traceback (most recent call last):\n{self.name}: {self.message}",
        }


def _access(model: str, what: str = "read") -> OdooError:
    label = _LABEL.get(model, model)
    return OdooError(
        "odoo.exceptions.AccessError", f"You are not allowed to {what} '{label}' ({model}) records.", 403
    )


def _value(message: str) -> OdooError:
    return OdooError("builtins.ValueError", message, 422)


@dataclass(slots=True)
class OdooUser:
    uid: int
    login: str
    key: str
    read: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)


class OdooSimulator(LoopbackServer):
    def __init__(self, *, version: int = 17, database: str = "odoo", crm: bool = True) -> None:
        super().__init__()
        self.version = version
        self.database = database
        models = dict(MODELS)
        if not crm:
            models.pop("crm.lead")
        self.models = models
        self.tables: dict[str, Table] = {m: Table("id") for m in models}
        self.users: dict[int, OdooUser] = {}
        self._ids = itertools.count(1)
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.calls: list[tuple[str, str]] = []  # (model, method) of every object call
        # Activities marked done (``action_feedback`` / ``action_done``): (activity, feedback).
        self.done_activities: list[tuple[dict[str, Any], str]] = []
        # (marker, wall-clock time) of every chatter note that carries ``[callbridge-<id>]``: how
        # long a call took to arrive (the bench reads it at /callbridge/simulator/message_times).
        self.message_times: list[tuple[str, float]] = []
        self.app = Starlette(
            routes=[
                Route("/web/version", self._version, methods=["GET", "POST"]),
                Route("/jsonrpc", self._jsonrpc, methods=["POST"]),
                Route("/json/2/{model}/{method}", self._json2, methods=["POST"]),
                Route("/callbridge/simulator/message_times", self._message_times, methods=["GET"]),
            ]
        )
        for name in self.models:
            self.add("ir.model", {"model": name, "name": name})
        self.add("mail.activity.type", {"name": "Call", "category": "phonecall"})
        self.add("mail.activity.type", {"name": "Email", "category": "default"})

    # -- set-up from tests --------------------------------------------------------------------------

    def tick(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.strftime("%Y-%m-%d %H:%M:%S")

    def add_user(
        self,
        login: str,
        key: str,
        *,
        read: set[str] | None = None,
        write: set[str] | None = None,
        name: str = "",
    ) -> int:
        uid = self.add("res.users", {"name": name or login, "login": login, "active": True})["id"]
        everything = set(self.models)
        self.users[uid] = OdooUser(
            uid,
            login,
            key,
            set(everything if read is None else read),
            set(everything if write is None else write),
        )
        return int(uid)

    def add(self, model: str, values: dict[str, Any], write_date: str | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {f: (False if t != M2M else []) for f, t in self.models[model].items()}
        if "active" in row:
            row["active"] = True
        row.update(values)
        row.setdefault("id", next(self._ids))
        row["write_date"] = write_date or self.tick()
        if "display_name" in row:
            row["display_name"] = row.get("name") or ""
        self.tables[model].put(row)
        return row

    def write(self, model: str, rid: int, **values: Any) -> None:
        row = {**self.tables[model].rows[rid], **values}
        row.pop("write_date", None)
        self.add(model, row)

    def unlink(self, model: str, rid: int) -> None:
        self.tables[model].delete(rid)

    def rows(self, model: str) -> list[dict[str, Any]]:
        return list(self.tables[model].rows.values())

    # -- the wire ---------------------------------------------------------------------------------------

    async def _version(self, request: Request) -> Response:
        fault = await self.fault_for(request.url.path)
        if fault is not None:
            return fault
        info = [self.version, 0, 0, "final", 0, ""]
        return JSONResponse(
            {
                "server_version": f"{self.version}.0",
                "server_version_info": info,
                "version": f"{self.version}.0",
                "version_info": info,
                "protocol_version": 1,
            }
        )

    async def _message_times(self, request: Request) -> Response:
        """Not Odoo's: when each call's note was posted, for the bench (like the Frappe
        simulator's ``callbridge.simulator.call_log_times``)."""
        return JSONResponse({"message": self.message_times})

    async def _jsonrpc(self, request: Request) -> Response:
        fault = await self.fault_for(request.url.path)
        if fault is not None:
            return fault
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
            )
        rid = body.get("id") if isinstance(body, dict) else None
        try:
            if self.version >= 22:
                raise OdooError("werkzeug.exceptions.NotFound", "JSON-RPC was removed: use /json/2", 404)
            if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or body.get("method") != "call":
                raise OdooError("werkzeug.exceptions.BadRequest", "not a JSON-RPC 2.0 'call'", 400)
            params = body.get("params") or {}
            service, method, args = params.get("service"), params.get("method"), params.get("args") or []
            result = self._service(str(service), str(method), list(args))
            return JSONResponse({"jsonrpc": "2.0", "id": rid, "result": result})
        except OdooError as exc:
            return JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": 200, "message": "Odoo Server Error", "data": exc.data()},
                }
            )

    def _service(self, service: str, method: str, args: list[Any]) -> Any:
        if service == "common":
            if method == "version":
                return {"server_version": f"{self.version}.0"}
            if method in ("login", "authenticate"):
                db, login, key = [*args, None, None, None][:3]
                user = self._by_login(str(login), str(key)) if db == self.database else None
                return user.uid if user else False
            raise OdooError("builtins.NameError", f"method {method} does not exist on common", 404)
        if service != "object" or method != "execute_kw":
            raise OdooError("builtins.NameError", f"unknown service or method {service}.{method}", 404)
        if len(args) < 6:
            raise OdooError(
                "builtins.TypeError", "execute_kw() takes db, uid, password, model, method, args", 422
            )
        db, uid, key, model, meth, pos = args[:6]
        kwargs = args[6] if len(args) > 6 else {}
        if db != self.database:
            raise OdooError("psycopg2.OperationalError", f'database "{db}" does not exist', 404)
        user = self.users.get(uid) if isinstance(uid, int) else None
        if user is None or user.key != key:
            raise OdooError("odoo.exceptions.AccessDenied", "Access Denied", 401)
        if not isinstance(pos, list) or not isinstance(kwargs, dict):
            raise OdooError("builtins.TypeError", "args must be a list and kwargs an object", 422)
        ids = (
            pos[0]
            if pos
            and isinstance(pos[0], list)
            and meth not in ("search_read", "search", "search_count", "create")
            else None
        )
        named = dict(kwargs)
        rest = pos[1:] if ids is not None else pos
        if meth in ("search_read", "search", "search_count") and rest:
            named.setdefault("domain", rest[0])
        if meth == "create" and rest:
            named.setdefault("vals_list", rest[0])
        if meth == "write" and len(rest) >= 1:
            named.setdefault("vals", rest[0])
        return self.execute(user, str(model), str(meth), ids, named)

    def _by_login(self, login: str, key: str) -> OdooUser | None:
        return next((u for u in self.users.values() if u.login == login and u.key == key), None)

    async def _json2(self, request: Request) -> Response:
        fault = await self.fault_for(request.url.path)
        if fault is not None:
            return fault
        try:
            if self.version < 19:
                raise OdooError("werkzeug.exceptions.NotFound", "Not Found", 404)
            header = request.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key:
                raise OdooError("werkzeug.exceptions.Unauthorized", "missing or malformed bearer token", 401)
            db = request.headers.get("x-odoo-database")
            if db is not None and db != self.database:
                raise OdooError("werkzeug.exceptions.NotFound", f"database {db!r} not found", 404)
            user = next((u for u in self.users.values() if u.key == key.strip()), None)
            if user is None:
                raise OdooError("werkzeug.exceptions.Unauthorized", "Invalid apikey", 401)
            try:
                body = await request.json()
            except ValueError:
                raise OdooError("werkzeug.exceptions.BadRequest", "the body is not JSON", 400) from None
            if not isinstance(body, dict):
                raise OdooError(
                    "werkzeug.exceptions.UnprocessableEntity", "named arguments only (an object)", 422
                )
            ids = body.pop("ids", None)
            result = self.execute(
                user, request.path_params["model"], request.path_params["method"], ids, body
            )
            return JSONResponse(result)
        except OdooError as exc:
            return JSONResponse(exc.data(), exc.status)

    # -- the ORM ----------------------------------------------------------------------------------------

    def _model(self, model: str) -> dict[str, str]:
        fields = self.models.get(model)
        if fields is None:
            raise OdooError("builtins.KeyError", f"Object {model} doesn't exist", 404)
        return fields

    def _fields(self, model: str, names: list[str]) -> None:
        known = self._model(model)
        for name in names:
            if name != "id" and name not in known:
                raise _value(f"Invalid field {name!r} on model {model!r}")

    def _domain(self, model: str, domain: Any) -> list[tuple[str, str, Any]]:
        if not isinstance(domain, list):
            raise _value(f"Invalid domain: {domain!r}")
        out = []
        for leaf in domain:
            if leaf == "&":
                continue
            if not isinstance(leaf, list | tuple) or len(leaf) != 3:
                raise _value(f"Invalid leaf {leaf!r}")
            name, op, value = leaf
            self._fields(model, [str(name).split(".")[0]])
            try:
                check_op(str(op))
            except QueryError as exc:
                raise _value(str(exc)) from None
            out.append((str(name), str(op), value))
        return out

    def _order(self, model: str, text: str | None) -> list[tuple[str, bool]]:
        out = []
        for part in (text or "id").split(","):
            bits = part.split()
            if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                raise _value(f"Invalid 'order' specified: {text}")
            self._fields(model, [bits[0]])
            out.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
        return out

    def _render(self, model: str, row: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
        names = fields or list(self._model(model))
        out: dict[str, Any] = {"id": row["id"]}
        for name in names:
            value = row.get(name)
            if self.models[model].get(name) == M2O and value:
                target = RELATION.get((model, name))
                rid = value[0] if isinstance(value, list) else value
                label = self.tables[target].rows.get(rid, {}).get("name", "") if target else ""
                value = [rid, label]
            out[name] = value
        return out

    def _search(self, user: OdooUser, model: str, named: dict[str, Any]) -> list[dict[str, Any]]:
        if model not in user.read:
            raise _access(model)
        filters = self._domain(model, named.get("domain") or [])
        order = self._order(model, named.get("order"))
        context = named.get("context") or {}
        active_test = context.get("active_test", True) if isinstance(context, dict) else True
        has_active = "active" in self.models[model] and not any(f == "active" for f, _, _ in filters)

        def visible(row: dict[str, Any]) -> bool:
            return not (active_test and has_active and not row.get("active"))

        try:
            return self.tables[model].select(
                filters, order, int(named.get("offset") or 0), int(named.get("limit") or 0) or None, visible
            )
        except QueryError as exc:
            raise _value(str(exc)) from None

    def _records(self, model: str, ids: Any) -> list[dict[str, Any]]:
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise _value("ids must be a list of integers")
        rows = self.tables[model].rows
        missing = [i for i in ids if i not in rows]
        if missing:
            raise OdooError(
                "odoo.exceptions.MissingError",
                f"Record does not exist or has been deleted.\n(Record: {model}({missing[0]},))",
                404,
            )
        return [rows[i] for i in ids]

    def execute(self, user: OdooUser, model: str, method: str, ids: Any, named: dict[str, Any]) -> Any:
        self._model(model)
        self.calls.append((model, method))
        if method.startswith("_"):
            raise OdooError(
                "builtins.AttributeError",
                f"Private methods (such as {method}) cannot be called remotely.",
                422,
            )
        allowed = {
            "search_read": {"domain", "fields", "offset", "limit", "order", "context"},
            "search_count": {"domain", "context", "limit"},
            "search": {"domain", "offset", "limit", "order", "context"},
            "read": {"fields", "context", "load"},
            "create": {"vals_list", "context"},
            "write": {"vals", "context"},
            "unlink": {"context"},
            "message_post": {"body", "message_type", "subtype_xmlid", "partner_ids", "context", "subject"},
            "action_feedback": {"feedback", "attachment_ids", "context"},
            "action_done": {"context"},
        }
        if method not in allowed:
            raise OdooError("builtins.AttributeError", f"The method '{model}.{method}' does not exist", 404)
        unknown = set(named) - allowed[method]
        if unknown:
            raise OdooError(
                "builtins.TypeError",
                f"{model}.{method}() got an unexpected keyword argument {sorted(unknown)[0]!r}",
                422,
            )
        if method == "search_read":
            fields = named.get("fields") or []
            self._fields(model, fields)
            return [self._render(model, r, fields) for r in self._search(user, model, named)]
        if method == "search":
            return [r["id"] for r in self._search(user, model, named)]
        if method == "search_count":
            return len(self._search(user, model, {**named, "limit": named.get("limit")}))
        if method == "read":
            if model not in user.read:
                raise _access(model)
            fields = named.get("fields") or []
            self._fields(model, fields)
            return [self._render(model, r, fields) for r in self._records(model, ids)]
        if model not in user.write:
            raise _access(model, "create" if method in ("create", "message_post") else "modify")
        if method == "message_post":
            (record,) = self._records(model, ids if isinstance(ids, list) and len(ids) == 1 else [-1])
            if model not in MAIL_THREADS:
                raise OdooError(
                    "builtins.AttributeError", f"'{model}' object has no attribute 'message_post'", 422
                )
            message_type = named.get("message_type", "notification")
            if message_type not in MESSAGE_TYPES:
                raise _value(f"Wrong value for mail.message.message_type: {message_type!r}")
            row = self.add(
                "mail.message",
                {
                    "model": model,
                    "res_id": record["id"],
                    "body": str(named.get("body") or ""),
                    "message_type": message_type,
                    "subtype_xmlid": named.get("subtype_xmlid") or "",
                    "author_id": False,
                },
            )
            marker = _MARKER.search(row["body"])
            if marker:
                self.message_times.append((marker.group(1), time.time()))
            return row["id"]
        if method in ("action_feedback", "action_done"):
            if model != "mail.activity":
                raise OdooError(
                    "builtins.AttributeError", f"The method '{model}.{method}' does not exist", 404
                )
            # As Odoo: "<type> done" (and the feedback) on the record's chatter, the activity
            # removed; an activity done already is a MissingError.
            message_ids = []
            for row in self._records(model, ids):
                feedback = str(named.get("feedback") or "")
                kind = self.tables["mail.activity.type"].rows.get(row["activity_type_id"]) or {}
                message_ids.append(
                    self.add(
                        "mail.message",
                        {
                            "model": row["res_model"],
                            "res_id": row["res_id"],
                            "body": f"<p>{kind.get('name') or 'Activity'} done</p><p>{feedback}</p>",
                            "message_type": "notification",
                            "subtype_xmlid": "mail.mt_activities",
                            "author_id": False,
                        },
                    )["id"]
                )
                self.done_activities.append((dict(row), feedback))
                self.unlink(model, row["id"])
            return message_ids[0] if message_ids else False
        if method == "create":
            vals_list = named.get("vals_list")
            if isinstance(vals_list, dict):
                vals_list = [vals_list]
            if not isinstance(vals_list, list):
                raise _value("create takes vals_list, a list of objects")
            created = []
            for vals in vals_list:
                self._fields(model, list(vals))
                if model == "mail.activity":
                    for required in ("res_model_id", "res_id", "activity_type_id", "date_deadline"):
                        if not vals.get(required):
                            raise OdooError(
                                "odoo.exceptions.ValidationError",
                                f"Missing required value for the field '{required}'",
                                422,
                            )
                    target = self.tables["ir.model"].rows.get(vals["res_model_id"])
                    if target is None:
                        raise OdooError(
                            "odoo.exceptions.MissingError", "Record does not exist or has been deleted.", 404
                        )
                    self._records(target["model"], [vals["res_id"]])
                    vals = {**vals, "res_model": target["model"]}
                created.append(self.add(model, dict(vals))["id"])
            return created
        if method == "write":
            vals = named.get("vals") or {}
            self._fields(model, list(vals))
            for row in self._records(model, ids):
                self.write(model, row["id"], **vals)
            return True
        for row in self._records(model, ids):
            self.unlink(model, row["id"])
        return True


def populate(sim: OdooSimulator, contacts: int) -> None:
    """``contacts`` people (``res.partner``), each with the number ``+1 415 2xx xxxx`` the Frappe
    simulator's populate gives its Contact of the same index, most of them of one of
    contacts/20 companies; for the bench and demos."""
    companies = [
        sim.add("res.partner", {"name": f"Company {n}", "is_company": True})["id"]
        for n in range(max(1, contacts // 20))
    ]
    for n in range(contacts):
        sim.add(
            "res.partner",
            {
                "name": f"First{n} Last{n}",
                "is_company": False,
                "parent_id": companies[n % len(companies)] if n % 5 else False,
                "phone": f"+1 415 {200 + n // 10000:03d} {n % 10000:04d}",
                "email": f"p{n}@example.com",
            },
        )


def main() -> None:
    """Serve a populated simulator on loopback until stopped (the bench runs it in its own process)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8069)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--version", type=int, default=17)
    parser.add_argument("--database", default="odoo")
    parser.add_argument("--login", default="bench@example.com")
    parser.add_argument("--key", default="bench-key")
    args = parser.parse_args()

    async def serve() -> None:
        sim = OdooSimulator(version=args.version, database=args.database)
        sim.add_user(args.login, args.key)
        populate(sim, args.contacts)
        gc.collect()
        gc.freeze()  # as the Frappe simulator: the records stay out of the collector's passes
        await sim.start(args.port)
        print(f"ready on {sim.base_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
