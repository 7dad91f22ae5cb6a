"""The guard on the real brute-force capture (``captures/asterisk/bruteforce.ami``).

What the capture holds (asserted in ``test_what_the_capture_holds``): four SIPp REGISTER floods
from 127.0.0.1, 10 attempts each, 200 ms apart, between 02:05:26.652 and 02:05:28.458 UTC:
source port 5090 → 1001, 5091 → 1002, 5092 → 1003 (wrong passwords: one ChallengeResponseFailed
per attempt) and 5093 → unknown user 9999 (per attempt: InvalidAccountID for the first REGISTER,
InvalidAccountID again for the authenticated retry, and ChallengeResponseFailed AccountID
``<unknown>`` for that same retry). Plus the AMI login of the capturing client (SuccessfulAuth).

Counting rule (guard.py): every failure event counts once, except the ``<unknown>``
ChallengeResponseFailed twin of an InvalidAccountID (same address and SessionID). So 1001, 1002
and 1003 count 10 each and 9999 counts 20 (two requests per attempt).

Everything came from loopback, which is never banned; to see the counting work, the tests move
the sender to public documentation addresses, keeping every other header and every time.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callbridge.agent.guard import Ban, GuardSettings, SecurityGuard
from callbridge.pbx.asterisk.codec import Message, parse_stream

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "captures" / "asterisk" / "bruteforce.ami"


def _events() -> list[Message]:
    records = parse_stream(CAPTURE.read_bytes())
    return [r for r in records if isinstance(r, Message) and r.is_event]


def _at(clock: str) -> datetime:
    """``"02:05:26.859"`` on the capture's day, UTC."""
    return datetime.fromisoformat(f"2026-11-22T{clock}+00:00")


def _moved(event: Message, to: str) -> dict[str, str]:
    """The event with its loopback sender replaced by ``to`` (``{port}`` is the source port)."""
    headers = dict(event.items())
    remote = headers.get("RemoteAddress", "")
    if remote.startswith("IPV4/UDP/127.0.0.1/"):
        port = remote.rsplit("/", 1)[1]
        headers["RemoteAddress"] = f"IPV4/UDP/{to.format(port=int(port) - 5000)}/{port}"
    return headers


def test_what_the_capture_holds() -> None:
    events = _events()
    security = [e for e in events if e.get("Privilege").startswith("security")]
    failures = Counter(
        (e.get("RemoteAddress"), e.name, e.get("AccountID"))
        for e in security
        if e.name in {"ChallengeResponseFailed", "InvalidAccountID"}
    )
    assert failures == {
        ("IPV4/UDP/127.0.0.1/5090", "ChallengeResponseFailed", "1001"): 10,
        ("IPV4/UDP/127.0.0.1/5091", "ChallengeResponseFailed", "1002"): 10,
        ("IPV4/UDP/127.0.0.1/5092", "ChallengeResponseFailed", "1003"): 10,
        ("IPV4/UDP/127.0.0.1/5093", "InvalidAccountID", "9999"): 20,
        ("IPV4/UDP/127.0.0.1/5093", "ChallengeResponseFailed", "<unknown>"): 10,
    }
    # every 9999 attempt: InvalidAccountID twice, then its <unknown> twin, one SessionID each
    sessions = Counter(e.get("SessionID") for e in security if e.get("AccountID") == "9999")
    assert sessions == {f"{n}-28739@127.0.0.1": 2 for n in range(1, 11)}
    times = [e.get("EventTV") for e in security if e.name != "SuccessfulAuth"]
    assert min(times) == "2026-11-22T02:05:26.650+0000"
    assert max(times) == "2026-11-22T02:05:28.458+0000"
    assert [e.get("Service") for e in security if e.name == "SuccessfulAuth"] == ["AMI"]


def test_as_recorded_nothing_is_banned_because_it_all_came_from_loopback() -> None:
    guard = SecurityGuard()
    decisions = [d for e in _events() for d in guard.observe(e)]
    assert decisions == []
    assert guard.failures("127.0.0.1") == 0
    assert guard.stats.protected == 61  # 60 failures + the AMI SuccessfulAuth
    assert guard.stats.failures == 0


