"""Firewall backends that carry out the guard's decisions (``callbridge.agent.guard``).

Interface for the agent
=======================

::

    firewall = NftablesBackend()             # needs root or CAP_NET_ADMIN
    await firewall.setup()                   # idempotent; keeps bans already in the sets
    await apply_decisions(firewall, decisions)
    bans = await firewall.list_bans()        # [BannedAddress(address, timeout, expires)]
    await firewall.teardown()                # deletes our table only (on uninstall)

    firewall = DryRunBackend()               # no nftables / no privileges: log what would happen

Errors: :class:`FirewallUnavailable` (``nft`` missing, not permitted) when the machine cannot run
the backend at all; :class:`FirewallError` for a command that failed or timed out.

nftables layout: one table of our own, ``inet callbridge``, with two sets with timeouts and one
base chain at priority -10 on the input hook that drops traffic from banned addresses::

    table inet callbridge {
        set banned_v4 { type ipv4_addr; flags timeout; }
        set banned_v6 { type ipv6_addr; flags timeout; }
        chain input {
            type filter hook input priority -10; policy accept;
            ip saddr @banned_v4 counter drop
            ip6 saddr @banned_v6 counter drop
        }
    }

A ban is a set element with a timeout, so the kernel lifts it on time even if the agent is down.
Nothing else on the host is touched: other tables keep working, and a ``drop`` in any base chain
is final, so our chain needs no cooperation from the host's own rules.

``nft`` runs as an asyncio subprocess with arguments (never a shell) and a timeout; every address
is validated with :mod:`ipaddress` and rendered from the parsed object before it reaches the
command. ``command_prefix`` runs it elsewhere, e.g. ``("ip", "netns", "exec", "cbtest")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from callbridge.agent.guard import (
    Ban,
    Decision,
    GuardSettings,
    Headers,
    IPAddress,
    SecurityGuard,
    Unban,
    normalize_address,
)

log = logging.getLogger(__name__)

DEFAULT_TABLE = "callbridge"
SET_V4 = "banned_v4"
SET_V6 = "banned_v6"
CHAIN = "input"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_MAX_TIMEOUT = timedelta(days=365)


class FirewallError(Exception):
    """A firewall command failed or timed out."""


class FirewallUnavailable(FirewallError):
    """The backend cannot run here: ``nft`` is missing or we lack CAP_NET_ADMIN."""


@dataclass(frozen=True, slots=True)
class BannedAddress:
    """One element of a ban set: ``timeout`` as set, ``expires`` what is left (None: never)."""

    address: IPAddress
    timeout: timedelta | None
    expires: timedelta | None


class FirewallBackend(Protocol):
    async def setup(self) -> None: ...

    async def teardown(self) -> None: ...

    async def ban(self, address: str | IPAddress, duration: timedelta) -> None: ...

    async def unban(self, address: str | IPAddress) -> None: ...

    async def list_bans(self) -> list[BannedAddress]: ...


async def apply_decisions(backend: FirewallBackend, decisions: Iterable[Decision]) -> None:
    """Carry out the guard's decisions in order (Ban → timed element, Unban → delete)."""
    for decision in decisions:
        if isinstance(decision, Ban):
            await backend.ban(decision.address, decision.duration)
        elif isinstance(decision, Unban):
            await backend.unban(decision.address)


def _seconds(duration: timedelta) -> int:
    if duration <= timedelta(0):
        raise ValueError("a ban needs a positive duration")
    return max(1, math.ceil(min(duration, _MAX_TIMEOUT).total_seconds()))


def _bannable(address: str | IPAddress) -> IPAddress:
    ip = normalize_address(address)
    # Last line of defence: the guard never decides this, and a typo must not lock us out.
    if ip.is_loopback or ip.is_unspecified:
        raise ValueError(f"refusing to ban {ip}: loopback and unspecified are never banned")
    return ip


def _set_for(address: IPAddress) -> str:
    return SET_V4 if address.version == 4 else SET_V6


