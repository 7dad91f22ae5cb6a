"""Firewall backends without touching any firewall: dry run, errors, input validation."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from callbridge.agent.firewall import (
    DryRunBackend,
    FirewallError,
    FirewallUnavailable,
    NftablesBackend,
    apply_decisions,
    parse_set_json,
)
from callbridge.agent.guard import Ban, Unban

V4 = ipaddress.IPv4Address("198.51.100.7")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_dry_run_records_bans_and_their_expiry(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    backend = DryRunBackend(clock=clock)
    caplog.set_level(logging.INFO, logger="callbridge.agent.firewall")
    await backend.setup()
    await backend.ban("198.51.100.7", timedelta(minutes=10))
    await backend.ban("2001:db8::1", timedelta(seconds=30))
    clock.now += 29
    listed = {b.address: b for b in await backend.list_bans()}
    assert set(listed) == {V4, ipaddress.IPv6Address("2001:db8::1")}
    assert listed[V4].timeout == timedelta(minutes=10)
    assert listed[V4].expires == timedelta(seconds=600 - 29)
    clock.now += 1
    assert [b.address for b in await backend.list_bans()] == [V4]
    await backend.unban(V4)
    assert await backend.list_bans() == []
    assert backend.actions == [
        "setup (dry run: no firewall rule is installed)",
        "ban 198.51.100.7 for 600s",
        "ban 2001:db8::1 for 30s",
        "unban 198.51.100.7",
    ]
    assert "would ban 198.51.100.7 for 600s" in caplog.text


async def test_apply_decisions_in_order() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    backend = DryRunBackend(clock=FakeClock())
    await apply_decisions(
        backend,
        [
            Ban(V4, now + timedelta(minutes=20), "x", 10, timedelta(minutes=20), now),
            Unban(V4, now, "lifted"),
            Ban(V4, now + timedelta(minutes=5), "x", 10, timedelta(minutes=5), now),
        ],
    )
    assert backend.actions == [
        "ban 198.51.100.7 for 1200s",
        "unban 198.51.100.7",
        "ban 198.51.100.7 for 300s",
    ]


async def test_missing_nft_is_a_clear_error() -> None:
    backend = NftablesBackend(nft="/nonexistent/nft")
    with pytest.raises(FirewallUnavailable, match="not found: install nftables"):
        await backend.setup()


@pytest.mark.parametrize(
    "bad", ["1.2.3.4; nft flush ruleset", "1.2.3.4 }", "", "127.0.0.1", "::1", "0.0.0.0"]
)
async def test_addresses_are_validated_before_any_command(bad: str) -> None:
    # nft points nowhere: reaching the command would raise FirewallUnavailable instead
    backend = NftablesBackend(nft="/nonexistent/nft")
    with pytest.raises(ValueError):
        await backend.ban(bad, timedelta(minutes=1))


async def test_non_positive_duration_is_refused() -> None:
    backend = NftablesBackend(nft="/nonexistent/nft")
    with pytest.raises(ValueError, match="positive"):
        await backend.ban(V4, timedelta(0))


def test_table_name_is_validated() -> None:
    with pytest.raises(ValueError, match="table name"):
        NftablesBackend("callbridge; flush ruleset")


async def test_a_hanging_nft_times_out(tmp_path: Path) -> None:
    script = tmp_path / "slow-nft"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    backend = NftablesBackend(nft=str(script), timeout=0.3)
    with pytest.raises(FirewallError, match="timed out"):
        await backend.setup()


async def test_a_failing_nft_reports_its_error(tmp_path: Path) -> None:
    script = tmp_path / "bad-nft"
    script.write_text("#!/bin/sh\necho 'Error: syntax error, unexpected junk' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(FirewallError, match="syntax error") as info:
        await NftablesBackend(nft=str(script)).teardown()
    assert not isinstance(info.value, FirewallUnavailable)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
async def test_not_permitted_is_a_clear_error() -> None:
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot drop privileges")
        # drop to nobody without capabilities (nothing is changed: the command is refused)
        prefix = (
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        )
    backend = NftablesBackend("cbtest_denied", command_prefix=prefix)
    with pytest.raises(FirewallUnavailable, match="CAP_NET_ADMIN"):
        await backend.setup()


def test_parse_set_json_reads_timed_and_untimed_elements() -> None:
    raw = """{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"set": {"family": "inet", "name": "banned_v4", "table": "callbridge",
               "type": "ipv4_addr", "flags": ["timeout"],
               "elem": [{"elem": {"val": "198.51.100.7", "timeout": 600, "expires": 599}},
                        "192.0.2.1", {"elem": {"val": "junk"}}, 42]}}]}"""
    parsed = parse_set_json(raw)
    assert [(str(b.address), b.timeout, b.expires) for b in parsed] == [
        ("198.51.100.7", timedelta(seconds=600), timedelta(seconds=599)),
        ("192.0.2.1", None, None),
    ]
    assert parse_set_json('{"nftables": [{"set": {"name": "banned_v4"}}]}') == []
    with pytest.raises(FirewallError, match="not JSON"):
        parse_set_json("Error: …")


async def test_guard_service_applies_decisions_in_the_background() -> None:
    from datetime import UTC, datetime

    from callbridge.agent.firewall import GuardService

    now = datetime(2026, 1, 1, tzinfo=UTC)
    backend = DryRunBackend(clock=FakeClock())
    service = GuardService(backend, clock=lambda: now)
    failure = {
        "Event": "ChallengeResponseFailed",
        "Service": "PJSIP",
        "AccountID": "101",
        "RemoteAddress": "IPV4/UDP/198.51.100.7/5060",
    }
    try:
        decisions = [d for _ in range(10) for d in service.feed(failure, now)]
        assert [type(d) for d in decisions] == [Ban]
        await service.drain()  # worker started lazily, set the backend up, applied the ban
        assert backend.actions[:2] == [
            "setup (dry run: no firewall rule is installed)",
            "ban 198.51.100.7 for 600s",
        ]
        assert [b["address"] for b in service.bans_for_hub()] == ["198.51.100.7"]
        service.configure({"allow_list": ["198.51.100.0/24"], "max_failures": 5})
        await service.drain()
        assert backend.actions[-1] == "unban 198.51.100.7"
        assert service.bans_for_hub() == []
        assert service.guard.settings.max_failures == 5
        service.unban("2001:db8::9")
        await service.drain()
        assert backend.actions[-1] == "unban 2001:db8::9"
        with pytest.raises(ValueError):
            service.unban("not an address")
    finally:
        await service.aclose()


async def test_auto_backend_falls_back_to_dry_run_without_nft() -> None:
    from callbridge.agent.firewall import make_backend

    assert isinstance(await make_backend("auto", nft="/nonexistent/nft"), DryRunBackend)
    assert isinstance(await make_backend("dry-run"), DryRunBackend)
    assert isinstance(await make_backend("nft"), NftablesBackend)
    with pytest.raises(ValueError):
        await make_backend("iptables")
