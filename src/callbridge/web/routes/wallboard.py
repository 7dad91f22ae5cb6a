"""The wallboard: a full-screen page for a TV, for managers signed in or opened with a
read-only link (its own revocable token, no sign-in), and the API that makes those links."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from callbridge.domain.errors import NotFound
from callbridge.services.queues import (
    WALLBOARD_TOPIC,
    new_wallboard_token,
    wallboard_token_hash,
    wallboard_url,
)
from callbridge.web.deps import HubDep, ManagerUser, RepoDep
from callbridge.web.pages import render
from callbridge.web.schemas import Id, Strict

router = APIRouter()


class LinkIn(Strict):
    name: str = Field(default="", max_length=100, description="Where the screen hangs (for the list).")


class LinkOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


class LinkCreated(LinkOut):
    url: str = Field(description="Open it on the TV; shown once (only its hash is kept).")


@router.get("/wallboard", include_in_schema=False)
async def wallboard_page(request: Request, user: ManagerUser) -> Response:
    return render(request, "wallboard.html", token="", supervisor=True)


@router.get("/wallboard/tv/{token}", include_in_schema=False)
async def wallboard_tv(
    request: Request, token: Annotated[str, Path(max_length=100)], repos: RepoDep
) -> Response:
    """The read-only wallboard, signed out: the link's token is the only key."""
    if await repos.queues.wallboard_link_id(wallboard_token_hash(token)) is None:
        return render(
            request,
            "error.html",
            status_code=404,
            status=404,
            message="This wallboard link was revoked or never existed. Ask for a new one.",
        )
    response = render(request, "wallboard.html", token=token, supervisor=False, user=None)
    response.headers["referrer-policy"] = "no-referrer"  # the token is in the URL
    return response


@router.get("/api/v1/wallboard", tags=["queues"])
async def wallboard_now(user: ManagerUser, hub: HubDep) -> dict[str, object]:
    """What the wallboard shows right now (the same snapshot its WebSocket sends)."""
    return await hub.wallboard_snapshot()


@router.post("/api/v1/wallboard/links", status_code=201, tags=["queues"])
async def create_link(body: LinkIn, user: ManagerUser, repos: RepoDep, hub: HubDep) -> LinkCreated:
    """A read-only wallboard link for a TV (no sign-in); revoke it with DELETE."""
    token, digest = new_wallboard_token()
    link_id = await repos.queues.add_wallboard_link(digest, body.name.strip())
    await repos.commit()
    link = next(x for x in await repos.queues.wallboard_links() if x.id == link_id)
    return LinkCreated(
        id=link.id,
        name=link.name,
        created_at=link.created_at,
        revoked_at=None,
        url=wallboard_url(hub.settings.public_url, token),
    )


@router.get("/api/v1/wallboard/links", tags=["queues"])
async def list_links(user: ManagerUser, repos: RepoDep) -> list[LinkOut]:
    return [
        LinkOut(id=x.id, name=x.name, created_at=x.created_at, revoked_at=x.revoked_at)
        for x in await repos.queues.wallboard_links()
    ]


@router.delete("/api/v1/wallboard/links/{link_id}", status_code=204, tags=["queues"])
async def revoke_link(link_id: Id, user: ManagerUser, repos: RepoDep, hub: HubDep) -> Response:
    """Revoke a wallboard link: screens showing it go dark at once."""
    if not await repos.queues.revoke_wallboard_link(link_id):
        raise NotFound("no such wallboard link, or it is revoked already")
    await repos.commit()
    await hub.bus.publish(WALLBOARD_TOPIC, {"type": "revoked", "link": link_id})
    return Response(status_code=204)
