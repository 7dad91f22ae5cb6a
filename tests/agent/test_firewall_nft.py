"""The nftables backend for real, inside throwaway network namespaces.

Every ``nft`` runs as ``ip netns exec cbtest-… nft …``, so the host's firewall is never touched.
The traffic test wires two namespaces with a veth pair (created inside the namespaces, not on the
host): "pbx" (10.201.0.1, fd00:cb::1) runs a TCP listener, "net" holds two sources per family;
one is banned, and a TCP connect from it must fail while the other one's succeeds.

Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and netns support; skipped with the reason
otherwise. Namespaces are deleted in fixture teardown, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from callbridge.agent.firewall import NftablesBackend, apply_decisions
from callbridge.agent.guard import SecurityGuard
from callbridge.pbx.asterisk.codec import Message, parse_stream

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "captures" / "asterisk" / "bruteforce.ami"
PORT = 7077


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create network namespaces and nftables tables"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    probe = f"cbtest-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"no network namespace support here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


REASON = _cannot_run()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"cbtest-{uuid.uuid4().hex[:10]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def two_hosts(netns: str) -> Iterator[tuple[str, str]]:
    """``(pbx, net)``: two namespaces joined by a veth pair, dual stack."""
    pbx, net = netns, f"{netns}-n"
    sh("ip", "netns", "add", net)
    try:
        sh("ip", "-n", net, "link", "set", "lo", "up")
        sh("ip", "-n", pbx, "link", "add", "vpbx", "type", "veth", "peer", "name", "vnet", "netns", net)
        for ns, dev, addrs in (
            (pbx, "vpbx", ["10.201.0.1/24", "fd00:cb::1/64"]),
            (net, "vnet", ["10.201.0.2/24", "10.201.0.3/24", "fd00:cb::2/64", "fd00:cb::3/64"]),
        ):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                sh("ip", "-n", ns, "addr", "add", addr, "dev", dev, *extra)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield pbx, net
    finally:
        sh("ip", "netns", "del", net, check=False)


def backend_in(ns: str) -> NftablesBackend:
    return NftablesBackend(command_prefix=("ip", "netns", "exec", ns))


def tables(ns: str) -> list[str]:
    raw = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "tables").stdout
    return [
        f"{i['table']['family']} {i['table']['name']}" for i in json.loads(raw)["nftables"] if "table" in i
    ]


def rules(ns: str) -> list[str]:
    raw = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "chain", "inet", "callbridge", "input")
    return [json.dumps(i["rule"]["expr"]) for i in json.loads(raw.stdout)["nftables"] if "rule" in i]


async def test_setup_ban_list_unban_teardown(netns: str) -> None:
    sh("ip", "netns", "exec", netns, "nft", "add", "table", "inet", "someone_else")
    fw = backend_in(netns)
    await fw.setup()
    await fw.setup()  # idempotent: still exactly our two drop rules
    assert sorted(tables(netns)) == ["inet callbridge", "inet someone_else"]
    assert len(rules(netns)) == 2

    await fw.ban("198.51.100.7", timedelta(minutes=10))
    await fw.ban("2001:db8::1", timedelta(minutes=20))
    listed = {str(b.address): b for b in await fw.list_bans()}
    assert set(listed) == {"198.51.100.7", "2001:db8::1"}
    assert listed["198.51.100.7"].timeout == timedelta(minutes=10)
    assert listed["2001:db8::1"].timeout == timedelta(minutes=20)
    expires = listed["198.51.100.7"].expires
    assert expires is not None and timedelta(minutes=9) < expires <= timedelta(minutes=10)

    await fw.setup()  # a restarted agent keeps the bans already in the kernel
    assert {str(b.address) for b in await fw.list_bans()} == {"198.51.100.7", "2001:db8::1"}

    await fw.ban("198.51.100.7", timedelta(seconds=90))  # a re-ban takes the new timeout
    listed = {str(b.address): b for b in await fw.list_bans()}
    assert listed["198.51.100.7"].timeout == timedelta(seconds=90)

    await fw.unban("198.51.100.7")
    await fw.unban("198.51.100.7")  # already gone: no error
    assert [str(b.address) for b in await fw.list_bans()] == ["2001:db8::1"]

    await fw.teardown()
    await fw.teardown()
    assert tables(netns) == ["inet someone_else"]


async def test_elements_expire_in_the_kernel(netns: str) -> None:
    fw = backend_in(netns)
    await fw.setup()
    await fw.ban("198.51.100.8", timedelta(seconds=1))
    assert [str(b.address) for b in await fw.list_bans()] == ["198.51.100.8"]
    await asyncio.sleep(1.5)  # no agent involvement: the kernel drops the element on time
    assert await fw.list_bans() == []


@pytest.fixture
def capture() -> bytes:
    return CAPTURE.read_bytes()


async def test_guard_decisions_on_the_capture_reach_the_set(netns: str, capture: bytes) -> None:
    guard = SecurityGuard()
    fw = backend_in(netns)
    await fw.setup()
    for record in parse_stream(capture):
        if isinstance(record, Message) and record.is_event:
            headers = dict(record.items())
            headers["RemoteAddress"] = headers.get("RemoteAddress", "").replace(
                "/127.0.0.1/", "/203.0.113.7/"
            )
            await apply_decisions(fw, guard.observe(headers))
    (banned,) = await fw.list_bans()
    assert str(banned.address) == "203.0.113.7"
    assert banned.timeout == timedelta(minutes=10)


LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[3])), timeout=1.0,
                             source_address=(sys.argv[2], 0)).close()
except OSError:
    sys.exit(1)
"""


def connects(ns: str, dst: str, src: str) -> bool:
    """One TCP connect with a 1 s timeout (a dropped SYN never gets an answer)."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, dst, src, str(PORT)],
        capture_output=True,
        timeout=10,
    )
    return done.returncode == 0


def eventually_connects(ns: str, dst: str, src: str, within: float = 10.0) -> bool:
    """Retry: a fresh veth may still be resolving neighbours (IPv6 NDP) on the first try."""
    deadline = time.monotonic() + within
    while not connects(ns, dst, src):
        if time.monotonic() > deadline:
            return False
    return True


@pytest.fixture
def listener(two_hosts: tuple[str, str]) -> Iterator[tuple[str, str]]:
    pbx, _ = two_hosts
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pbx, sys.executable, "-c", LISTENER, str(PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield two_hosts
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


async def test_traffic_from_a_banned_address_is_dropped(listener: tuple[str, str]) -> None:
    pbx, net = listener
    fw = backend_in(pbx)
    await fw.setup()
    pairs = [("10.201.0.1", "10.201.0.2", "10.201.0.3"), ("fd00:cb::1", "fd00:cb::2", "fd00:cb::3")]
    for dst, bad, good in pairs:
        assert eventually_connects(net, dst, bad) and eventually_connects(net, dst, good)

    await fw.ban("10.201.0.2", timedelta(minutes=10))
    await fw.ban("fd00:cb::2", timedelta(minutes=10))
    for dst, bad, good in pairs:
        assert not connects(net, dst, bad), f"{bad} → {dst} should be dropped"
        assert eventually_connects(net, dst, good), f"{good} → {dst} should pass"

    await fw.unban("10.201.0.2")
    await fw.teardown()
    for dst, bad, _ in pairs:
        assert eventually_connects(net, dst, bad)
