"""Shared fixtures: a hub on SQLite and, when make test started one, on real PostgreSQL.

``CALLBRIDGE_TEST_POSTGRES_URL`` (set by ``make test``) points at a throwaway server; each test
gets its own database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url

from callbridge.config import Settings
from callbridge.domain.users import Role, User
from callbridge.hub import Hub
from callbridge.web.app import create_app

PG_URL = os.environ.get("CALLBRIDGE_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS_URL", "")
CAPTURES = Path(__file__).resolve().parent / "data" / "captures"

# Cheap argon2 parameters: the real ones cost ~50 ms per hash, which adds up over a suite.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ADMIN_PASSWORD = "admin-password-1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: they are the slowest, and a failure elsewhere shows sooner.

    ``make test`` spreads the tests over the machine's cores (pytest-xdist, ``--dist
    loadgroup``). Tests that use the throwaway Redis share its publish/subscribe channels, which
    are global to the server: they run one after another, on one worker."""
    items.sort(key=lambda item: "/tests/browser/" in str(item.path))
    for item in items:
        if item.get_closest_marker("redis") is not None:
            item.add_marker(pytest.mark.xdist_group("redis"))


def _backends() -> list[str]:
    return ["sqlite", "postgres"] if PG_URL else ["sqlite"]


_template_ready = False
# One template per pytest-xdist worker: each worker makes (and drops) its own.
_TEMPLATE = "cb_template_" + os.environ.get("PYTEST_XDIST_WORKER", "main")


async def _pg_database(name: str) -> str:
    """Create database ``name`` from a migrated template; returns its URL."""
    import asyncpg

    from callbridge.store.migrate import upgrade

    global _template_ready
    admin_dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not _template_ready:
            await conn.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{_TEMPLATE}"')
            await upgrade(_with_db(PG_URL, _TEMPLATE))
            _template_ready = True
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
    finally:
        await conn.close()
    return _with_db(PG_URL, name)


def _with_db(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    name = "t_" + uuid.uuid4().hex[:16]
    yield await _pg_database(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_region="US",
        login_delay_seconds=0,
        start_pbx_links=False,
    )


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    the_hub = Hub.build(settings, hasher=FAST_HASHER)
    await the_hub.prepare()
    async with the_hub.db.unit() as repos:
        await the_hub.accounts(repos).set_password("admin", ADMIN_PASSWORD)
    yield the_hub
    await the_hub.close()


@pytest.fixture
async def app(hub: Hub) -> AsyncIterator[object]:
    application = create_app(hub=hub)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def csrf_of(client: httpx.AsyncClient, path: str = "/login") -> str:
    page = await client.get(path, headers={"accept": "text/html"})
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, name: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    """Sign in through the real form; returns the session's CSRF token for later changes."""
    token = await csrf_of(client)
    answer = await client.post(
        "/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"}
    )
    assert answer.status_code == 303, answer.text
    # Sign-in gives the session a fresh CSRF token: the one from the login page is void now.
    return await csrf_of(client, "/settings")


@pytest.fixture
async def admin_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    token = await sign_in(client)
    client.headers["x-csrf-token"] = token
    return client


async def add_user(hub: Hub, name: str, role: Role, password: str = "user-password-1") -> User:
    async with hub.db.unit() as repos:
        user, _ = await hub.accounts(repos).create_user(name, role, password)
    return user


async def api_token(hub: Hub, name: str) -> str:
    async with hub.db.unit() as repos:
        accounts = hub.accounts(repos)
        _, secret = await accounts.create_token(await accounts.get_user(name), "test")
    return secret
