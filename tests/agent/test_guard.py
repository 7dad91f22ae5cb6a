"""Security guard logic: windows, allow-list, IPv6, escalation, settings swaps, bad input."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.agent.guard import (
    Ban,
    Decision,
    GuardSettings,
    SecurityGuard,
    Unban,
    parse_remote_address,
)

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
ATTACKER = "198.51.100.23"


def event(
    kind: str = "ChallengeResponseFailed",
    remote: str = f"IPV4/UDP/{ATTACKER}/5091",
    account: str = "101",
    service: str = "PJSIP",
    session: str = "",
) -> dict[str, str]:
    return {
        "Event": kind,
        "Privilege": "security,all",
        "Severity": "Error",
        "Service": service,
        "EventVersion": "1",
        "AccountID": account,
        "SessionID": session,
        "LocalAddress": "IPV4/UDP/203.0.113.5/5060",
        "RemoteAddress": remote,
    }


def feed(guard: SecurityGuard, when: datetime, n: int = 1, **kw: str) -> list[Decision]:
    out: list[Decision] = []
    for _ in range(n):
        out += guard.observe(event(**kw), received_at=when)
    return out


def bans(decisions: list[Decision]) -> list[Ban]:
    return [d for d in decisions if isinstance(d, Ban)]


# --------------------------------------------------------------------------- window


def test_tenth_failure_in_ten_minutes_bans_for_ten_minutes() -> None:
    guard = SecurityGuard()
    for i in range(9):
        assert feed(guard, T0 + timedelta(seconds=i)) == []
    assert guard.failures(ATTACKER) == 9
    (ban,) = feed(guard, T0 + timedelta(seconds=9))
    assert isinstance(ban, Ban)
    assert ban.address == ipaddress.ip_address(ATTACKER)
    assert ban.count == 10
    assert ban.at == T0 + timedelta(seconds=9)
    assert ban.until == T0 + timedelta(seconds=9, minutes=10)
    assert "10 failed authentications" in ban.reason
    assert guard.failures(ATTACKER) == 0


def test_window_edge_just_inside_bans() -> None:
    guard = SecurityGuard()
    feed(guard, T0)
    feed(guard, T0 + timedelta(minutes=1), n=8)
    assert len(bans(feed(guard, T0 + timedelta(minutes=10) - timedelta(milliseconds=1)))) == 1


def test_window_edge_exactly_window_apart_does_not_ban() -> None:
    guard = SecurityGuard()
    feed(guard, T0)
    feed(guard, T0 + timedelta(minutes=1), n=8)
    assert feed(guard, T0 + timedelta(minutes=10)) == []  # the first one just left the window
    assert guard.failures(ATTACKER) == 9
    assert len(bans(feed(guard, T0 + timedelta(minutes=10, seconds=1)))) == 1


def test_slow_guessing_below_the_rate_is_never_banned() -> None:
    guard = SecurityGuard()
    decisions = [d for i in range(100) for d in feed(guard, T0 + timedelta(seconds=67 * i))]
    assert decisions == []
    assert guard.failures(ATTACKER) == 10 - 1


def test_a_late_event_older_than_the_window_is_not_counted() -> None:
    guard = SecurityGuard()
    feed(guard, T0 + timedelta(minutes=30), n=9)
    assert feed(guard, T0) == []
    assert guard.failures(ATTACKER) == 9
    # a slightly late one (still in the window) counts
    assert len(bans(feed(guard, T0 + timedelta(minutes=29)))) == 1


def test_failures_while_banned_are_not_counted_and_do_not_reban() -> None:
    guard = SecurityGuard()
    assert len(bans(feed(guard, T0, n=10))) == 1
    assert feed(guard, T0 + timedelta(minutes=1), n=50) == []
    assert guard.stats.while_banned == 50
    assert len(guard.active_bans()) == 1


def test_tick_expires_bans_and_counting_restarts() -> None:
    guard = SecurityGuard()
    (ban,) = bans(feed(guard, T0, n=10))
    assert guard.tick(T0 + timedelta(minutes=9)) == []
    assert guard.tick(T0 + timedelta(minutes=10)) == [
        Unban(address=ban.address, at=ban.until, reason="expired")
    ]
    assert guard.active_bans() == []
    assert feed(guard, T0 + timedelta(minutes=11), n=9) == []
    assert len(bans(feed(guard, T0 + timedelta(minutes=11)))) == 1


def test_expiry_noticed_on_the_next_failure_without_tick() -> None:
    guard = SecurityGuard()
    (ban,) = bans(feed(guard, T0, n=10))
    out = feed(guard, T0 + timedelta(minutes=15))
    assert out == [Unban(address=ban.address, at=ban.until, reason="expired")]
    assert guard.failures(ATTACKER) == 1


# --------------------------------------------------------------------------- escalation


def test_repeat_offenders_get_doubling_bans_up_to_the_cap() -> None:
    settings = GuardSettings(max_ban_time=timedelta(minutes=60))
    guard = SecurityGuard(settings)
    durations = []
    now = T0
    for _ in range(5):
        (ban,) = bans(feed(guard, now, n=10))
        durations.append((ban.offence, ban.duration))
        now = ban.until + timedelta(seconds=1)
        guard.tick(now)
    assert durations == [
        (1, timedelta(minutes=10)),
        (2, timedelta(minutes=20)),
        (3, timedelta(minutes=40)),
        (4, timedelta(minutes=60)),
        (5, timedelta(minutes=60)),
    ]
    (sixth,) = bans(feed(guard, now, n=10))
    assert "repeat offence #6" in sixth.reason


def test_offence_history_is_forgotten_after_the_recidive_window() -> None:
    guard = SecurityGuard(GuardSettings(recidive_window=timedelta(hours=1)))
    bans(feed(guard, T0, n=10))
    (second,) = bans(feed(guard, T0 + timedelta(minutes=30), n=10))
    assert second.duration == timedelta(minutes=20)
    (third,) = bans(feed(guard, T0 + timedelta(hours=3), n=10))
    assert (third.offence, third.duration) == (1, timedelta(minutes=10))


def test_idle_addresses_are_dropped_by_tick() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=3)
    guard.tick(T0 + timedelta(minutes=5))
    assert guard.failures(ATTACKER) == 3
    guard.tick(T0 + timedelta(minutes=10))
    assert guard.failures(ATTACKER) == 0
    assert guard._records == {}


# --------------------------------------------------------------------------- never banned


@pytest.mark.parametrize(
    "remote",
    [
        "IPV4/UDP/127.0.0.1/5060",
        "IPV4/TCP/127.8.9.10/5060",
        "IPV6/UDP/::1/5060",
        "IPV6/UDP/::ffff:127.0.0.1/5060",
        "IPV4/UDP/0.0.0.0/5060",
        "IPV6/TCP/::/5060",
    ],
)
def test_loopback_and_unspecified_are_never_banned(remote: str) -> None:
    guard = SecurityGuard(GuardSettings(max_failures=1))
    assert feed(guard, T0, n=100, remote=remote) == []
    assert guard.stats.protected == 100


@pytest.mark.parametrize(
    ("allow", "remote"),
    [
        ("192.0.2.0/24", "IPV4/UDP/192.0.2.77/5060"),
        ("192.0.2.1/24", "IPV4/UDP/192.0.2.77/5060"),  # host bits are accepted
        ("10.1.2.3", "IPV4/TLS/10.1.2.3/5061"),
        ("2001:db8:1::/48", "IPV6/TCP/2001:db8:1:2::3/5061"),
        ("192.0.2.0/24", "IPV6/UDP/::ffff:192.0.2.9/5060"),  # mapped form is the v4 address
    ],
)
def test_allow_listed_networks_are_never_banned(allow: str, remote: str) -> None:
    guard = SecurityGuard(GuardSettings(allow_list=(allow,), max_failures=1))
    assert feed(guard, T0, n=20, remote=remote) == []


def test_allow_list_does_not_cover_neighbours() -> None:
    guard = SecurityGuard(GuardSettings(allow_list=("192.0.2.0/25",)))
    assert len(bans(feed(guard, T0, n=10, remote="IPV4/UDP/192.0.2.200/5060"))) == 1


# --------------------------------------------------------------------------- IPv6


def test_ipv6_attacker_is_banned_by_address_across_ports() -> None:
    guard = SecurityGuard()
    out: list[Decision] = []
    for port in range(5060, 5070):
        out += feed(guard, T0, remote=f"IPV6/TCP/2001:db8::1/{port}")
    (ban,) = bans(out)
    assert ban.address == ipaddress.IPv6Address("2001:db8::1")
    assert guard.failures("2001:db8::2") == 0


def test_ipv4_mapped_ipv6_counts_as_the_ipv4_address() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=5, remote=f"IPV6/UDP/::ffff:{ATTACKER}/5060")
    (ban,) = bans(feed(guard, T0, n=5))
    assert ban.address == ipaddress.IPv4Address(ATTACKER)


# --------------------------------------------------------------------------- SuccessfulAuth


def test_success_clears_that_accounts_failures() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=9, account="101")
    feed(guard, T0, kind="SuccessfulAuth", account="101")
    assert guard.failures(ATTACKER) == 0
    assert feed(guard, T0, n=9, account="101") == []


def test_success_does_not_whitelist_an_address_failing_for_other_accounts() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=4, account="101")
    feed(guard, T0, n=5, account="102")
    feed(guard, T0, kind="SuccessfulAuth", account="101")
    assert guard.failures(ATTACKER) == 5
    feed(guard, T0, n=4, account="103")
    assert feed(guard, T0, kind="SuccessfulAuth", account="104") == []
    (ban,) = bans(feed(guard, T0, account="102"))
    assert ban.count == 10


def test_success_for_the_same_name_on_another_service_does_not_clear() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=9, account="admin", service="AMI", kind="InvalidPassword")
    feed(guard, T0, kind="SuccessfulAuth", account="admin", service="PJSIP")
    assert guard.failures(ATTACKER) == 9


def test_success_does_not_lift_an_active_ban() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=10)
    assert feed(guard, T0, kind="SuccessfulAuth") == []
    assert len(guard.active_bans()) == 1


# --------------------------------------------------------------------------- event kinds


@pytest.mark.parametrize(
    ("kind", "service"),
    [
        ("InvalidPassword", "AMI"),
        ("InvalidAccountID", "AMI"),
        ("ChallengeResponseFailed", "AMI"),
        ("FailedACL", "PJSIP"),
        ("FailedACL", "AMI"),
        ("ChallengeResponseFailed", "SIP"),
    ],
)
def test_every_failure_kind_and_service_counts(kind: str, service: str) -> None:
    guard = SecurityGuard()
    assert len(bans(feed(guard, T0, n=10, kind=kind, service=service))) == 1


@pytest.mark.parametrize("kind", ["ChallengeSent", "SuccessfulAuth", "RequestBadFormat", "Hangup"])
def test_non_failures_do_not_count(kind: str) -> None:
    guard = SecurityGuard()
    assert feed(guard, T0, n=50, kind=kind) == []
    assert guard.failures(ATTACKER) == 0


def test_unknown_account_twin_is_counted_once_per_request() -> None:
    guard = SecurityGuard()
    for attempt in range(4):
        session = f"{attempt}-1@x"
        feed(guard, T0, kind="InvalidAccountID", account="9999", session=session)
        feed(guard, T0, kind="InvalidAccountID", account="9999", session=session)
        feed(guard, T0, account="<unknown>", session=session)
    assert guard.failures(ATTACKER) == 8
    # a <unknown> failure without its InvalidAccountID counts (no pairing to hide behind)
    feed(guard, T0, account="<unknown>", session="lonely")
    assert guard.failures(ATTACKER) == 9
    # reusing a SessionID buys nothing: the twin is consumed once
    (ban,) = bans(feed(guard, T0, account="<unknown>", session="0-1@x"))
    assert ban.count == 10


# --------------------------------------------------------------------------- time


def test_timestamp_header_wins_over_eventtv_and_receive_time() -> None:
    guard = SecurityGuard()
    ts = T0 + timedelta(hours=1)
    evt = {**event(), "Timestamp": f"{ts.timestamp():.6f}", "EventTV": "2020-01-01T00:00:00+0000"}
    for _ in range(9):
        guard.observe(evt, received_at=T0)
    (ban,) = bans(guard.observe(evt, received_at=T0))
    assert ban.at == ts


def test_eventtv_with_offset_is_converted_to_utc() -> None:
    guard = SecurityGuard()
    evt = {**event(), "EventTV": "2026-01-01T12:00:00.250+0200"}
    (ban,) = bans([d for _ in range(10) for d in guard.observe(evt)])
    assert ban.at == T0 + timedelta(milliseconds=250)
    assert ban.at.tzinfo is not None


def test_event_without_any_time_is_ignored() -> None:
    guard = SecurityGuard()
    assert [d for _ in range(20) for d in guard.observe(event())] == []
    assert guard.stats.untimed == 20


# --------------------------------------------------------------------------- settings


def test_replaced_settings_keep_counts() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=7)
    assert guard.replace_settings(GuardSettings(max_failures=8), T0) == []
    assert guard.failures(ATTACKER) == 7
    (ban,) = bans(feed(guard, T0 + timedelta(seconds=1)))
    assert ban.count == 8


def test_raised_threshold_mid_stream_delays_the_ban() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=9)
    guard.replace_settings(GuardSettings(max_failures=12), T0)
    assert feed(guard, T0, n=2) == []
    assert len(bans(feed(guard, T0))) == 1


def test_shorter_window_mid_stream_drops_old_failures() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=9)
    guard.replace_settings(GuardSettings(window=timedelta(minutes=1)), T0)
    assert feed(guard, T0 + timedelta(minutes=2)) == []
    assert guard.failures(ATTACKER) == 1


def test_allow_listing_a_banned_address_unbans_it() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=10)
    feed(guard, T0, n=3, remote="IPV4/UDP/198.51.100.99/5060")
    out = guard.replace_settings(GuardSettings(allow_list=("198.51.100.0/24",)), T0)
    assert out == [Unban(address=ipaddress.ip_address(ATTACKER), at=T0, reason="allow-listed")]
    assert guard.active_bans() == []
    assert guard.failures("198.51.100.99") == 0


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="not an IP network"):
        GuardSettings(allow_list=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="sequence"):
        GuardSettings(allow_list="10.0.0.0/8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_failures"):
        GuardSettings(max_failures=0)
    with pytest.raises(ValueError, match="window"):
        GuardSettings(window=timedelta(0))
    with pytest.raises(ValueError, match="escalation_factor"):
        GuardSettings(escalation_factor=0.5)
    with pytest.raises(ValueError, match="max_ban_time"):
        GuardSettings(ban_time=timedelta(hours=2), max_ban_time=timedelta(hours=1))


def test_settings_from_the_hubs_json() -> None:
    settings = GuardSettings.from_dict(
        {
            "max_failures": 5,
            "window_seconds": 60,
            "ban_time_seconds": 3600,
            "allow_list": ["192.0.2.0/24", "2001:db8::/32"],
        }
    )
    assert settings.max_failures == 5
    assert settings.window == timedelta(minutes=1)
    assert settings.ban_time == timedelta(hours=1)
    assert settings.allow_list == ("192.0.2.0/24", "2001:db8::/32")
    with pytest.raises(ValueError, match="unknown guard setting"):
        GuardSettings.from_dict({"maxretry": 3})


# --------------------------------------------------------------------------- lift, adopt, memory


def test_lift_unbans_and_forgets() -> None:
    guard = SecurityGuard()
    feed(guard, T0, n=10)
    out = guard.lift(ATTACKER, T0 + timedelta(minutes=1))
    assert out == [Unban(ipaddress.ip_address(ATTACKER), T0 + timedelta(minutes=1), "lifted")]
    assert guard.active_bans() == []
    assert guard.offences(ATTACKER) == 0
    (ban,) = bans(feed(guard, T0 + timedelta(minutes=2), n=10))
    assert ban.offence == 1
    with pytest.raises(ValueError, match="not an IP address"):
        guard.lift("not-an-ip; rm -rf /", T0)


def test_adopted_ban_from_the_firewall_suppresses_counting_until_it_ends() -> None:
    guard = SecurityGuard()
    guard.adopt(ATTACKER, T0 + timedelta(minutes=5), T0)
    assert feed(guard, T0 + timedelta(minutes=1), n=20) == []
    (ban,) = bans(feed(guard, T0 + timedelta(minutes=6), n=10))
    assert ban.offence == 2


def test_memory_is_bounded() -> None:
    guard = SecurityGuard(GuardSettings(max_tracked_addresses=100))
    for i in range(1000):
        feed(guard, T0, remote=f"IPV4/UDP/10.0.{i // 250}.{i % 250 + 1}/5060")
    assert len(guard._records) <= 100
    assert guard.stats.evicted == 900


# --------------------------------------------------------------------------- RemoteAddress


@pytest.mark.parametrize(
    ("raw", "address", "port", "transport"),
    [
        ("IPV4/UDP/1.2.3.4/5060", "1.2.3.4", 5060, "UDP"),
        ("IPV6/TCP/2001:db8::1/5061", "2001:db8::1", 5061, "TCP"),
        ("IPV4/1.2.3.4/5060", "1.2.3.4", 5060, None),
        ("IPV6/WSS/[2001:db8::2]/8089", "2001:db8::2", 8089, "WSS"),
        ("ipv4/tls/1.2.3.4/5061", "1.2.3.4", 5061, "TLS"),
        ("IPV6/UDP/fe80::1%eth0/5060", "fe80::1", 5060, "UDP"),
    ],
)
def test_remote_address_parses(raw: str, address: str, port: int, transport: str | None) -> None:
    parsed = parse_remote_address(raw)
    assert parsed is not None
    assert (str(parsed.address), parsed.port, parsed.transport) == (address, port, transport)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1.2.3.4",
        "1.2.3.4:5060",
        "IPV4/UDP/1.2.3.4",
        "IPV4/UDP/1.2.3.4/",
        "IPV4/UDP/1.2.3.4/99999",
        "IPV4/UDP/1.2.3.4/-1",
        "IPV4/FOO/1.2.3.4/5060",
        "IPV5/UDP/1.2.3.4/5060",
        "IPV4/UDP/2001:db8::1/5060",
        "IPV6/UDP/1.2.3.4/5060",
        "IPV4/UDP/999.2.3.4/5060",
        "IPV4/UDP/1.2.3.4/5060/extra",
        'IPV4/UDP/1.2.3.4",LocalAddress="x/5060',
        "IPV4/UDP/１.２.３.４/5060",
        "IPV4/UDP/1.2.3.4/５０６０",
        "IPV4/UDP/ /5060",
    ],
)
def test_malformed_remote_address_is_ignored(raw: str) -> None:
    assert parse_remote_address(raw) is None
    guard = SecurityGuard(GuardSettings(max_failures=1))
    assert feed(guard, T0, n=3, remote=raw) == []
    assert guard.stats.malformed == 3


def test_missing_remote_address_and_odd_values_are_ignored() -> None:
    guard = SecurityGuard(GuardSettings(max_failures=1))
    assert guard.observe({"Event": "InvalidPassword"}, received_at=T0) == []
    odd: dict[str, object] = {"Event": "InvalidPassword", "RemoteAddress": 12345}
    assert guard.observe(odd, received_at=T0) == []
    assert guard.stats.malformed == 2

    class Hostile:
        def get(self, key: str, /) -> object:
            raise RuntimeError(key)

    assert guard.observe(Hostile(), received_at=T0) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Timestamp": "253402300000"},
        {"Timestamp": "nan"},
        {"EventTV": "9999-12-31T23:59:59+0000"},
        {"EventTV": "0001-01-01T00:00:00+0000"},
    ],
)
def test_unbelievable_header_times_fall_back_to_the_receive_time(headers: dict[str, str]) -> None:
    guard = SecurityGuard()
    evt = {**event(), **headers}
    (ban,) = bans([d for _ in range(10) for d in guard.observe(evt, received_at=T0)])
    assert ban.at == T0