def test_one_attacker_is_banned_on_its_tenth_counted_failure() -> None:
    # All four floods from one host. Counted, in capture order:
    #  1 26.652 CRF 1002 #1   2 26.653 CRF 1003 #1   3 26.654 IAID 9999 #1  4 26.654 IAID 9999 #1
    #    (26.654 CRF <unknown> #1: twin of 4, not counted)
    #  5 26.659 CRF 1001 #1   6 26.851 CRF 1002 #2   7 26.851 CRF 1003 #2   8 26.854 IAID 9999 #2
    #  9 26.855 IAID 9999 #2 (26.855 twin)          10 26.859 CRF 1001 #2 → ban
    guard = SecurityGuard()
    bans: list[tuple[Message, Ban]] = []
    for event in _events():
        for decision in guard.observe(_moved(event, "203.0.113.7")):
            assert isinstance(decision, Ban)
            bans.append((event, decision))
    assert len(bans) == 1
    event, ban = bans[0]
    assert (event.name, event.get("SessionID")) == ("ChallengeResponseFailed", "2-28736@127.0.0.1")
    assert str(ban.address) == "203.0.113.7"
    assert ban.at == _at("02:05:26.859")
    assert ban.until == _at("02:15:26.859")
    assert ban.duration == timedelta(minutes=10)
    assert ban.count == 10
    assert ban.offence == 1
    assert set(ban.accounts) == {"PJSIP:1001", "PJSIP:1002", "PJSIP:1003", "PJSIP:9999"}
    # the rest of the flood arrives while banned: not counted again, no second ban
    assert guard.stats.while_banned == 48
    assert [b.address for b in guard.active_bans()] == [ban.address]


def test_four_attackers_are_banned_at_their_own_tenth_failure() -> None:
    # Port 509N → 198.51.100.9N. 9999 counts two requests per attempt: its 10th counted failure
    # is the second InvalidAccountID of attempt 5 (27.454); the others at their 10th attempt.
    guard = SecurityGuard()
    seen: list[tuple[str, datetime, str, int]] = []
    for event in _events():
        for decision in guard.observe(_moved(event, "198.51.100.{port}")):
            assert isinstance(decision, Ban)
            seen.append((str(decision.address), decision.at, event.get("SessionID"), decision.count))
    assert seen == [
        ("198.51.100.93", _at("02:05:27.454"), "5-28739@127.0.0.1", 10),
        ("198.51.100.91", _at("02:05:28.452"), "10-28735@127.0.0.1", 10),
        ("198.51.100.92", _at("02:05:28.452"), "10-28737@127.0.0.1", 10),
        ("198.51.100.90", _at("02:05:28.458"), "10-28736@127.0.0.1", 10),
    ]
    assert guard.stats.paired == 4  # the <unknown> twins of attempts 1-4; 5-10 came while banned


def test_one_more_failure_allowed_means_no_ban_for_the_password_floods() -> None:
    guard = SecurityGuard(GuardSettings(max_failures=11))
    banned = {str(d.address) for e in _events() for d in guard.observe(_moved(e, "198.51.100.{port}"))}
    assert banned == {"198.51.100.93"}
    assert guard.failures("198.51.100.90") == 10


def test_allow_listed_attacker_is_never_banned() -> None:
    guard = SecurityGuard(GuardSettings(allow_list=("203.0.113.0/24",)))
    decisions = [d for e in _events() for d in guard.observe(_moved(e, "203.0.113.7"))]
    assert decisions == []
    assert guard.failures("203.0.113.7") == 0


def test_capture_times_come_from_eventtv_not_the_receive_time() -> None:
    guard = SecurityGuard()
    late = datetime(2030, 1, 1, tzinfo=UTC)
    bans = [d for e in _events() for d in guard.observe(_moved(e, "203.0.113.7"), received_at=late)]
    assert [b.at for b in bans] == [_at("02:05:26.859")]
