"""Sign-in, sessions, CSRF, throttling and tokens, through the real app."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import ADMIN_PASSWORD, add_user, api_token, csrf_of, sign_in

from callbridge.domain.users import Role
from callbridge.hub import Hub


async def test_login_sets_session_and_shows_shell(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = await client.get("/settings", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert 'href="/calls"' in page.text and 'href="/contacts"' in page.text
    me = await client.get("/api/v1/me")
    assert me.json()["name"] == "admin" and me.json()["role"] == "admin"


async def test_wrong_password_shows_error_not_crash(client: httpx.AsyncClient) -> None:
    token = await csrf_of(client)
    answer = await client.post("/login", data={"username": "admin", "password": "nope", "csrf_token": token})
    assert answer.status_code == 401
    assert "wrong user name or password" in answer.text
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_unknown_user_gets_same_message(client: httpx.AsyncClient) -> None:
    token = await csrf_of(client)
    answer = await client.post(
        "/login", data={"username": "ghost", "password": "x" * 12, "csrf_token": token}
    )
    assert answer.status_code == 401
    assert "wrong user name or password" in answer.text


async def test_login_without_csrf_is_refused(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    answer = await client.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD}, headers={"accept": "text/html"}
    )
    assert answer.status_code == 403
    assert "reload the page" in answer.text
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_cookie_change_without_csrf_is_refused(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    answer = await client.post("/api/v1/tokens", json={"name": "x"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


async def test_repeated_failures_lock_out_then_refuse(client: httpx.AsyncClient) -> None:
    token = await csrf_of(client)
    codes = []
    for _ in range(6):
        answer = await client.post(
            "/login", data={"username": "admin", "password": "wrong-pass", "csrf_token": token}
        )
        codes.append(answer.status_code)
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    # Even the right password is refused while locked out.
    answer = await client.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    )
    assert answer.status_code == 429
    assert "too many failed sign-ins" in answer.text


async def test_logout_ends_session(client: httpx.AsyncClient) -> None:
    token = await sign_in(client)
    answer = await client.post("/logout", data={"csrf_token": token})
    assert answer.status_code == 303
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_expired_or_forged_session_redirects_to_login(client: httpx.AsyncClient) -> None:
    client.cookies.set("callbridge_session", "forged.value.here")
    page = await client.get("/settings", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login")
    api = await client.get("/api/v1/me")
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "authentication_failed"


async def test_password_change_signs_out_other_sessions(hub: Hub, app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as one,
        httpx.AsyncClient(transport=transport, base_url="http://t") as two,
    ):
        token = await sign_in(one)
        await sign_in(two)
        answer = await one.post(
            "/account/password",
            data={
                "current": ADMIN_PASSWORD,
                "new": "brand-new-pass",
                "repeat": "brand-new-pass",
                "csrf_token": token,
            },
        )
        assert answer.status_code == 303
        assert (await one.get("/api/v1/me")).status_code == 200
        assert (await two.get("/api/v1/me")).status_code == 401


async def test_bearer_token_lifecycle(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "alice", Role.AGENT)
    secret = await api_token(hub, "alice")
    auth = {"authorization": f"Bearer {secret}"}
    me = await client.get("/api/v1/me", headers=auth)
    assert me.status_code == 200 and me.json()["name"] == "alice"
    # Bearer requests need no CSRF token: they carry no cookie.
    created = await client.post("/api/v1/tokens", json={"name": "second"}, headers=auth)
    assert created.status_code == 201
    tokens = (await client.get("/api/v1/tokens", headers=auth)).json()
    assert tokens["next"] is None and len(tokens["items"]) == 2
    first_id = next(t["id"] for t in tokens["items"] if t["name"] == "test")
    assert (await client.delete(f"/api/v1/tokens/{first_id}", headers=auth)).status_code == 204
    refused = await client.get("/api/v1/me", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "the API token is not valid"


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer cb_not-a-real-token", "Basic YWRtaW46YWRtaW4=", "Bearer abc"],
)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, header: str) -> None:
    answer = await client.get("/api/v1/me", headers={"authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"]["message"]


async def test_disabled_user_loses_token_and_login(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "bob", Role.AGENT, "bob-password-1")
    secret = await api_token(hub, "bob")
    async with hub.db.unit() as repos:
        await hub.accounts(repos).set_active("bob", False)
    assert (await client.get("/api/v1/me", headers={"authorization": f"Bearer {secret}"})).status_code == 401
    token = await csrf_of(client)
    answer = await client.post(
        "/login", data={"username": "bob", "password": "bob-password-1", "csrf_token": token}
    )
    assert answer.status_code == 401


async def test_open_redirect_is_refused(client: httpx.AsyncClient) -> None:
    token = await csrf_of(client)
    answer = await client.post(
        "/login",
        data={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/x",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"


async def test_old_failures_are_pruned(hub: Hub, client: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    async with hub.db.unit() as repos:
        await repos.failures.record(["ip:10.9.9.9"], datetime.now(UTC) - timedelta(days=2))
    token = await csrf_of(client)
    await client.post("/login", data={"username": "admin", "password": "wrong-pass", "csrf_token": token})
    async with hub.db.unit() as repos:
        assert await repos.failures.recent("ip:10.9.9.9", datetime.now(UTC) - timedelta(days=3)) == []
        assert len(await repos.failures.recent("ip:127.0.0.1", datetime.now(UTC) - timedelta(minutes=1))) == 1


async def test_signed_in_home_is_the_desk(admin_client: httpx.AsyncClient) -> None:
    home = await admin_client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/desk"


async def test_signed_out_cookie_is_refused_when_replayed(client: httpx.AsyncClient) -> None:
    token = await sign_in(client)
    kept = client.cookies.get("callbridge_session")
    assert kept and (await client.get("/api/v1/me")).status_code == 200
    assert (await client.post("/logout", data={"csrf_token": token})).status_code == 303
    client.cookies.set("callbridge_session", kept)  # someone kept a copy of the cookie
    answer = await client.get("/api/v1/me")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "authentication_failed"
    page = await client.get("/settings", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


async def test_sign_out_ends_only_that_browser(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as one,
        httpx.AsyncClient(transport=transport, base_url="http://t") as two,
    ):
        token = await sign_in(one)
        await sign_in(two)
        assert (await one.post("/logout", data={"csrf_token": token})).status_code == 303
        assert (await one.get("/api/v1/me")).status_code == 401
        assert (await two.get("/api/v1/me")).status_code == 200


async def test_csrf_token_from_before_sign_in_is_replaced(client: httpx.AsyncClient) -> None:
    before = await csrf_of(client)
    answer = await client.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": before}
    )
    assert answer.status_code == 303
    refused = await client.post("/api/v1/tokens", json={"name": "x"}, headers={"x-csrf-token": before})
    assert refused.status_code == 403
    after = await csrf_of(client, "/settings")
    assert after != before
    created = await client.post("/api/v1/tokens", json={"name": "x"}, headers={"x-csrf-token": after})
    assert created.status_code == 201


async def test_last_admin_cannot_be_demoted_or_disabled(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    for change in ({"role": "agent"}, {"role": "manager"}, {"active": False}):
        answer = await admin_client.patch("/api/v1/users/admin", json=change)
        assert answer.status_code == 409, change
        assert answer.json()["error"]["code"] == "conflict"
        assert "last active admin" in answer.json()["error"]["message"]
    me = (await admin_client.get("/api/v1/me")).json()
    assert me["role"] == "admin" and me["active"] is True
    # With a second admin, the first may step down; then the second is the last one.
    await add_user(hub, "carol", Role.ADMIN)
    assert (await admin_client.patch("/api/v1/users/carol", json={"active": False})).status_code == 200
    assert (await admin_client.patch("/api/v1/users/carol", json={"active": True})).status_code == 200
    demoted = await admin_client.patch("/api/v1/users/admin", json={"role": "manager"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "manager"
    async with hub.db.unit() as repos:
        accounts = hub.accounts(repos)
        from callbridge.domain.errors import Conflict

        with pytest.raises(Conflict):
            await accounts.set_active("carol", False)
        with pytest.raises(Conflict):
            await accounts.set_role("carol", Role.AGENT)


def _client_from(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _try(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    token = await csrf_of(client)
    return await client.post("/login", data={"username": name, "password": password, "csrf_token": token})


async def test_guesses_from_one_address_do_not_lock_out_others_behind_it(hub: Hub, app: object) -> None:
    await add_user(hub, "alice", Role.AGENT, "alice-password-1")
    # An office behind one NAT address: someone there keeps typing wrong passwords.
    async with _client_from(app, "198.51.100.7") as guesser, _client_from(app, "198.51.100.7") as alice:
        codes = [(await _try(guesser, "admin", f"wrong-{i}-pass")).status_code for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        # Alice, at the next desk, signs in as usual.
        assert (await _try(alice, "alice", "alice-password-1")).status_code == 303


async def test_guesses_from_many_addresses_do_not_lock_out_a_known_device(hub: Hub, app: object) -> None:
    await add_user(hub, "alice", Role.AGENT, "alice-password-1")
    async with _client_from(app, "192.0.2.10") as browser:
        assert (await _try(browser, "alice", "alice-password-1")).status_code == 303
        assert browser.cookies.get("callbridge_device")
        assert (
            await browser.post("/logout", data={"csrf_token": await csrf_of(browser, "/settings")})
        ).status_code == 303
        # A guessing campaign against alice, one address after another.
        for i in range(30):
            async with _client_from(app, f"203.0.113.{i + 1}") as bot:
                assert (await _try(bot, "alice", "guess-password")).status_code in (401, 429)
        # A new browser is now refused for a while (too many guesses at alice overall) ...
        async with _client_from(app, "192.0.2.99") as stranger:
            locked = await _try(stranger, "alice", "alice-password-1")
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        # ... but alice's own browser, which signed in as her before, gets in.
        assert (await _try(browser, "alice", "alice-password-1")).status_code == 303
        assert (await browser.get("/api/v1/me")).json()["name"] == "alice"


async def test_a_few_wrong_passwords_from_several_addresses_lock_nobody(hub: Hub, app: object) -> None:
    await add_user(hub, "alice", Role.AGENT, "alice-password-1")
    for i in range(5):
        async with _client_from(app, f"203.0.113.{i + 1}") as other:
            assert (await _try(other, "alice", "typo-password")).status_code == 401
    async with _client_from(app, "192.0.2.50") as fresh:
        assert (await _try(fresh, "alice", "alice-password-1")).status_code == 303


async def test_lock_grows_with_each_failure_and_says_when_to_retry(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    from datetime import UTC, datetime, timedelta

    # Five failures 45 s ago: the first lock (30 s) is over, so one more try is allowed.
    async with hub.db.unit() as repos:
        for _ in range(5):
            await repos.failures.record(["ua:admin|127.0.0.1"], datetime.now(UTC) - timedelta(seconds=45))
    assert (await _try(client, "admin", "still-wrong-1")).status_code == 401
    # That sixth failure locks for twice as long, and every refusal says for how long.
    locked = await _try(client, "admin", ADMIN_PASSWORD)
    assert locked.status_code == 429
    assert 55 <= int(locked.headers["retry-after"]) <= 60
    assert "too many failed sign-ins" in locked.text


async def test_password_change_is_throttled(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    codes = []
    for i in range(6):
        answer = await admin_client.post(
            "/api/v1/me/password", json={"current": f"guess-{i}-password", "new": "brand-new-pass"}
        )
        codes.append(answer.status_code)
    assert codes == [401] * 5 + [429]
    refused = await admin_client.post(
        "/api/v1/me/password", json={"current": ADMIN_PASSWORD, "new": "brand-new-pass"}
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # The form on the account page shares the same counter.
    page = await admin_client.post(
        "/account/password",
        data={"current": ADMIN_PASSWORD, "new": "brand-new-pass", "repeat": "brand-new-pass"},
    )
    assert page.status_code == 429 and int(page.headers["retry-after"]) >= 1
    async with hub.db.unit() as repos:
        assert await hub.accounts(repos).authenticate("admin", ADMIN_PASSWORD, "192.0.2.1")


async def test_throttling_is_shared_by_hub_workers(hub: Hub, app: object) -> None:
    from tests.conftest import FAST_HASHER

    from callbridge.web.app import create_app

    other_hub = Hub.build(hub.settings, hasher=FAST_HASHER)  # a second worker, same database
    other = create_app(hub=other_hub)
    async with (
        other.router.lifespan_context(other),
        _client_from(app, "198.51.100.1") as one,
        _client_from(other, "198.51.100.1") as two,
    ):
        codes = [(await _try(one, "admin", "wrong-password")).status_code for _ in range(3)]
        codes += [(await _try(two, "admin", "wrong-password")).status_code for _ in range(2)]
        assert codes == [401] * 5
        assert (await _try(one, "admin", ADMIN_PASSWORD)).status_code == 429
        assert (await _try(two, "admin", ADMIN_PASSWORD)).status_code == 429


async def test_token_use_is_recorded_off_the_request_and_once_a_minute(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    await add_user(hub, "alice", Role.AGENT)
    secret = await api_token(hub, "alice")
    auth = {"authorization": f"Bearer {secret}"}

    async def last_used() -> object:
        async with hub.db.unit() as repos:
            return (await repos.tokens.for_user((await repos.users.get_by_name("alice")).user.id))[
                0
            ].last_used_at  # type: ignore[union-attr]

    assert (await client.get("/api/v1/me", headers=auth)).status_code == 200
    assert await last_used() is None  # the request itself wrote nothing
    await hub.flush_token_uses()
    first = await last_used()
    assert first is not None
    for _ in range(5):
        assert (await client.get("/api/v1/me", headers=auth)).status_code == 200
    await hub.flush_token_uses()
    assert await last_used() == first  # within the minute: not written again


async def test_a_token_is_taken_on_trust_for_two_seconds_at_most(hub: Hub, client: httpx.AsyncClient) -> None:
    """A valid token is looked up once and then trusted for TOKEN_CACHE_SECONDS: a change made
    through this hub (role, deactivation) counts at once; one made by another process (the CLI,
    a second worker: here, straight in the database) within those seconds."""
    import asyncio
    from datetime import UTC, datetime

    from sqlalchemy import update

    from callbridge.services.accounts import TOKEN_CACHE_SECONDS
    from callbridge.store.tables import api_tokens

    await add_user(hub, "alice", Role.AGENT)
    secret = await api_token(hub, "alice")
    auth = {"authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/me", headers=auth)).json()["role"] == "agent"
    # Through this hub: at once.
    async with hub.db.unit() as repos:
        await hub.accounts(repos).set_role("alice", Role.MANAGER)
    assert (await client.get("/api/v1/me", headers=auth)).json()["role"] == "manager"
    async with hub.db.unit() as repos:
        await hub.accounts(repos).set_active("alice", False)
    assert (await client.get("/api/v1/me", headers=auth)).status_code == 401
    async with hub.db.unit() as repos:
        await hub.accounts(repos).set_active("alice", True)
    assert (await client.get("/api/v1/me", headers=auth)).status_code == 200
    # Behind its back (another process revokes the token): within the trust period.
    async with hub.db.unit() as repos:
        await repos.session.execute(update(api_tokens).values(revoked_at=datetime.now(UTC)))
    await asyncio.sleep(TOKEN_CACHE_SECONDS + 0.1)
    refused = await client.get("/api/v1/me", headers=auth)
    assert refused.status_code == 401