class NftablesBackend:
    """Bans as elements of timed nftables sets in a table of our own (see the module doc)."""

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        *,
        nft: str = "nft",
        command_prefix: Sequence[str] = (),
        timeout: float = 5.0,
        priority: int = -10,
    ) -> None:
        if not _NAME_RE.match(table):
            raise ValueError(f"invalid nftables table name {table!r}")
        self.table = table
        self._nft = nft
        self._prefix = tuple(command_prefix)
        self._timeout = timeout
        self._priority = int(priority)

    # -- public

    async def setup(self) -> None:
        """Create the table, sets and chain; re-running it keeps the sets' elements."""
        t = f"inet {self.table}"
        script = "\n".join(
            [
                f"add table {t}",
                f"add set {t} {SET_V4} {{ type ipv4_addr; flags timeout; }}",
                f"add set {t} {SET_V6} {{ type ipv6_addr; flags timeout; }}",
                f"add chain {t} {CHAIN} {{ type filter hook input priority {self._priority};"
                " policy accept; }",
                f"flush chain {t} {CHAIN}",
                f"add rule {t} {CHAIN} ip saddr @{SET_V4} counter drop",
                f"add rule {t} {CHAIN} ip6 saddr @{SET_V6} counter drop",
                "",
            ]
        )
        await self._run(["-f", "-"], script)
        log.info("firewall: nftables table inet %s ready", self.table)

    async def teardown(self) -> None:
        """Delete our table (and every ban in it); nothing else. Safe when it is absent."""
        t = f"inet {self.table}"
        await self._run(["-f", "-"], f"add table {t}\ndelete table {t}\n")
        log.info("firewall: nftables table inet %s removed", self.table)

    async def ban(self, address: str | IPAddress, duration: timedelta) -> None:
        """Add (or refresh) a timed element; the kernel removes it when the timeout ends."""
        ip = _bannable(address)
        seconds = _seconds(duration)
        where = f"inet {self.table} {_set_for(ip)}"
        # add + delete + add in one transaction: works whether or not the element exists,
        # and a re-ban gets the new timeout instead of keeping the old one.
        script = (
            f"add element {where} {{ {ip} }}\n"
            f"delete element {where} {{ {ip} }}\n"
            f"add element {where} {{ {ip} timeout {seconds}s }}\n"
        )
        await self._run(["-f", "-"], script)
        log.info("firewall: banned %s for %ss", ip, seconds)

    async def unban(self, address: str | IPAddress) -> None:
        """Delete the element; succeeds when it has already expired."""
        ip = normalize_address(address)
        where = f"inet {self.table} {_set_for(ip)}"
        script = f"add element {where} {{ {ip} }}\ndelete element {where} {{ {ip} }}\n"
        await self._run(["-f", "-"], script)
        log.info("firewall: unbanned %s", ip)

    async def list_bans(self) -> list[BannedAddress]:
        out: list[BannedAddress] = []
        for name in (SET_V4, SET_V6):
            raw = await self._run(["-j", "list", "set", "inet", self.table, name])
            out.extend(parse_set_json(raw))
        return out

    # -- plumbing

    async def _run(self, args: list[str], stdin: str | None = None) -> str:
        argv = [*self._prefix, self._nft, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise FirewallUnavailable(
                f"{argv[0]!r} not found: install nftables or use the dry-run backend"
            ) from exc
        except PermissionError as exc:
            raise FirewallUnavailable(f"{argv[0]!r} cannot be executed: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self._timeout
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise FirewallError(f"nft {' '.join(args)} timed out after {self._timeout}s") from exc
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            first = message.splitlines()[0]
            if "Operation not permitted" in message or "Permission denied" in message:
                raise FirewallUnavailable(
                    f"nft is not permitted ({first}): run the agent's firewall part as root or "
                    "grant it CAP_NET_ADMIN, or use the dry-run backend"
                )
            raise FirewallError(f"nft {' '.join(args)} failed: {first}")
        return out.decode(errors="replace")


def parse_set_json(raw: str) -> list[BannedAddress]:
    """Elements of ``nft -j list set …`` output; unknown shapes are skipped."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise FirewallError("nft returned output that is not JSON") from exc
    out: list[BannedAddress] = []
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    for item in items:
        nft_set = item.get("set") if isinstance(item, dict) else None
        if not isinstance(nft_set, dict):
            continue
        for elem in nft_set.get("elem", []):
            parsed = _parse_elem(elem)
            if parsed is not None:
                out.append(parsed)
    return out


def _parse_elem(elem: Any) -> BannedAddress | None:
    value: Any = elem
    timeout: timedelta | None = None
    expires: timedelta | None = None
    if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
        inner = elem["elem"]
        value = inner.get("val")
        if isinstance(inner.get("timeout"), int | float):
            timeout = timedelta(seconds=inner["timeout"])
        if isinstance(inner.get("expires"), int | float):
            expires = timedelta(seconds=inner["expires"])
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return BannedAddress(address=address, timeout=timeout, expires=expires)


@dataclass
class DryRunBackend:
    """Records and logs what it would do; for machines without nftables or privileges."""

    clock: Callable[[], float] = time.monotonic
    actions: list[str] = field(default_factory=list)
    _bans: dict[IPAddress, tuple[float, float]] = field(default_factory=dict)

    async def setup(self) -> None:
        self._note("setup (dry run: no firewall rule is installed)")

    async def teardown(self) -> None:
        self._bans.clear()
        self._note("teardown")

    async def ban(self, address: str | IPAddress, duration: timedelta) -> None:
        ip = _bannable(address)
        seconds = _seconds(duration)
        self._bans[ip] = (float(seconds), self.clock() + seconds)
        self._note(f"ban {ip} for {seconds}s")

    async def unban(self, address: str | IPAddress) -> None:
        ip = normalize_address(address)
        self._bans.pop(ip, None)
        self._note(f"unban {ip}")

    async def list_bans(self) -> list[BannedAddress]:
        now = self.clock()
        for ip in [ip for ip, (_, end) in self._bans.items() if end <= now]:
            del self._bans[ip]
        return [
            BannedAddress(address=ip, timeout=timedelta(seconds=total), expires=timedelta(seconds=end - now))
            for ip, (total, end) in self._bans.items()
        ]

    def _note(self, action: str) -> None:
        self.actions.append(action)
        log.info("firewall (dry run): would %s", action)


async def probe_nftables(nft: str = "nft") -> str | None:
    """``None`` when nftables can be used here, else the reason it cannot."""
    try:
        await NftablesBackend(nft=nft)._run(["-j", "list", "tables"])
    except FirewallError as exc:
        return str(exc)
    return None


async def make_backend(kind: str = "auto", **nft_options: Any) -> FirewallBackend:
    """``nft``, ``dry-run``, or ``auto`` (nftables when usable, else dry run with a warning)."""
    if kind == "dry-run":
        return DryRunBackend()
    if kind == "nft":
        return NftablesBackend(**nft_options)
    if kind != "auto":
        raise ValueError("firewall backend is auto, nft or dry-run")
    reason = await probe_nftables(nft_options.get("nft", "nft"))
    if reason is None:
        return NftablesBackend(**nft_options)
    log.warning("firewall: nftables not usable (%s); bans are only logged (dry run)", reason)
    return DryRunBackend()


class GuardService:
    """The guard and a firewall backend, shaped for the agent's event loop.

    The agent calls the synchronous methods from its AMI callback and hub link; firewall commands
    run in order in one background task (started by :meth:`start`, or lazily on first use from a
    running loop), so a slow ``nft`` never blocks the AMI reader. A failing command is logged and
    the next one goes on: the guard's decision stands and a later tick retries nothing (the
    kernel set is the source of truth for what is dropped).

    ``feed(msg, received_at)``, ``configure(dict)``, ``unban(address)``, ``bans_for_hub()``.
    """

    def __init__(
        self,
        backend: FirewallBackend,
        settings: GuardSettings | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tick_interval: float = 5.0,
    ) -> None:
        self.guard = SecurityGuard(settings)
        self.backend = backend
        self._clock = clock
        self._tick_interval = tick_interval
        self._queue: asyncio.Queue[list[Decision]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    # -- sync side (called from the agent)

    def feed(self, event: Headers, received_at: datetime | None = None) -> list[Decision]:
        decisions = self.guard.observe(event, received_at or self._clock())
        self._submit(decisions)
        return decisions

    def configure(self, data: Mapping[str, Any]) -> list[Decision]:
        """New settings from the hub (``GuardSettings.from_dict``); counts are kept."""
        decisions = self.guard.replace_settings(GuardSettings.from_dict(data), self._clock())
        self._submit(decisions)
        return decisions

    def unban(self, address: str) -> list[Decision]:
        """The hub lifted a ban. Raises ``ValueError`` for something that is not an address."""
        decisions = self.guard.lift(address, self._clock())
        self._submit(decisions)
        return decisions

    def bans_for_hub(self) -> list[dict[str, Any]]:
        return [
            {
                "address": str(b.address),
                "at": b.at.isoformat(),
                "until": b.until.isoformat(),
                "reason": b.reason,
                "count": b.count,
                "offence": b.offence,
                "accounts": list(b.accounts),
            }
            for b in self.guard.active_bans()
        ]

    # -- async side

    async def start(self) -> None:
        """Set the firewall up, adopt bans already in it, start the worker."""
        await self.backend.setup()
        now = self._clock()
        for banned in await self.backend.list_bans():
            if banned.expires is not None:
                self.guard.adopt(banned.address, now + banned.expires, now)
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="guard-firewall")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> None:
        """Wait until every submitted decision was carried out (tests, shutdown)."""
        await self._queue.join()

    def _submit(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        self._queue.put_nowait(decisions)
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not in a loop yet: start() will pick the queue up
            self._task = loop.create_task(self._setup_then_work(), name="guard-firewall")

    async def _setup_then_work(self) -> None:
        try:
            await self.backend.setup()
        except FirewallError:
            log.exception("firewall: setup failed; bans are decided but not applied")
        await self._work()

    async def _work(self) -> None:
        while True:
            try:
                decisions = await asyncio.wait_for(self._queue.get(), self._tick_interval)
            except TimeoutError:
                self._submit_tick()
                continue
            try:
                await apply_decisions(self.backend, decisions)
            except (FirewallError, ValueError):
                self.errors += 1
                log.exception("firewall: could not apply %d decision(s)", len(decisions))
            finally:
                self._queue.task_done()

    def _submit_tick(self) -> None:
        expired = self.guard.tick(self._clock())
        for unban in expired:
            log.info("guard: ban on %s ended", unban.address)
        # the kernel already removed expired elements; nothing to apply
