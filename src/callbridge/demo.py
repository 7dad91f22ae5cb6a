"""``callbridge demo``: the hub with embedded defaults, seeded people, and a simulated PBX that
keeps calling, so a newcomer sees pops, the call log and presence move within a minute.

The PBX is the AMI simulator (``pbx/asterisk/simulator.py``) listening on a loopback port and
registered as the Asterisk PBX ``demo``; the hub's real Asterisk link connects to it, so every
call goes the same way a real one does (AMI events → tracker → call log → live desk). Click-to-
call works too: the simulated phones answer, and the simulator hangs the call up after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from callbridge.config import Settings
from callbridge.domain.directory import ContactKind, Phone, PhoneKind
from callbridge.domain.errors import NotFound
from callbridge.domain.events import Presence, PresenceChanged
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.directory import ContactInput
from callbridge.services.pbxes import AsteriskSettings, add_pbx

log = logging.getLogger(__name__)

PBX = "demo"


@dataclass(frozen=True, slots=True)
class DemoUser:
    name: str
    display_name: str
    role: Role
    extension: str


USERS = (
    DemoUser("alice", "Alice Martin", Role.AGENT, "1001"),
    DemoUser("bob", "Bob Chen", Role.AGENT, "1002"),
    DemoUser("carol", "Carol Diaz", Role.MANAGER, "1003"),
)

# (company, [(person, number, kind, tags, owner)]); 555-01xx numbers are reserved for fiction.
DIRECTORY: tuple[tuple[str, str, tuple[tuple[str, str, str, tuple[str, ...], str], ...]], ...] = (
    (
        "Northwind Traders",
        "+12125550140",
        (
            ("Nancy Davolio", "+12125550141", "work", ("VIP", "wholesale"), "alice"),
            ("Andrew Fuller", "+13125550142", "mobile", ("wholesale",), "alice"),
        ),
    ),
    (
        "Contoso Pharmacy",
        "+14155550150",
        (
            ("Ada Lovelace", "+14155550151", "work", ("VIP",), "bob"),
            ("Grace Hopper", "+16175550152", "mobile", ("billing",), "bob"),
        ),
    ),
    (
        "Fabrikam Logistics",
        "+17735550160",
        (
            ("Ravi Patel", "+17735550161", "work", ("support",), "carol"),
            ("Mei Tanaka", "+12065550162", "mobile", ("support", "renewal"), "alice"),
        ),
    ),
    ("Tailspin Toys", "+13055550170", (("Lars Berg", "+13055550171", "work", ("prospect",), "bob"),)),
)
UNKNOWN_CALLERS = ("+12025550187", "+15125550188", "+17025550189", "+14045550190", "+16025550191")


async def seed(hub: Hub) -> dict[str, str]:
    """Create (or refresh) the demo users, their extensions and the directory; returns each
    user's new password (the demo resets them on every start, so they can be printed)."""
    passwords: dict[str, str] = {}
    async with hub.db.unit() as repos:
        accounts = hub.accounts(repos)
        ids: dict[str, int] = {}
        for u in USERS:
            try:
                user = await accounts.get_user(u.name)
                generated = await accounts.set_password(u.name, None)
            except NotFound:
                user, generated = await accounts.create_user(u.name, u.role, None, u.display_name)
            assert generated is not None
            passwords[u.name] = generated
            ids[u.name] = user.id
            await repos.extensions.map(PBX, u.extension, user.id)
        if await repos.directory.count() == 0:
            for company, switchboard, people in DIRECTORY:
                company_id = await repos.directory.create(
                    ContactInput(
                        kind=ContactKind.COMPANY,
                        name=company,
                        phones=(Phone(switchboard, switchboard, PhoneKind.WORK),),
                    )
                )
                for name, number, kind, tags, owner in people:
                    await repos.directory.create(
                        ContactInput(
                            kind=ContactKind.PERSON,
                            name=name,
                            company_id=company_id,
                            phones=(Phone(number, number, PhoneKind(kind)),),
                            email=f"{name.split()[0].lower()}@{company.split()[0].lower()}.example",
                            tags=tags,
                            owner_id=ids[owner],
                        )
                    )
    return passwords


async def register_simulator(hub: Hub, sim: AmiSimulator) -> None:
    """Point the PBX ``demo`` at the simulator's port (it changes on every start)."""
    config, secret_values = AsteriskSettings(
        host=sim.host, port=sim.port, username=sim.username, secret=sim.secret, trunks=("trunk*",)
    ).validate()
    async with hub.db.unit() as repos:
        if await repos.pbxes.find(PBX) is None:
            await add_pbx(
                repos.pbxes,
                PBX,
                PbxKind.ASTERISK,
                AsteriskSettings(
                    host=sim.host, port=sim.port, username=sim.username, secret=sim.secret, trunks=("trunk*",)
                ),
            )
        else:
            await repos.pbxes.update_config(PBX, config)
            await repos.pbxes.update_secrets(PBX, secret_values)


def _known_numbers() -> list[str]:
    numbers = []
    for _, switchboard, people in DIRECTORY:
        numbers.append(switchboard)
        numbers += [p[1] for p in people]
    return numbers


