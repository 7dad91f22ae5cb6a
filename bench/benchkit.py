"""What the live benches (screenpop, followup, wallboard) share: a hub seeded with a simulated
Asterisk and users, signing in for a session cookie, free ports and percentiles.

The benches run as scripts (``python bench/x.py``), so this module is imported by its name."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from callbridge.config import Settings
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, add_pbx

PASSWORD = "bench-password-1"
SECRET = "bench-ami-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def seed(
    data_dir: Path,
    sim_port: int,
    *,
    users: int,
    role: Role = Role.AGENT,
    prefix: str = "u",
    extensions: bool = True,
    redis_url: str = "",
) -> None:
    """A hub database with the simulator's PBX ("bench") and ``users`` users named
    ``<prefix>0…``, each mapped to extension 2000+i when ``extensions``."""
    hub = Hub.build(
        Settings(data_dir=data_dir, redis_url=redis_url),
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            await add_pbx(
                repos.pbxes,
                "bench",
                PbxKind.ASTERISK,
                AsteriskSettings(
                    host="127.0.0.1", port=sim_port, username="hub", secret=SECRET, trunks=("trunk*",)
                ),
            )
            accounts = hub.accounts(repos)
            for i in range(users):
                user, _ = await accounts.create_user(f"{prefix}{i}", role, PASSWORD)
                if extensions:
                    await repos.extensions.map("bench", str(2000 + i), user.id)
    finally:
        await hub.close()


async def sign_in(url: str, name: str) -> str:
    """A session cookie header for ``name`` (the sign-in form, with its CSRF token)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        page = await c.get("/login", headers={"accept": "text/html"})
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match
        answer = await c.post(
            "/login", data={"username": name, "password": PASSWORD, "csrf_token": match.group(1), "next": "/"}
        )
        assert answer.status_code == 303, answer.text
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


def start_hub(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``callbridge serve`` in its own process, its output in ``<data_dir>/hub.log``."""
    with open(data_dir / "hub.log", "wb") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "callbridge", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(url: str, sim: Any) -> None:
    """Until the hub answers /readyz and has signed in to the simulator (at most 30 s)."""
    async with httpx.AsyncClient() as probe:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get(url + "/readyz")).status_code == 200 and sim.logins:
                    return
            await asyncio.sleep(0.1)
