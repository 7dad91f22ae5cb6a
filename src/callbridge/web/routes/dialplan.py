"""The dialplan API: the PBX asks during ringing (caller name, owner's phone, tags).

Plain text for Asterisk's ``CURL()``; JSON with ``Accept: application/json``. Authenticated by
the PBX's dialplan token (``token`` query parameter or ``X-Callbridge-Token`` header). Kept
lean on purpose: one session, one indexed lookup, no user machinery — it must answer in about a
millisecond while a phone rings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from callbridge.domain.directory import Match, MatchKind
from callbridge.domain.errors import Forbidden
from callbridge.hub import Hub
from callbridge.services.directory import lookup
from callbridge.store.directory import DialplanPbx, DialplanReader, SqlDirectory, dialplan_reader, token_hash

router = APIRouter(prefix="/dialplan", tags=["dialplan"])

TOKEN_TTL_SECONDS = 5.0
MAX_CACHED_TOKENS = 1024
_NUMBER = Query(max_length=200, description="The caller's number in any format.")


@dataclass(slots=True)
class TokenCache:
    """Recently verified tokens (hash → PBX) so a ringing phone costs one query, not two.
    Short-lived: a rotated token stops working within ``TOKEN_TTL_SECONDS``."""

    entries: dict[str, tuple[float, DialplanPbx]]

    def get(self, digest: str) -> DialplanPbx | None:
        hit = self.entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, digest: str, pbx: DialplanPbx) -> None:
        if len(self.entries) >= MAX_CACHED_TOKENS:
            self.entries.clear()
        self.entries[digest] = (time.monotonic() + TOKEN_TTL_SECONDS, pbx)

    def clear(self) -> None:
        self.entries.clear()


def token_cache(hub: Hub) -> TokenCache:
    cache = hub.extras.get("dialplan_token_cache")
    if not isinstance(cache, TokenCache):
        cache = TokenCache({})
        hub.extras["dialplan_token_cache"] = cache
    return cache


async def _pbx(hub: Hub, reader: DialplanReader, token: str | None) -> DialplanPbx:
    if not token or len(token) > 200:
        raise Forbidden("forbidden")
    cache = token_cache(hub)
    digest = token_hash(token)
    pbx = cache.get(digest)
    if pbx is None:
        pbx = await reader.tokens.pbx_for(token)
        if pbx is None:
            raise Forbidden("forbidden")
        cache.put(digest, pbx)
    return pbx


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _answer(request: Request, text: str, data: dict[str, Any]) -> Response:
    if _wants_json(request):
        return JSONResponse(data)
    return PlainTextResponse(text)


TokenQuery = Annotated[str | None, Query(max_length=200, description="The PBX's dialplan token.")]
TokenHeader = Annotated[str | None, Header(alias="X-Callbridge-Token", max_length=200)]


@router.get("/caller-name")
async def caller_name(
    request: Request,
    number: Annotated[str, _NUMBER],
    token: TokenQuery = None,
    x_callbridge_token: TokenHeader = None,
) -> Response:
    """The caller's name (with company); an empty body when the number is unknown or ambiguous."""
    hub: Hub = request.app.state.hub
    async with dialplan_reader(hub.db) as reader:
        await _pbx(hub, reader, token or x_callbridge_token)
        match = await lookup(reader.directory, number, hub.settings.default_region)
    name = match.display_name
    return _answer(
        request,
        name,
        {
            "number": number,
            "match": match.kind.value,
            "name": name,
            "contact": match.contact.name if match.contact and match.kind is MatchKind.CONTACT else "",
            "company": match.company.name if match.company else "",
        },
    )


@router.get("/owner")
async def owner(
    request: Request,
    number: Annotated[str, _NUMBER],
    token: TokenQuery = None,
    x_callbridge_token: TokenHeader = None,
) -> Response:
    """Dial string of the contact owner's extension on this PBX (``PJSIP/1001``), or empty."""
    hub: Hub = request.app.state.hub
    extension = owner_name = ""
    async with dialplan_reader(hub.db) as reader:
        pbx = await _pbx(hub, reader, token or x_callbridge_token)
        directory = reader.directory
        match = await lookup(directory, number, hub.settings.default_region)
        owner_id = await _owner_id(directory, match)
        if owner_id is not None:
            extension = await reader.extensions.extension_of(pbx.name, owner_id)
            owner_name = await reader.user_name(owner_id)
    technology = str(pbx.config.get("dial_technology") or "PJSIP")
    dial = f"{technology}/{extension}" if extension else ""
    return _answer(
        request,
        dial,
        {"number": number, "extension": extension, "dial": dial, "owner": owner_name if extension else ""},
    )


@router.get("/tags")
async def tags(
    request: Request,
    number: Annotated[str, _NUMBER],
    token: TokenQuery = None,
    x_callbridge_token: TokenHeader = None,
) -> Response:
    """The contact's tags, comma-separated (``VIP,partner``), or empty."""
    hub: Hub = request.app.state.hub
    found: list[str] = []
    async with dialplan_reader(hub.db) as reader:
        await _pbx(hub, reader, token or x_callbridge_token)
        directory = reader.directory
        match = await lookup(directory, number, hub.settings.default_region)
        contact_id = _tagged_id(match)
        if contact_id is not None:
            found = await directory.tags_of(contact_id)
    return _answer(request, ",".join(found), {"number": number, "tags": found})


def _tagged_id(match: Match) -> int | None:
    if match.kind is MatchKind.CONTACT and match.contact is not None:
        return match.contact.id
    if match.kind is MatchKind.COMPANY and match.company is not None:
        return match.company.id
    return None


async def _owner_id(directory: SqlDirectory, match: Match) -> int | None:
    if match.kind is MatchKind.CONTACT and match.contact is not None:
        if match.contact.owner_id is not None:
            return match.contact.owner_id
        # A person without an account manager: their company's manager takes the call.
        if match.company is not None:
            company = await directory.find(match.company.id)
            return company.owner_id if company else None
        return None
    if match.kind is MatchKind.COMPANY and match.company is not None:
        if match.contact is not None and match.contact.id == match.company.id:
            return match.contact.owner_id
        company = await directory.find(match.company.id)
        return company.owner_id if company else None
    return None
