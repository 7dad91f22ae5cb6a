"""Odoo over its external API: JSON-RPC ``/jsonrpc`` (``common.login``, ``object.execute_kw``)
for Odoo 16-18, JSON-2 ``/json/2/<model>/<method>`` with a bearer API key for Odoo 19+.

Which one is chosen from ``GET /web/version`` (no auth needed) unless the connector's settings
say. Both take the same named arguments here (``ids`` and keywords), so the rest of the module
does not care which.

Directory: ``res.partner`` (companies first, then people, archived ones included so an archive
is seen as a removal) and ``crm.lead`` when the CRM app is installed. Calls: a note on the
partner's (or lead's) chatter (``message_post``) once the call has ended, and a "Call" activity
for the record's salesperson when nobody took the call, marked done (``action_feedback``) when
its callback task in callbridge closes. Each carries the marker
``[callbridge-<call id>]``; before writing, the chatter is searched for it, so a retry after a
lost answer never posts twice.
"""

from __future__ import annotations

import contextlib
import html
import itertools
from collections.abc import Sequence
from datetime import date
from typing import Any

import httpx

from callbridge.crm.base import Check, Pushed
from callbridge.crm.http import TIMEOUT, decode_json, send, status_error
from callbridge.domain.connectors import (
    CallPush,
    ConnectorError,
    ErpAuthFailed,
    ErpBroken,
    ErpForbidden,
    ErpMissing,
    ErpRejected,
    ExternalContact,
)

STREAMS = ("res.partner:company", "res.partner:person", "crm.lead")
_PARTNER_FIELDS = [
    "name",
    "is_company",
    "parent_id",
    "phone",
    "mobile",
    "email",
    "user_id",
    "category_id",
    "write_date",
    "active",
]
_LEAD_FIELDS = [
    "name",
    "partner_name",
    "contact_name",
    "phone",
    "mobile",
    "email_from",
    "user_id",
    "tag_ids",
    "write_date",
    "active",
]
_OUTCOME = {
    "answered": "answered",
    "missed": "missed",
    "abandoned": "abandoned by the caller",
    "voicemail": "went to voicemail",
    "busy": "busy",
    "failed": "failed",
}

_EXCEPTIONS: dict[str, type[ConnectorError]] = {
    "AccessDenied": ErpAuthFailed,
    "AccessError": ErpForbidden,
    "MissingError": ErpMissing,
    "ValidationError": ErpRejected,
    "UserError": ErpRejected,
    "ValueError": ErpRejected,
}


def odoo_error(data: Any, what: str, status: int | None = None) -> ConnectorError:
    """The error for an Odoo error body (JSON-RPC ``error`` or a JSON-2 body)."""
    name = message = ""
    if isinstance(data, dict):
        nested = data.get("data")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else data
        name = str(inner.get("name") or "")
        message = str(inner.get("message") or data.get("message") or "")
    short_name = name.rsplit(".", 1)[-1]
    kind = _EXCEPTIONS.get(short_name)
    if kind is None and status in (401,):
        kind = ErpAuthFailed
    if kind is None and status in (403,):
        kind = ErpForbidden
    if kind is None and status in (404,):
        kind = ErpMissing
    if kind is None and status in (400, 422):
        kind = ErpRejected
    label = f"{short_name}: " if short_name else ""
    return (kind or ErpBroken)(f"{what}: Odoo said {label}{message}".rstrip(": "))


