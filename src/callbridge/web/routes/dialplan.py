"""The dialplan API: the PBX asks during ringing (caller name, owner's phone, tags).

Plain text for Asterisk's ``CURL()``; JSON with ``Accept: application/json``. Authenticated by
the PBX's dialplan token (``token`` query parameter or ``X-Callbridge-Token`` header). Kept
lean on purpose — no session cookie, no ORM session, a verified-token cache, one indexed
probe per question — because it must answer in about a millisecond while a phone rings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from callbridge.domain.directory import Match, MatchKind
from callbridge.domain.errors import Forbidden
from callbridge.hub import Hub
from callbridge.services.directory import lookup
from callbridge.store.directory import DialplanPbx, FastDirectory, token_hash

router = APIRouter(prefix="/dialplan", tags=["dialplan"])

TOKEN_TTL_SECONDS = 5.0
MAX_CACHED_TOKENS = 1024
_NUMBER = Query(max_length=200, description="The caller's number in any format.")
_EXTRA = "dialplan"


@dataclass(slots=True)
class TokenCache:
    """Recently verified tokens (hash → PBX), so a ringing phone costs one query, not two.
    Short-lived: a rotated or removed token stops working within ``TOKEN_TTL_SECONDS``."""

    entries: dict[str, tuple[float, DialplanPbx]] = field(default_factory=dict)

    def get(self, digest: str) -> DialplanPbx | None:
        hit = self.entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, digest: str, pbx: DialplanPbx) -> None:
        if len(self.entries) >= MAX_CACHED_TOKENS:
            self.entries.clear()
        self.entries[digest] = (time.monotonic() + TOKEN_TTL_SECONDS, pbx)


@dataclass(slots=True)
class DialplanState:
    directory: FastDirectory
    tokens: TokenCache


def _state(request: Request) -> tuple[Hub, DialplanState]:
    hub: Hub = request.app.state.hub
    state = hub.extras.get(_EXTRA)
    if not isinstance(state, DialplanState):
        state = DialplanState(hub.fast_directory, TokenCache())
        hub.extras[_EXTRA] = state

        async def close(_: Hub) -> None:
            hub.extras.pop(_EXTRA, None)

        request.app.state.on_stop.append(close)
    return hub, state


async def _pbx(state: DialplanState, token: str | None) -> DialplanPbx:
    if not token or len(token) > 200:
        raise Forbidden("forbidden")
    digest = token_hash(token)
    pbx = state.tokens.get(digest)
    if pbx is None:
        pbx = await state.directory.pbx_for(token)
        if pbx is None:
            raise Forbidden("forbidden")
        state.tokens.put(digest, pbx)
    return pbx


def _answer(request: Request, text: str, data: dict[str, Any]) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(data)
    return PlainTextResponse(text)


# What the document says of each answer: plain text for CURL(), JSON when asked for.
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Plain text for Asterisk's CURL() (empty when nothing matches), or JSON when "
        "the request sends `Accept: application/json`.",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    **{
        status: {
            "description": description + " Plain-text requests get an empty body; JSON ones an error object.",
            "content": {
                "text/plain": {"schema": {"type": "string", "maxLength": 0}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
        for status, description in (
            (403, "A missing or wrong dialplan token."),
            (422, "A number that is missing, too long or not a phone number."),
        )
    },
}

TokenQuery = Annotated[str | None, Query(max_length=200, description="The PBX's dialplan token.")]
TokenHeader = Annotated[str | None, Header(alias="X-Callbridge-Token", max_length=200)]
Number = Annotated[str, _NUMBER]


@router.get("/caller-name", responses=ANSWERS)
async def caller_name(
    request: Request, number: Number, token: TokenQuery = None, x_callbridge_token: TokenHeader = None
) -> Response:
    """The caller's name (with company); an empty body when the number is unknown or ambiguous."""
    hub, state = _state(request)
    await _pbx(state, token or x_callbridge_token)
    match = await lookup(state.directory, number, hub.settings.default_region)
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


@router.get("/owner", responses=ANSWERS)
async def owner(
    request: Request, number: Number, token: TokenQuery = None, x_callbridge_token: TokenHeader = None
) -> Response:
    """Dial string of the contact owner's extension on this PBX (``PJSIP/1001``), or empty."""
    hub, state = _state(request)
    pbx = await _pbx(state, token or x_callbridge_token)
    match = await lookup(state.directory, number, hub.settings.default_region)
    extension = owner_name = ""
    owner_id = await _owner_id(state.directory, match)
    if owner_id is not None:
        extension, owner_name = await state.directory.extension_of(pbx.name, owner_id)
    technology = str(pbx.config.get("dial_technology") or "PJSIP")
    dial = f"{technology}/{extension}" if extension else ""
    return _answer(
        request,
        dial,
        {"number": number, "extension": extension, "dial": dial, "owner": owner_name if extension else ""},
    )


@router.get("/tags", responses=ANSWERS)
async def tags(
    request: Request, number: Number, token: TokenQuery = None, x_callbridge_token: TokenHeader = None
) -> Response:
    """The contact's tags, comma-separated (``VIP,partner``), or empty."""
    hub, state = _state(request)
    await _pbx(state, token or x_callbridge_token)
    match = await lookup(state.directory, number, hub.settings.default_region)
    contact_id = _tagged_id(match)
    found = await state.directory.tags_of(contact_id) if contact_id is not None else []
    return _answer(request, ",".join(found), {"number": number, "tags": found})


def _tagged_id(match: Match) -> int | None:
    if match.kind is MatchKind.CONTACT and match.contact is not None:
        return match.contact.id
    if match.kind is MatchKind.COMPANY and match.company is not None:
        return match.company.id
    return None


async def _owner_id(directory: FastDirectory, match: Match) -> int | None:
    """The contact's account manager; a person without one falls back to their company's."""
    if match.kind is MatchKind.CONTACT and match.contact is not None:
        if match.contact.owner_id is not None:
            return match.contact.owner_id
        if match.company is not None:
            return await directory.owner_of(match.company.id)
        return None
    if match.kind is MatchKind.COMPANY and match.company is not None:
        return await directory.owner_of(match.company.id)
    return None
