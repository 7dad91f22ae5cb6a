"""Directory: contacts JSON API and pages, tags, CSV import, extension ↔ user mapping."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUploadFile

from callbridge.domain.directory import Contact, ContactKind, PhoneKind, search_key, split_tags
from callbridge.domain.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from callbridge.domain.users import User
from callbridge.services.contacts_import import ENCODINGS, read_contacts_file
from callbridge.services.directory import (
    ContactInput,
    ImportReport,
    apply_import,
    contact_input,
    lookup,
    parse_phone_lines,
    relink_numbers,
)
from callbridge.store.calls import CallFilter
from callbridge.store.directory import ContactQuery, SqlDirectory, SqlImportTarget
from callbridge.store.repos import Repos
from callbridge.web.deps import AdminUser, CurrentUser, HubDep, ManagerUser, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.routes.calls import CallOut, colleagues
from callbridge.web.schemas import ExternalOut, Id, Page

router = APIRouter(tags=["contacts"])

IMPORT_PATHS = ("/contacts/import", "/api/v1/contacts/import")
IMPORT_FORM_ALLOWANCE = 64 * 1024
"""Room in an import's request body for the multipart framing and the form's other fields."""


def import_too_large(max_bytes: int) -> str:
    """The sentence for a contacts file over the upload limit."""
    return (
        f"The file is larger than {max_bytes / (1024 * 1024):g} MiB, the most an upload takes. "
        "Split it into smaller files, or import it on the hub's machine with "
        "'callbridge contacts import', which has no such limit."
    )


IMPORT_CHUNK = 250  # rows per transaction in an uploaded import (a few tens of milliseconds)


# -- API models ----------------------------------------------------------------------------------------


class PhoneIO(BaseModel):
    number: str = Field(max_length=64, description="As typed; any national or international form.")
    kind: PhoneKind = PhoneKind.WORK
    e164: str | None = Field(None, description="Read-only: the normalized form.")


class ContactOut(BaseModel):
    id: int
    kind: ContactKind
    name: str
    company: dict[str, Any] | None
    phones: list[PhoneIO]
    email: str
    tags: list[str]
    owner: str | None
    notes: str
    external_id: str | None
    external: list[ExternalOut] = Field(
        default_factory=list, description="Where the contact lives in a connected ERP (ERPNext, Odoo)."
    )


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ContactKind = ContactKind.PERSON
    name: str = Field(max_length=200)
    company_id: Id | None = None
    phones: list[PhoneIO] = Field(default_factory=list, max_length=20)
    email: str = Field("", max_length=254)
    tags: list[str] = Field(default_factory=list, max_length=30)
    owner: str | None = Field(None, max_length=64, description="User name of the account manager.")
    notes: str = Field("", max_length=10_000)
    external_id: str = Field("", max_length=200)


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ContactKind | None = None
    name: str | None = Field(None, max_length=200)
    company_id: Id | None = None
    phones: list[PhoneIO] | None = Field(None, max_length=20)
    email: str | None = Field(None, max_length=254)
    tags: list[str] | None = Field(None, max_length=30)
    owner: str | None = Field(None, max_length=64)
    notes: str | None = Field(None, max_length=10_000)
    external_id: str | None = Field(None, max_length=200)


class TagOut(BaseModel):
    tag: str
    contacts: int


class TagRename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old: str = Field(max_length=40)
    new: str = Field(max_length=40)


class MatchOut(BaseModel):
    number: str
    match: str
    name: str
    contact: dict[str, Any] | None
    company: dict[str, Any] | None
    candidates: list[dict[str, Any]]


class ImportOut(BaseModel):
    created: int
    updated: int
    companies_created: int
    errors: list[dict[str, Any]]
    encoding: str = Field(description="How the file was read: UTF-8, UTF-16, Shift_JIS, …")
    warnings: list[str] = Field(description="Things to check, e.g. an encoding that was guessed.")


class ExtensionOut(BaseModel):
    pbx: str
    extension: str
    user: str


class ExtensionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(max_length=64)


# -- helpers -------------------------------------------------------------------------------------------


async def _owner_names(repos: Repos, contacts: list[Contact]) -> dict[int, str]:
    ids = {c.owner_id for c in contacts if c.owner_id is not None}
    names: dict[int, str] = {}
    for user_id in ids:
        stored = await repos.users.get(user_id)
        if stored is not None:
            names[user_id] = stored.user.name
    return names


async def _external(repos: Repos, contacts: list[Contact]) -> dict[int, list[ExternalOut]]:
    found = await repos.connectors.externals_of_contacts([c.id for c in contacts])
    return {cid: [ExternalOut.of(ref) for ref in refs] for cid, refs in found.items()}


def _out(
    c: Contact, owners: dict[int, str], external: dict[int, list[ExternalOut]] | None = None
) -> ContactOut:
    return ContactOut(
        id=c.id,
        kind=c.kind,
        name=c.name,
        company={"id": c.company_id, "name": c.company_name} if c.company_id else None,
        phones=[PhoneIO(number=p.raw, kind=p.kind, e164=p.key) for p in c.phones],
        email=c.email,
        tags=list(c.tags),
        owner=owners.get(c.owner_id) if c.owner_id is not None else None,
        notes=c.notes,
        external_id=c.external_id or None,
        external=(external or {}).get(c.id, []),
    )


async def _owner_id(repos: Repos, name: str | None) -> int | None:
    if not name:
        return None
    stored = await repos.users.get_by_name(name.strip())
    if stored is None:
        raise InvalidInput(f"owner: no user named {name!r}")
    return stored.user.id


OWNER_REFUSED = (
    "only a manager or an admin can set or change a contact's owner (or its current owner, handing it over)"
)
COMPANY_REFUSED = (
    "the company's owner sees this contact's calls and takes them first: only a manager or "
    "an admin can move a contact to a company with another owner"
)


async def _company_owner(repos: Repos, company_id: int | None) -> int | None:
    if company_id is None:
        return None
    found = await repos.directory.find(company_id)
    return found.owner_id if found is not None else None


async def check_ownership(repos: Repos, user: User, current: Contact | None, data: ContactInput) -> None:
    """Who owns a contact decides who sees its calls and whose phone ``/dialplan/owner`` rings:
    an agent cannot change that, except the current owner handing the contact over. Every path
    that writes a contact (API, pages) asks here before it writes."""
    if user.sees_all_calls:
        return
    owner_before = current.owner_id if current is not None else None
    if data.owner_id != owner_before and owner_before != user.id:
        raise Forbidden(OWNER_REFUSED)
    if current is None or data.company_id == current.company_id:
        return
    # A person without an owner of their own is routed to their company's owner, and a
    # company's owner sees the calls of its people: moving them moves their calls.
    if await _company_owner(repos, data.company_id) != await _company_owner(repos, current.company_id):
        raise Forbidden(COMPANY_REFUSED)


def _query(text: str | None, tag: str | None, kind: str | None, region: str) -> ContactQuery:
    q = (text or "").strip()
    key = search_key(q, region) if q else ""
    digits = "".join(ch for ch in q if ch.isdigit()) if q and not key else ""
    number_like = bool(digits) and len(digits) >= 3 and all(ch.isdigit() or ch in " +-()." for ch in q)
    contact_kind: ContactKind | None = None
    if kind:
        try:
            contact_kind = ContactKind(kind)
        except ValueError as exc:
            raise InvalidInput("kind: must be person or company") from exc
    return ContactQuery(
        text="" if key or number_like else q,
        number_key=key,
        digits=digits if number_like else "",
        tag=(tag or "").strip(),
        kind=contact_kind,
    )


async def _company_id_for_name(directory: SqlDirectory, name: str) -> int | None:
    """A person's company by name, created when new (as the import does)."""
    name = " ".join(name.split())
    if not name:
        return None
    target = SqlImportTarget(directory)
    found = await target.company_id_by_name(name)
    if found is not None:
        return found
    return await directory.create(ContactInput(ContactKind.COMPANY, name))


