"""Properties: arbitrary headers never crash the guard; protected addresses are never banned."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.agent.guard import (
    FAILURE_EVENTS,
    Ban,
    GuardSettings,
    SecurityGuard,
    Unban,
    parse_remote_address,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = ["Event", "RemoteAddress", "AccountID", "Service", "SessionID", "EventTV", "Timestamp"]
EVENTS = sorted(FAILURE_EVENTS | {"SuccessfulAuth", "ChallengeSent"})

remote_like = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda fam, tr, host, port: f"{fam}/{tr}/{host}/{port}",
        st.sampled_from(["IPV4", "IPV6", "ipv4", "X"]),
        st.sampled_from(["UDP", "TCP", "TLS", "WS", ""]),
        st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
        st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)),
    ),
)
odd_times = st.sampled_from(
    [
        "253402300000",
        "1e300",
        "nan",
        "-1e12",
        "1767225600.5",
        "9999-12-31T23:59:59+0000",
        "0001-01-01T00:00:00+0000",
        "2026-01-01T00:00:00.123+0000",
    ]
)
headers = st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=12)),
    st.one_of(st.text(max_size=40), remote_like, st.sampled_from(EVENTS), odd_times),
    max_size=10,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(headers, max_size=30), st.integers(1, 3))
def test_arbitrary_header_dicts_never_crash(events: list[dict[str, str]], limit: int) -> None:
    guard = SecurityGuard(GuardSettings(max_failures=limit))
    for i, evt in enumerate(events):
        out = guard.observe(evt, received_at=T0 + timedelta(seconds=i))
        assert all(isinstance(d, Ban | Unban) for d in out)
    guard.tick(datetime(3001, 1, 1, tzinfo=UTC))
    assert guard.active_bans() == []


@given(remote_like)
def test_parse_remote_address_returns_an_address_or_none(raw: str) -> None:
    parsed = parse_remote_address(raw)
    if parsed is not None:
        assert 0 <= parsed.port <= 65535
        assert isinstance(parsed.address, ipaddress.IPv4Address | ipaddress.IPv6Address)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.ip_addresses(network="127.0.0.0/8"),
                st.just(ipaddress.IPv6Address("::1")),
                st.ip_addresses(network="192.0.2.0/24"),
                st.ip_addresses(network="2001:db8:cafe::/48"),
                st.ip_addresses(network="198.51.100.0/30"),
            ),
            st.sampled_from(sorted(FAILURE_EVENTS)),
            st.integers(0, 3600),
        ),
        max_size=80,
    )
)
def test_only_unprotected_addresses_are_ever_banned_and_never_twice_at_once(
    stream: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str, int]],
) -> None:
    guard = SecurityGuard(GuardSettings(max_failures=3, allow_list=("192.0.2.0/24", "2001:db8:cafe::/48")))
    active: dict[object, datetime] = {}
    for address, kind, offset in sorted(stream, key=lambda s: s[2]):
        family = "IPV4" if address.version == 4 else "IPV6"
        evt = {"Event": kind, "RemoteAddress": f"{family}/UDP/{address}/5060", "AccountID": "1"}
        now = T0 + timedelta(seconds=offset)
        for decision in guard.observe(evt, received_at=now):
            if isinstance(decision, Ban):
                assert decision.address in ipaddress.ip_network("198.51.100.0/30")
                assert decision.address not in active or active[decision.address] <= now
                active[decision.address] = decision.until
            else:
                active.pop(decision.address, None)
