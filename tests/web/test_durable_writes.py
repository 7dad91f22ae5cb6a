"""A write is acknowledged only once it is committed; readiness says so while the database cannot write.

The database itself refuses the commit here: a trigger adds, with every new contact, a row whose
foreign key is deferred to the commit and points nowhere, so the INSERT succeeds and the COMMIT
fails (on SQLite and PostgreSQL alike), just as a full disk fails a commit after the statements
went through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import event, text
from tests.agent.conftest import Served, serve
from tests.conftest import sign_in

from callbridge.hub import Hub

GUARD_TABLES = (
    "CREATE TABLE commit_guard_target (id INTEGER PRIMARY KEY)",
    "CREATE TABLE commit_guard (ref INTEGER REFERENCES commit_guard_target (id)"
    " DEFERRABLE INITIALLY DEFERRED)",
)
SQLITE_GUARD = (
    *GUARD_TABLES,
    "CREATE TRIGGER commit_guard_contacts AFTER INSERT ON contacts"
    " BEGIN INSERT INTO commit_guard VALUES (-1); END",
)
PG_GUARD = (
    *GUARD_TABLES,
    "CREATE FUNCTION commit_guard_fn() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO commit_guard VALUES (-1); RETURN NEW; END $$",
    "CREATE TRIGGER commit_guard_contacts AFTER INSERT ON contacts"
    " FOR EACH ROW EXECUTE FUNCTION commit_guard_fn()",
)


async def refuse_commits_of_new_contacts(hub: Hub) -> None:
    async with hub.db.engine.begin() as conn:
        for statement in SQLITE_GUARD if hub.db.is_sqlite else PG_GUARD:
            await conn.execute(text(statement))


async def allow_commits_again(hub: Hub) -> None:
    async with hub.db.engine.begin() as conn:
        await conn.execute(
            text("DROP TRIGGER commit_guard_contacts" + ("" if hub.db.is_sqlite else " ON contacts"))
        )


async def contact_names(hub: Hub) -> set[str]:
    async with hub.db.engine.connect() as conn:
        return {row[0] for row in await conn.execute(text("SELECT name FROM contacts"))}


@pytest.fixture
async def served(hub: Hub) -> AsyncIterator[Served]:
    async with serve(hub) as found:
        yield found


async def test_api_write_whose_commit_fails_is_never_acknowledged(served: Served) -> None:
    hub = served.hub
    await refuse_commits_of_new_contacts(hub)
    for n in range(3):
        answer = await served.api.post("/api/v1/contacts", json={"name": f"Lost {n}", "phones": []})
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "database_unavailable"
    assert not any(name.startswith("Lost") for name in await contact_names(hub))
    await allow_commits_again(hub)
    kept = await served.api.post("/api/v1/contacts", json={"name": "Kept", "phones": []})
    assert kept.status_code == 201
    assert "Kept" in await contact_names(hub)


async def test_page_form_whose_commit_fails_is_never_acknowledged(served: Served) -> None:
    hub = served.hub
    await refuse_commits_of_new_contacts(hub)
    html = {"accept": "text/html"}
    async with httpx.AsyncClient(base_url=served.url) as browser:
        token = await sign_in(browser)
        form = {"csrf_token": token, "kind": "person", "name": "Lost by form", "phones": "+1 212 555 0100"}
        answer = await browser.post("/contacts/new", data=form, headers=html)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert "text/html" in answer.headers["content-type"]
        assert "Lost by form" not in await contact_names(hub)
        await allow_commits_again(hub)
        saved = await browser.post("/contacts/new", data={**form, "name": "Saved by form"}, headers=html)
        assert saved.status_code == 303
    assert "Saved by form" in await contact_names(hub)


async def test_readiness_says_not_ready_while_the_database_cannot_write(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/readyz")).status_code == 200
    # The database turns read-only (a full or read-only file system, a read-only replica): it
    # still answers SELECT 1.
    if hub.db.is_sqlite:

        def read_only(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        event.listen(hub.db.engine.sync_engine, "connect", read_only)
    else:
        async with hub.db.engine.connect() as conn:
            name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
            await conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
            await conn.commit()
    await hub.db.engine.dispose()
    assert await hub.db.ping()  # reads work
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "database_unavailable"
    if hub.db.is_sqlite:
        event.remove(hub.db.engine.sync_engine, "connect", read_only)
    else:
        async with hub.db.engine.connect() as conn:
            await conn.execute(text("SET default_transaction_read_only = off"))
            await conn.commit()  # that transaction began read-only; the next one does not
            await conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off'))
            await conn.commit()
    await hub.db.engine.dispose()
    assert (await client.get("/readyz")).status_code == 200