class OdooConnector:
    streams: Sequence[str] = STREAMS

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        api_key: str,
        *,
        api: str = "",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.username = username
        self._key = api_key
        self.api = api  # "jsonrpc" | "json2" | "" (ask /web/version)
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT)
        self._uid: int | None = None
        self._ids = itertools.count(1)
        self._has_crm: bool | None = None
        self._cache: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the wire ---------------------------------------------------------------------------------

    async def _detect(self) -> str:
        if self.api:
            return self.api
        response = await send(self._client, "GET", self.url + "/web/version", "asking Odoo its version")
        if response.status_code >= 400:
            raise status_error(response, "asking Odoo its version", "")
        body = decode_json(response, "asking Odoo its version")
        info = body.get("version_info") if isinstance(body, dict) else None
        major = info[0] if isinstance(info, list) and info and isinstance(info[0], int) else 0
        self.api = "json2" if major >= 19 else "jsonrpc"
        return self.api

    async def _rpc(self, service: str, method: str, args: list[Any], what: str) -> Any:
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(self._ids),
        }
        response = await send(self._client, "POST", self.url + "/jsonrpc", what, json=payload)
        if response.status_code >= 400:
            raise status_error(response, what, "")
        body = decode_json(response, what)
        if not isinstance(body, dict):
            raise ErpBroken(f"{what}: the answer is not a JSON-RPC reply")
        if body.get("error") is not None:
            raise odoo_error(body["error"], what)
        return body.get("result")

    async def _login(self) -> int:
        if self._uid is None:
            uid = await self._rpc(
                "common", "login", [self.database, self.username, self._key], "signing in to Odoo"
            )
            if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
                raise ErpAuthFailed(
                    f"signing in to Odoo: database {self.database!r}, user {self.username!r} or the API "
                    "key is wrong"
                )
            self._uid = uid
        return self._uid

    async def call(self, model: str, method: str, ids: list[int] | None = None, **named: Any) -> Any:
        what = f"{model}.{method}"
        if await self._detect() == "json2":
            body = dict(named)
            if ids is not None:
                body["ids"] = ids
            headers = {"Authorization": f"bearer {self._key}", "X-Odoo-Database": self.database}
            response = await send(
                self._client, "POST", f"{self.url}/json/2/{model}/{method}", what, json=body, headers=headers
            )
            if response.status_code >= 400:
                try:
                    data = response.json()
                except ValueError:
                    raise status_error(response, what, "") from None
                if response.status_code in (429, 503) or (response.status_code >= 500 and not data):
                    raise status_error(response, what, "")
                raise odoo_error(data, what, response.status_code)
            return decode_json(response, what)
        uid = await self._login()
        args = [ids] if ids is not None else []
        return await self._rpc(
            "object", "execute_kw", [self.database, uid, self._key, model, method, args, named], what
        )

    # -- test connection ------------------------------------------------------------------------------

    async def test(self) -> list[Check]:
        checks: list[Check] = []
        try:
            api = await self._detect()
            checks.append(Check("reach Odoo", True, f"API: {'JSON-2' if api == 'json2' else 'JSON-RPC'}"))
            if api == "jsonrpc":
                uid = await self._login()
                checks.append(Check("sign in", True, f"user id {uid}"))
        except ConnectorError as exc:
            return [*checks, Check("sign in" if checks else "reach Odoo", False, str(exc))]
        for model in ("res.partner", "crm.lead", "mail.activity"):
            try:
                await self.call(model, "search_read", domain=[], fields=["id"], limit=1)
                checks.append(Check(f"read {model}", True))
            except ErpAuthFailed as exc:
                return [*checks, Check("sign in", False, str(exc))]
            except ErpForbidden:
                checks.append(Check(f"read {model}", False, f"the API user may not read {model}"))
            except ErpMissing:
                if model == "crm.lead":
                    checks.append(
                        Check(f"read {model}", True, "the CRM app is not installed: leads are skipped")
                    )
                else:
                    checks.append(Check(f"read {model}", False, f"{model} is not installed"))
            except ConnectorError as exc:
                checks.append(Check(f"read {model}", False, str(exc)))
        return checks

    # -- directory -------------------------------------------------------------------------------------

    def deep_link(self, ext_id: str) -> str:
        model, _, rid = ext_id.partition("/")
        return f"{self.url}/web#id={rid}&model={model}&view_type=form"

    async def _crm(self) -> bool:
        if self._has_crm is None:
            try:
                await self.call("crm.lead", "search_read", domain=[], fields=["id"], limit=1)
                self._has_crm = True
            except ErpMissing:
                self._has_crm = False
        return self._has_crm

    async def _names(self, model: str, ids: set[int]) -> dict[int, str]:
        cache: dict[int, str] = self._cache.setdefault(model, {})
        wanted = sorted(i for i in ids if i not in cache)
        if wanted:
            for row in await self.call(model, "read", wanted, fields=["name"]):
                cache[int(row["id"])] = str(row.get("name") or "")
        return {i: cache.get(i, "") for i in ids}

    def _domain(self, stream: str, *extra: list[Any]) -> list[Any]:
        domain: list[Any] = []
        if stream == "res.partner:company":
            domain.append(["is_company", "=", True])
        elif stream == "res.partner:person":
            domain.append(["is_company", "=", False])
        return [*domain, *extra]

    async def count(self, stream: str) -> int:
        model = stream.partition(":")[0]
        if model == "crm.lead" and not await self._crm():
            return 0
        value = await self.call(
            model, "search_count", domain=self._domain(stream), context={"active_test": False}
        )
        return int(value) if isinstance(value, int) else 0

    async def _search(
        self, model: str, domain: list[Any], fields: list[str], limit: int, order: str
    ) -> list[Any]:
        rows = await self.call(
            model,
            "search_read",
            domain=domain,
            fields=fields,
            limit=limit,
            order=order,
            context={"active_test": False},
        )
        if not isinstance(rows, list):
            raise ErpBroken(f"{model}.search_read: the answer is not a list")
        return rows

    async def page(self, stream: str, since: str, after: str, limit: int) -> list[ExternalContact]:
        model = stream.partition(":")[0]
        if model == "crm.lead" and not await self._crm():
            return []
        fields = _PARTNER_FIELDS if model == "res.partner" else _LEAD_FIELDS
        rows: list[Any] = []
        if since:
            same = self._domain(stream, ["write_date", "=", since], ["id", ">", int(after or 0)])
            rows = await self._search(model, same, fields, limit, "write_date asc, id asc")
        if len(rows) < limit:
            later = self._domain(stream, ["write_date", ">", since]) if since else self._domain(stream)
            rows += await self._search(model, later, fields, limit - len(rows), "write_date asc, id asc")
        tag_model = "res.partner.category" if model == "res.partner" else "crm.tag"
        tag_field = "category_id" if model == "res.partner" else "tag_ids"
        tag_ids = {int(t) for r in rows for t in (r.get(tag_field) or [])}
        tags = await self._names(tag_model, tag_ids) if tag_ids else {}
        return [self._contact(model, r, tags, tag_field) for r in rows]

    def _contact(
        self, model: str, row: dict[str, Any], tags: dict[int, str], tag_field: str
    ) -> ExternalContact:
        ext = f"{model}/{row['id']}"
        phones = [(str(row[k]), kind) for k, kind in (("phone", "work"), ("mobile", "mobile")) if row.get(k)]
        user = row.get("user_id")
        parent = row.get("parent_id")
        if model == "res.partner":
            name = str(row.get("name") or "")
            email = row.get("email")
            company = f"res.partner/{parent[0]}" if isinstance(parent, list) and parent else ""
            is_company = bool(row.get("is_company"))
            extra: tuple[str, ...] = ()
        else:
            name = str(row.get("contact_name") or row.get("partner_name") or row.get("name") or "")
            email = row.get("email_from")
            company = ""
            is_company = False
            extra = ("Lead",)
        return ExternalContact(
            ext_id=ext,
            url=self.deep_link(ext),
            is_company=is_company,
            name=name or ext,
            phones=tuple(phones),
            email=str(email or ""),
            tags=(*extra, *(tags[int(t)] for t in (row.get(tag_field) or []) if tags.get(int(t)))),
            owner=str(user[1]) if isinstance(user, list) and len(user) > 1 else "",
            company_ext_id=company,
            modified=str(row.get("write_date") or ""),
            active=bool(row.get("active", True)),
        )

    async def ids(self, stream: str, after: str, limit: int) -> list[str]:
        """Live (not archived) records only: an archived one is gone from the directory."""
        model = stream.partition(":")[0]
        if model == "crm.lead" and not await self._crm():
            return []
        rows = await self.call(
            model,
            "search_read",
            domain=self._domain(stream, ["id", ">", int(after or 0)]),
            fields=["id"],
            limit=limit,
            order="id asc",
        )
        return [f"{model}/{r['id']}" for r in rows]

    # -- calls --------------------------------------------------------------------------------------------

    def note(self, call: CallPush) -> str:
        inbound = call.direction == "inbound"
        outcome = _OUTCOME.get(call.disposition or "", call.disposition or "")
        who = call.answered_by_user or (f"extension {call.answered_by}" if call.answered_by else "")
        lines = [
            f"<p><b>{'Incoming' if inbound else 'Outgoing'} call</b> "
            f"{'from' if inbound else 'to'} {html.escape(call.external_number)}: {html.escape(outcome)}</p>",
            "<ul>",
            f"<li>Duration: {call.talk_seconds // 60}:{call.talk_seconds % 60:02d}</li>",
        ]
        if who:
            lines.append(f"<li>Answered by: {html.escape(who)}</li>")
        if call.placed_by_user and not inbound:
            lines.append(f"<li>Placed by: {html.escape(call.placed_by_user)}</li>")
        if call.recording_url:
            url = html.escape(call.recording_url, quote=True)
            lines.append(f'<li>Recording: <a href="{url}">listen</a></li>')
        if call.summary:
            lines.append(f"<li>Summary: {html.escape(call.summary)}</li>")
        lines.append(f"</ul><p><small>[{call.marker}]</small></p>")
        return "".join(lines)

    async def _model_id(self, model: str) -> int:
        key = f"model:{model}"
        if key not in self._cache:
            rows = await self.call(
                "ir.model", "search_read", domain=[["model", "=", model]], fields=["id"], limit=1
            )
            if not rows:
                raise ErpMissing(f"{model} is not a model of this Odoo")
            self._cache[key] = int(rows[0]["id"])
        return int(self._cache[key])

    async def _call_type(self) -> int | None:
        if "call_type" not in self._cache:
            rows = await self.call(
                "mail.activity.type", "search_read", domain=[["name", "=", "Call"]], fields=["id"], limit=1
            )
            self._cache["call_type"] = int(rows[0]["id"]) if rows else None
        value = self._cache["call_type"]
        return int(value) if value is not None else None

    async def push(self, call: CallPush, known: str) -> Pushed:
        target = next((ext for ext in call.links if ext.startswith(("res.partner/", "crm.lead/"))), "")
        if not call.complete:
            return Pushed("", "", "waiting for the call to end")
        if not target:
            return Pushed("", "", "no Odoo partner or lead has this number: nothing written")
        model, _, raw_id = target.partition("/")
        rid = int(raw_id)
        try:
            found = await self.call(model, "read", [rid], fields=["user_id"])
        except ErpMissing:
            found = []
        if not found:
            # Deleted (or merged away) in Odoo since the last sync: there is no chatter to write
            # on. The call stays in callbridge; the next sync removes the contact.
            return Pushed("", "", f"not written: {target} was deleted in Odoo")
        marker = f"[{call.marker}]"
        existing = await self.call(
            "mail.message",
            "search_read",
            domain=[["model", "=", model], ["res_id", "=", rid], ["body", "ilike", marker]],
            fields=["id"],
            limit=1,
        )
        if existing:
            message_id = int(existing[0]["id"])
        else:
            result = await self.call(
                model,
                "message_post",
                [rid],
                body=self.note(call),
                message_type="comment",
                subtype_xmlid="mail.mt_note",
            )
            message_id = int(result[0] if isinstance(result, list) else result)
        note = ""
        if call.missed and call.direction == "inbound":
            if call.callback_done:
                await self._activity_done(model, rid, marker)
            else:
                note = await self._activity(call, model, rid, found[0].get("user_id"), marker)
        ext = f"mail.message/{message_id}"
        return Pushed(ext, self.deep_link(target), note)

    async def _open_activity(self, model: str, rid: int, marker: str) -> int | None:
        rows = await self.call(
            "mail.activity",
            "search_read",
            domain=[["res_model", "=", model], ["res_id", "=", rid], ["note", "ilike", marker]],
            fields=["id"],
            limit=1,
        )
        return int(rows[0]["id"]) if rows else None

    async def _activity_done(self, model: str, rid: int, marker: str) -> None:
        """Mark the call's "Call" activity done (the callback task closed in callbridge). Odoo
        removes a done activity and posts "Call done" on the chatter, so once done it is not
        found again: a retry, or a later change of the call, does nothing more."""
        activity = await self._open_activity(model, rid, marker)
        if activity is None:
            return  # done already (here or by someone in Odoo), or never made
        with contextlib.suppress(ErpMissing):  # done in Odoo meanwhile
            await self.call(
                "mail.activity", "action_feedback", [activity], feedback="Called back (callbridge)"
            )

    async def _activity(self, call: CallPush, model: str, rid: int, owner: Any, marker: str) -> str:
        activity_type = await self._call_type()
        if activity_type is None:
            return "no 'Call' activity type in Odoo: no activity made"
        if await self._open_activity(model, rid, marker) is not None:
            return ""
        values: dict[str, Any] = {
            "activity_type_id": activity_type,
            "res_model_id": await self._model_id(model),
            "res_id": rid,
            "summary": f"Call back {call.external_number}",
            "note": f"<p>Missed call from {html.escape(call.external_number)} <small>{marker}</small></p>",
            "date_deadline": (call.started_at.date() if call.started_at else date.today()).isoformat(),
        }
        if isinstance(owner, list) and owner:
            values["user_id"] = int(owner[0])
        await self.call("mail.activity", "create", vals_list=[values])
        return ""