async def _relink(repos: Repos, region: str, keys: set[str]) -> None:
    await relink_numbers(repos.directory, repos.calls, region, keys)


async def _keys_of(repos: Repos, contact_id: Id) -> set[str]:
    found = await repos.directory.find(contact_id)
    return {p.key for p in found.phones} if found else set()


# -- JSON API --------------------------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=500)]
Text = Annotated[str | None, Query(max_length=200)]


@router.get("/api/v1/contacts")
async def list_contacts(
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    q: Text = None,
    tag: Text = None,
    kind: Text = None,
    limit: Limit = 50,
    cursor: Text = None,
) -> Page[ContactOut]:
    """Contacts by name. ``q`` is a name, an e-mail, a whole number in any format or digits of one."""
    directory = repos.directory
    items, next_cursor = await directory.search(
        _query(q, tag, kind, hub.settings.default_region), limit, cursor
    )
    owners = await _owner_names(repos, items)
    external = await _external(repos, items)
    return Page(items=[_out(c, owners, external) for c in items], next=next_cursor)


@router.post("/api/v1/contacts", status_code=201)
async def create_contact(body: ContactIn, user: CurrentUser, repos: RepoDep, hub: HubDep) -> ContactOut:
    data = contact_input(
        kind=body.kind.value,
        name=body.name,
        region=hub.settings.default_region,
        phones=[(p.number, p.kind.value) for p in body.phones],
        company_id=body.company_id,
        email=body.email,
        tags=body.tags,
        owner_id=await _owner_id(repos, body.owner),
        notes=body.notes,
        external_id=body.external_id,
    )
    await check_ownership(repos, user, None, data)
    directory = repos.directory
    contact = await directory.get(await directory.create(data))
    await _relink(repos, hub.settings.default_region, {p.key for p in contact.phones})
    return _out(contact, await _owner_names(repos, [contact]), await _external(repos, [contact]))


