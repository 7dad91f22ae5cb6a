"""Listen / whisper / barge buttons (ChanSpy): on the live calls page and the call's page, for
managers and admins only, and only on the calls of a PBX that allows joining them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from tests.conftest import add_user, api_token

from callbridge.domain.events import CallStarted, Direction
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, YeastarSettings, add_pbx


async def test_join_buttons_only_for_managers_and_where_the_pbx_allows_it(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    """Listen / whisper / barge are offered on the live calls page and the call's page for a
    live call of an Asterisk the hub reaches itself, not of one served by an agent nor of a
    Yeastar (the spy API would refuse them), and never to an agent."""
    async with hub.db.unit() as repos:
        await add_pbx(
            repos.pbxes,
            "office",
            PbxKind.ASTERISK,
            AsteriskSettings(host="127.0.0.1", username="hub", secret="ami-secret"),
        )
        await add_pbx(repos.pbxes, "branch", PbxKind.ASTERISK, AsteriskSettings(agent=True))
        await add_pbx(
            repos.pbxes,
            "cloud",
            PbxKind.YEASTAR,
            YeastarSettings(
                base_url="https://pbx.example.com",
                client_id="id",
                client_secret="secret",
                webhook_secret="hook",
            ),
        )
        await repos.commit()
    at = datetime.now(UTC) - timedelta(seconds=30)
    await hub.ingest_batch(
        [
            CallStarted(
                pbx=pbx,
                call_id=f"{pbx}-1",
                at=at,
                direction=Direction.INBOUND,
                from_number="+14155550111",
                to_number="+14155559999",
            )
            for pbx in ("office", "branch", "cloud")
        ]
    )
    await add_user(hub, "boss", Role.MANAGER)
    boss = {"authorization": f"Bearer {await api_token(hub, 'boss')}", "accept": "text/html"}
    live = {c["pbx"]: c["id"] for c in (await client.get("/api/v1/calls/live", headers=boss)).json()}
    assert set(live) == {"office", "branch", "cloud"}
    page = (await client.get("/desk/calls", headers=boss)).text
    assert f'data-spy-call="{live["office"]}"' in page and "/static/supervise.js" in page
    assert f'data-spy-call="{live["branch"]}"' not in page
    assert f'data-spy-call="{live["cloud"]}"' not in page
    assert "data-spy-pbxes='[\"office\"]'" in page
    for pbx, offered in (("office", True), ("branch", False), ("cloud", False)):
        call_page = (await client.get(f"/calls/{live[pbx]}", headers=boss)).text
        assert ('data-spy="listen"' in call_page) is offered, pbx
    # An agent who owns nothing: no live calls page, no buttons on a call they may see.
    await add_user(hub, "plain", Role.AGENT)
    plain = {"authorization": f"Bearer {await api_token(hub, 'plain')}", "accept": "text/html"}
    refused = await client.get("/desk/calls", headers=plain)
    assert refused.status_code == 403 and "data-spy" not in refused.text