class Traffic:
    """Places realistic calls on the simulator every few seconds."""

    def __init__(self, hub: Hub, sim: AmiSimulator, *, every: tuple[float, float] = (3.0, 6.0)) -> None:
        self.hub = hub
        self.sim = sim
        self.every = every
        self.busy: set[str] = set()
        self.rng = random.Random()  # demo traffic, not security
        self._tasks: set[asyncio.Task[None]] = set()
        self._originated: dict[str, float] = {}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def presence(self, extension: str, presence: Presence) -> None:
        await self.hub.handle_event(
            PresenceChanged(pbx=PBX, at=datetime.now(UTC), extension=extension, presence=presence)
        )

    async def _call(self, extension: str) -> None:
        r = self.rng
        known = _known_numbers()
        caller = r.choice(known) if r.random() < 0.7 else r.choice(UNKNOWN_CALLERS)
        pick = r.random()
        self.busy.add(extension)
        try:
            if pick < 0.45:
                await self.sim.place_call(
                    "inbound_answered",
                    caller=caller,
                    caller_name="",
                    extension=extension,
                    ring=r.uniform(3, 6),
                    talk=r.uniform(5, 18),
                )
            elif pick < 0.65:
                await self.sim.place_call(
                    "inbound_missed", caller=caller, caller_name="", extension=extension, ring=r.uniform(5, 9)
                )
            elif pick < 0.75:
                await self.sim.place_call("inbound_busy", caller=caller, caller_name="", extension=extension)
            else:
                await self.sim.place_call(
                    "outbound_answered",
                    extension=extension,
                    number=r.choice(known),
                    ring=r.uniform(2, 4),
                    talk=r.uniform(5, 15),
                )
        except Exception:
            log.exception("demo call to %s failed", extension)
        finally:
            self.busy.discard(extension)

    async def _hang_up_originated(self, after: float = 25.0) -> None:
        # Click-to-call legs answer at once in the simulator; end them as a person would.
        now = time.monotonic()
        for linkedid, call in list(self.sim.calls.items()):
            if not linkedid.startswith("cb-"):
                continue
            first = self._originated.setdefault(linkedid, now)
            if now - first > after:
                self._originated.pop(linkedid, None)
                with contextlib.suppress(Exception):
                    await call.hangup("caller")

    async def run(self) -> None:
        for u in USERS:
            await self.presence(u.extension, Presence.AVAILABLE)
        next_away = time.monotonic() + 30
        away: dict[str, float] = {}
        while True:
            free = [u.extension for u in USERS if u.extension not in self.busy and u.extension not in away]
            if free:
                self._spawn(self._call(self.rng.choice(free)))
            now = time.monotonic()
            if now >= next_away and free:
                ext = self.rng.choice(free)
                away[ext] = now + 20
                await self.presence(ext, Presence.AWAY)
                next_away = now + self.rng.uniform(40, 70)
            for ext, until in list(away.items()):
                if now >= until:
                    del away[ext]
                    await self.presence(ext, Presence.AVAILABLE)
            await self._hang_up_originated()
            await asyncio.sleep(self.rng.uniform(*self.every))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run_demo(
    settings: Settings, host: str, port: int, *, announce: object = print, traffic: bool = True
) -> None:
    """Seed, start the simulator and the hub, and keep placing calls until interrupted."""
    import uvicorn

    from callbridge.web.app import create_app
    from callbridge.web.server import uvicorn_options

    hub = Hub.build(settings)
    admin_password = await hub.prepare()
    passwords = await seed(hub)
    sim = AmiSimulator(username="demo", secret=secrets.token_urlsafe(12), cel=True)
    await sim.start()
    await register_simulator(hub, sim)
    app = create_app(hub=hub)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            lifespan="on",
            **uvicorn_options(settings),
        )
    )
    say = announce if callable(announce) else print
    lines = [f"callbridge demo on http://{host}:{port} (simulated Asterisk on 127.0.0.1:{sim.port})"]
    if admin_password:
        lines.append(f"  admin  (admin)    password: {admin_password}   (shown once; kept in this data dir)")
    else:
        lines.append(
            "  admin  (admin)    password: as printed on the first start; "
            "forgot it? `callbridge user passwd admin` prints a new one"
        )
    for u in USERS:
        lines.append(
            f"  {u.name:<6} ({u.role.value}, extension {u.extension})  password: {passwords[u.name]}"
        )
    lines.append("Sign in as alice or bob to see calls pop; carol (manager) sees Desk → Live calls.")
    calls = Traffic(hub, sim)
    serving = asyncio.create_task(server.serve(), name="demo-hub")
    try:
        while not server.started:
            if serving.done():
                await serving
                return
            await asyncio.sleep(0.05)
        for line in lines:
            say(line)
        placing = asyncio.create_task(calls.run() if traffic else asyncio.Event().wait(), name="demo-traffic")
        try:
            await asyncio.wait({serving, placing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            placing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await placing
    finally:
        server.should_exit = True
        await calls.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
        await sim.stop()