@router.get("/api/v1/contacts/{contact_id}")
async def get_contact(contact_id: Id, user: CurrentUser, repos: RepoDep) -> ContactOut:
    contact = await repos.directory.get(contact_id)
    return _out(contact, await _owner_names(repos, [contact]), await _external(repos, [contact]))


@router.patch("/api/v1/contacts/{contact_id}")
async def update_contact(
    contact_id: Id, body: ContactPatch, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> ContactOut:
    directory = repos.directory
    current = await directory.get(contact_id)
    given = body.model_fields_set
    owners = await _owner_names(repos, [current])
    data = contact_input(
        kind=(body.kind or current.kind).value,
        name=body.name if body.name is not None else current.name,
        region=hub.settings.default_region,
        phones=[(p.number, p.kind.value) for p in body.phones]
        if body.phones is not None
        else [(p.raw, p.kind.value) for p in current.phones],
        company_id=body.company_id if "company_id" in given else current.company_id,
        email=body.email if body.email is not None else current.email,
        tags=body.tags if body.tags is not None else current.tags,
        owner_id=await _owner_id(repos, body.owner)
        if "owner" in given
        else await _owner_id(repos, owners.get(current.owner_id or 0)),
        notes=body.notes if body.notes is not None else current.notes,
        external_id=body.external_id if body.external_id is not None else current.external_id,
    )
    await check_ownership(repos, user, current, data)
    await directory.update(contact_id, data)
    contact = await directory.get(contact_id)
    await _relink(
        repos, hub.settings.default_region, {p.key for p in current.phones} | {p.key for p in contact.phones}
    )
    return _out(contact, await _owner_names(repos, [contact]), await _external(repos, [contact]))


@router.delete("/api/v1/contacts/{contact_id}", status_code=204)
async def delete_contact(contact_id: Id, user: ManagerUser, repos: RepoDep, hub: HubDep) -> Response:
    keys = await _keys_of(repos, contact_id)
    await repos.directory.delete(contact_id)
    await _relink(repos, hub.settings.default_region, keys)
    return Response(status_code=204)


@router.get("/api/v1/contacts/{contact_id}/calls")
async def contact_calls(
    contact_id: Id, user: CurrentUser, repos: RepoDep, limit: Limit = 50, cursor: Text = None
) -> Page[CallOut]:
    """The contact's calls; for a company, the calls of all its people too."""
    contact = await repos.directory.get(contact_id)
    f = _history_filter(contact, user)
    items, next_cursor = await repos.calls.search(f, limit, cursor)
    return Page(items=[CallOut.of(c) for c in items], next=next_cursor)


def _history_filter(contact: Contact, user: User) -> CallFilter:
    if contact.kind is ContactKind.COMPANY:
        return CallFilter(company_id=contact.id, viewer=user)
    return CallFilter(contact_id=contact.id, viewer=user)


@router.get("/api/v1/lookup")
async def lookup_number(
    user: CurrentUser, repos: RepoDep, hub: HubDep, number: Annotated[str, Query(max_length=200)]
) -> MatchOut:
    """Who a number belongs to, with the rules applied (and the choices when ambiguous)."""
    match = await lookup(repos.directory, number, hub.settings.default_region)
    return MatchOut(
        number=number,
        match=match.kind.value,
        name=match.display_name,
        contact={"id": match.contact.id, "name": match.contact.name} if match.contact else None,
        company={"id": match.company.id, "name": match.company.name} if match.company else None,
        candidates=[{"id": c.id, "name": c.display_name} for c in match.candidates],
    )


@router.get("/api/v1/tags")
async def list_tags(user: CurrentUser, repos: RepoDep) -> Page[TagOut]:
    tags = await repos.directory.all_tags()
    return Page(items=[TagOut(tag=t, contacts=n) for t, n in tags])


def _one_tag(text: str, name: str) -> str:
    tags = split_tags(text)
    if not tags:
        raise InvalidInput(f"{name}: a tag must not be empty")
    if len(tags) > 1:
        raise InvalidInput(f"{name}: one tag only; a tag cannot contain a comma, semicolon or '|'")
    return tags[0]


@router.post("/api/v1/tags/rename")
async def rename_tag(body: TagRename, user: ManagerUser, repos: RepoDep) -> TagOut:
    new = _one_tag(body.new, "new")
    count = await repos.directory.rename_tag(body.old, new)
    if not count:
        raise NotFound(f"no contact has the tag {body.old!r}")
    return TagOut(tag=new, contacts=count)


@router.delete("/api/v1/tags/{tag}", status_code=204)
async def delete_tag(tag: str, user: ManagerUser, repos: RepoDep) -> Response:
    if not await repos.directory.delete_tag(tag):
        raise NotFound(f"no contact has the tag {tag!r}")
    return Response(status_code=204)


async def _read_upload(upload: StarletteUploadFile, max_bytes: int) -> bytes:
    """The uploaded file (the form parser has spooled it to disk), refused past ``max_bytes``."""
    try:
        if upload.size is not None and upload.size > max_bytes:
            raise PayloadTooLarge(import_too_large(max_bytes))
        data = await upload.read(max_bytes + 1)
    finally:
        await upload.close()
    if len(data) > max_bytes:
        raise PayloadTooLarge(import_too_large(max_bytes))
    return data


async def _run_import(
    data: bytes, repos: Repos, region: str, mapping: dict[str, str] | None = None, encoding: str | None = None
) -> ImportReport:
    parsed = read_contacts_file(data, region, mapping, encoding)
    report = ImportReport(errors=list(parsed.errors), encoding=parsed.encoding, warnings=parsed.warnings)
    for start in range(0, len(parsed.rows), IMPORT_CHUNK):
        await apply_import(
            SqlImportTarget(repos.directory), parsed.rows[start : start + IMPORT_CHUNK], report
        )
        # Commit each chunk: the writer (SQLite has one) is free between chunks, so requests
        # that write wait for one chunk at most, not for the whole file. Re-running is safe.
        await repos.commit()
        await asyncio.sleep(0)
    await _relink(repos, region, report.keys)
    report.errors.sort(key=lambda e: e.line)
    return report


@router.post("/api/v1/contacts/import")
async def import_contacts(
    file: UploadFile,
    user: ManagerUser,
    repos: RepoDep,
    hub: HubDep,
    encoding: Annotated[
        str | None, Form(max_length=40, description="The file's encoding; empty: detected.")
    ] = None,
) -> ImportOut:
    """CSV upload: good rows are imported, bad rows reported by line; safe to re-run."""
    data = await _read_upload(file, hub.settings.max_import_bytes)
    report = await _run_import(data, repos, hub.settings.default_region, encoding=encoding)
    return ImportOut(
        created=report.created,
        updated=report.updated,
        companies_created=report.companies_created,
        errors=[{"line": e.line, "reason": e.reason} for e in report.errors],
        encoding=report.encoding,
        warnings=report.warnings,
    )


@router.get("/api/v1/extensions")
async def list_extensions(user: CurrentUser, repos: RepoDep) -> Page[ExtensionOut]:
    rows = await repos.extensions.all()
    return Page(items=[ExtensionOut(pbx=r.pbx, extension=r.extension, user=r.user_name) for r in rows])


def _check_extension(extension: str) -> str:
    extension = extension.strip()
    if not extension or len(extension) > 32 or not all(ch.isalnum() or ch in "*#_-" for ch in extension):
        raise InvalidInput("extension: 1 to 32 digits or letters")
    return extension


@router.put("/api/v1/extensions/{pbx}/{extension}")
async def map_extension(
    pbx: str, extension: str, body: ExtensionIn, user: AdminUser, repos: RepoDep
) -> ExtensionOut:
    """Map a PBX extension to a user (who answered, screen pops)."""
    await repos.pbxes.get(pbx)
    extension = _check_extension(extension)
    stored = await repos.users.get_by_name(body.user)
    if stored is None:
        raise InvalidInput(f"user: no user named {body.user!r}")
    await repos.extensions.map(pbx, extension, stored.user.id)
    return ExtensionOut(pbx=pbx, extension=extension, user=stored.user.name)


@router.delete("/api/v1/extensions/{pbx}/{extension}", status_code=204)
async def unmap_extension(pbx: str, extension: str, user: AdminUser, repos: RepoDep) -> Response:
    if not await repos.extensions.unmap(pbx, extension):
        raise NotFound(f"extension {extension} on {pbx} is not mapped")
    return Response(status_code=204)


# -- pages ------------------------------------------------------------------------------------------------


@router.get("/contacts", include_in_schema=False)
async def contacts_page(
    request: Request,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    q: Text = None,
    tag: Text = None,
    kind: Text = None,
    cursor: Text = None,
) -> Response:
    error = ""
    items: list[Contact] = []
    next_cursor: str | None = None
    try:
        items, next_cursor = await repos.directory.search(
            _query(q, tag, kind or None, hub.settings.default_region), 50, cursor
        )
    except InvalidInput as exc:
        error = exc.message
    params = {k: v for k, v in {"q": q, "tag": tag, "kind": kind}.items() if v}
    return render(
        request,
        "contacts/list.html",
        status_code=400 if error else 200,
        contacts=items,
        q=q or "",
        tag=tag or "",
        kind=kind or "",
        error=error,
        next_url=f"/contacts?{urlencode({**params, 'cursor': next_cursor})}" if next_cursor else "",
    )


async def _form_context(repos: Repos, user: User, contact: Contact | None = None) -> dict[str, Any]:
    return {
        "users": [u.name for u in await repos.users.all()],
        "kinds": [k.value for k in PhoneKind],
        # The owner field is a choice only for those check_ownership lets change it.
        "can_set_owner": user.sees_all_calls or (contact is not None and contact.owner_id == user.id),
    }


def _form_values(contact: Contact | None, owners: dict[int, str]) -> dict[str, str]:
    if contact is None:
        return {"kind": "person"}
    return {
        "kind": contact.kind.value,
        "name": contact.name,
        "company": contact.company_name,
        "phones": "\n".join(f"{p.kind.value}: {p.raw}" for p in contact.phones),
        "email": contact.email,
        "tags": ", ".join(contact.tags),
        "owner": owners.get(contact.owner_id or 0, ""),
        "notes": contact.notes,
        "external_id": contact.external_id,
    }


@router.get("/contacts/new", include_in_schema=False)
async def new_contact_page(
    request: Request, user: CurrentUser, repos: RepoDep, number: Text = None, name: Text = None
) -> Response:
    values = {"kind": "person", "phones": number or "", "name": name or ""}
    return render(
        request,
        "contacts/form.html",
        values=values,
        action="/contacts/new",
        **await _form_context(repos, user),
    )


async def _save_form(
    request: Request, repos: RepoDep, user: User, region: str, contact_id: int | None
) -> int:
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    directory = repos.directory
    kind = field("kind") or "person"
    data = contact_input(
        kind=kind,
        name=field("name"),
        region=region,
        phones=parse_phone_lines(field("phones")),
        company_id=await _company_id_for_name(directory, field("company")) if kind == "person" else None,
        email=field("email"),
        tags=split_tags(field("tags")),
        owner_id=await _owner_id(repos, field("owner") or None),
        notes=field("notes"),
        external_id=field("external_id"),
    )
    current = await directory.find(contact_id) if contact_id is not None else None
    await check_ownership(repos, user, current, data)
    before = {p.key for p in current.phones} if current is not None else set()
    if contact_id is None:
        contact_id = await directory.create(data)
    else:
        await directory.update(contact_id, data)
    await _relink(repos, region, before | {p.key for p in data.phones})
    return contact_id


async def _form_error(
    request: Request,
    repos: Repos,
    user: User,
    action: str,
    message: str,
    contact_id: int | None = None,
    status_code: int = 400,
) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    contact = await repos.directory.find(contact_id) if contact_id is not None else None
    return render(
        request,
        "contacts/form.html",
        status_code=status_code,
        values=values,
        contact=contact,
        action=action,
        error=message,
        **await _form_context(repos, user, contact),
    )


@router.post("/contacts/new", include_in_schema=False)
async def create_contact_form(request: Request, user: CurrentUser, repos: RepoDep, hub: HubDep) -> Response:
    try:
        contact_id = await _save_form(request, repos, user, hub.settings.default_region, None)
    except InvalidInput as exc:
        await repos.rollback()
        return await _form_error(request, repos, user, "/contacts/new", exc.message)
    except Forbidden as exc:
        await repos.rollback()
        return await _form_error(request, repos, user, "/contacts/new", exc.message, status_code=403)
    flash(request, "Contact created.")
    return RedirectResponse(f"/contacts/{contact_id}", status_code=303)


def _import_page(request: Request, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("report", None)
    context.setdefault("encoding", "")
    return render(
        request,
        "contacts/import.html",
        status_code=status_code,
        encodings=ENCODINGS,
        max_mib=f"{request.app.state.hub.settings.max_import_bytes / (1024 * 1024):g}",
        **context,
    )


@router.get("/contacts/import", include_in_schema=False)
async def import_page(request: Request, user: ManagerUser) -> Response:
    return _import_page(request)


@router.post("/contacts/import", include_in_schema=False)
async def import_upload(request: Request, user: ManagerUser, repos: RepoDep, hub: HubDep) -> Response:
    form = await request.form()
    upload = form.get("file")
    chosen = form.get("encoding")
    encoding = chosen.strip() if isinstance(chosen, str) else ""
    if upload is None or isinstance(upload, str) or not upload.filename:
        return _import_page(request, 400, error="Choose a CSV file.", encoding=encoding)
    try:
        data = await _read_upload(upload, hub.settings.max_import_bytes)
        report = await _run_import(data, repos, hub.settings.default_region, encoding=encoding or None)
    except InvalidInput as exc:
        await repos.rollback()
        status = 413 if isinstance(exc, PayloadTooLarge) else 400
        return _import_page(request, status, error=_sentence(exc.message), encoding=encoding)
    # Back to "detect" for the next file: a choice kept silently would misread a file in another encoding.
    return _import_page(request, report=report)


def _sentence(message: str) -> str:
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


@router.get("/contacts/tags", include_in_schema=False)
async def tags_page(request: Request, user: CurrentUser, repos: RepoDep) -> Response:
    return render(request, "contacts/tags.html", tags=await repos.directory.all_tags())


@router.post("/contacts/tags", include_in_schema=False)
async def tags_form(request: Request, user: ManagerUser, repos: RepoDep) -> Response:
    form = await request.form()
    old = form.get("old")
    new = form.get("new")
    directory = repos.directory
    if not isinstance(old, str) or not old:
        raise InvalidInput("choose a tag")
    if isinstance(new, str) and new.strip():
        cleaned = _one_tag(new, "new name")
        await directory.rename_tag(old, cleaned)
        flash(request, f"Tag {old} renamed to {cleaned}.")
    else:
        await directory.delete_tag(old)
        flash(request, f"Tag {old} removed.")
    return RedirectResponse("/contacts/tags", status_code=303)


@router.get("/contacts/{contact_id}", include_in_schema=False)
async def contact_page(request: Request, contact_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    directory = repos.directory
    contact = await directory.get(contact_id)
    owners = await _owner_names(repos, [contact])
    calls, _ = await repos.calls.search(_history_filter(contact, user), 200)
    people = await directory.people_of(contact.id) if contact.kind is ContactKind.COMPANY else []
    history_key = "company_id" if contact.kind is ContactKind.COMPANY else "contact_id"
    grouped: OrderedDict[str, list[Any]] = OrderedDict()
    if contact.kind is ContactKind.COMPANY:
        names = {p.id: p.name for p in people}
        by_person: dict[str, list[Any]] = {}
        for call in calls:
            who = names.get(call.contact.id, contact.name) if call.contact else contact.name
            by_person.setdefault(who, []).append(call)
        # The company's own line first, then its people by name.
        for who in sorted(by_person, key=lambda n: (n != contact.name, n.casefold())):
            grouped[who] = by_person[who]
    return render(
        request,
        "contacts/detail.html",
        contact=contact,
        owner=owners.get(contact.owner_id or 0, ""),
        people=people,
        calls=calls,
        grouped=grouped,
        colleagues=await colleagues(repos),
        history_url=f"/calls?{urlencode({history_key: contact.id})}",
        external=(await repos.connectors.externals_of_contacts([contact.id])).get(contact.id, []),
    )


@router.get("/contacts/{contact_id}/edit", include_in_schema=False)
async def edit_contact_page(request: Request, contact_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    contact = await repos.directory.get(contact_id)
    values = _form_values(contact, await _owner_names(repos, [contact]))
    return render(
        request,
        "contacts/form.html",
        values=values,
        contact=contact,
        action=f"/contacts/{contact_id}/edit",
        **await _form_context(repos, user, contact),
    )


@router.post("/contacts/{contact_id}/edit", include_in_schema=False)
async def edit_contact_form(
    request: Request, contact_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> Response:
    await repos.directory.get(contact_id)
    try:
        await _save_form(request, repos, user, hub.settings.default_region, contact_id)
    except (InvalidInput, Forbidden) as exc:
        await repos.rollback()
        return await _form_error(
            request,
            repos,
            user,
            f"/contacts/{contact_id}/edit",
            exc.message,
            contact_id,
            403 if isinstance(exc, Forbidden) else 400,
        )
    flash(request, "Contact saved.")
    return RedirectResponse(f"/contacts/{contact_id}", status_code=303)


@router.get("/contacts/{contact_id}/delete", include_in_schema=False)
async def delete_contact_page(
    request: Request, contact_id: Id, user: CurrentUser, repos: RepoDep
) -> Response:
    """Deleting is asked once more, with what it does to the calls."""
    if not user.sees_all_calls:
        raise Forbidden("only managers and admins delete contacts")
    contact = await repos.directory.get(contact_id)
    calls = await repos.calls.count_for_contact(contact_id)
    return render(request, "contacts/delete.html", contact=contact, calls=calls)


@router.post("/contacts/{contact_id}/delete", include_in_schema=False)
async def delete_contact_form(
    request: Request,
    contact_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    if not user.sees_all_calls:
        raise Forbidden("only managers and admins delete contacts")
    if confirm != "yes":
        return RedirectResponse(f"/contacts/{contact_id}/delete", status_code=303)
    keys = await _keys_of(repos, contact_id)
    await repos.directory.delete(contact_id)
    await _relink(repos, hub.settings.default_region, keys)
    flash(request, "Contact deleted.")
    return RedirectResponse("/contacts", status_code=303)


@router.get("/settings/extensions", include_in_schema=False)
async def extensions_page(request: Request, user: AdminUser, repos: RepoDep) -> Response:
    return render(
        request,
        "contacts/extensions.html",
        mappings=await repos.extensions.all(),
        pbxes=[p.name for p in await repos.pbxes.all()],
        users=[u.name for u in await repos.users.all()],
    )


@router.post("/settings/extensions", include_in_schema=False)
async def extensions_form(request: Request, user: AdminUser, repos: RepoDep) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    pbx, extension, name = values.get("pbx", ""), values.get("extension", ""), values.get("user", "")
    extensions = repos.extensions
    if values.get("remove"):
        await extensions.unmap(pbx, extension)
        flash(request, f"Extension {extension} on {pbx} unmapped.")
        return RedirectResponse("/settings/extensions", status_code=303)
    await repos.pbxes.get(pbx)
    stored = await repos.users.get_by_name(name)
    if stored is None:
        raise InvalidInput(f"no user named {name!r}")
    extension = _check_extension(extension)
    holder = next((m for m in await extensions.all() if m.pbx == pbx and m.extension == extension), None)
    if holder is not None and holder.user_id != stored.user.id and values.get("confirm") != "yes":
        # Taking an extension from someone else is said and confirmed, never silent.
        return render(
            request,
            "contacts/extensions.html",
            status_code=409,
            mappings=await extensions.all(),
            pbxes=[p.name for p in await repos.pbxes.all()],
            users=[u.name for u in await repos.users.all()],
            move={"pbx": pbx, "extension": extension, "from": holder.user_name, "to": stored.user.name},
        )
    await extensions.map(pbx, extension, stored.user.id)
    flash(request, f"Extension {extension} on {pbx} now belongs to {stored.user.name}.")
    return RedirectResponse("/settings/extensions", status_code=303)
