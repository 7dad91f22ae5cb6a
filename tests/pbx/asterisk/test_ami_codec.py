"""The AMI codec: framing, repeated keys, escaping, resync after junk, injection-safe encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.pbx.asterisk.codec import (
    AmiDecoder,
    Banner,
    FrameError,
    Message,
    encode_action,
    encode_message,
    parse_stream,
    unescape,
)

CAPTURES = Path(__file__).resolve().parents[2] / "data" / "captures" / "asterisk"


def messages(records: list[object]) -> list[Message]:
    return [r for r in records if isinstance(r, Message)]


def test_banner_then_response_without_blank_line() -> None:
    data = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\nMessage: ok\r\n\r\n"
    records = parse_stream(data)
    assert records[0] == Banner("11.0.0")
    assert isinstance(records[1], Message)
    assert records[1].get("Response") == "Success"
    assert records[1].action_id == "1"


def test_bare_lf_and_crlf_give_the_same_message() -> None:
    crlf = parse_stream(b"Event: Hangup\r\nCause: 16\r\n\r\n", expect_banner=False)
    lf = parse_stream(b"Event: Hangup\nCause: 16\n\n", expect_banner=False)
    mixed = parse_stream(b"Event: Hangup\r\nCause: 16\n\r\n", expect_banner=False)
    assert crlf == lf == mixed
    assert messages(crlf)[0].get("Cause") == "16"


def test_repeated_keys_are_lists_and_lookup_ignores_case() -> None:
    data = (
        b"Response: Success\r\nOutput: line 1\r\nOutput: line 2\r\n"
        b"ChanVariable: A=1\r\nChanVariable: B=x=y\r\n\r\n"
    )
    (msg,) = messages(parse_stream(data, expect_banner=False))
    assert msg.get_all("output") == ["line 1", "line 2"]
    assert msg.get("OUTPUT") == "line 1"
    assert msg.variables() == {"A": "1", "B": "x=y"}
    assert "response" in msg
    assert msg.get_all("missing") == []


def test_value_keeps_colons_and_inner_spaces_and_empty_values() -> None:
    data = b"Event: VarSet\r\nValue:   minrtt=0:1\r\nAccountCode: \r\nEmpty:\r\n\r\n"
    (msg,) = messages(parse_stream(data, expect_banner=False))
    assert msg.get("Value") == "  minrtt=0:1"
    assert msg.get("AccountCode") == ""
    assert msg.get("Empty") == ""


def test_c_escaped_values_are_unescaped_on_request() -> None:
    data = b'Event: Newchannel\r\nCallerIDName: Ann \\"Q\\"\\nSmith\r\n\r\n'
    (msg,) = messages(parse_stream(data, expect_banner=False))
    assert msg.get("CallerIDName") == 'Ann \\"Q\\"\\nSmith'
    assert msg.unescaped("CallerIDName") == 'Ann "Q"\nSmith'
    assert unescape("a\\\\b") == "a\\b"


def test_partial_frames_across_reads_and_utf8_split() -> None:
    data = "Event: Newchannel\r\nCallerIDName: Zoë\r\n\r\n".encode()
    decoder = AmiDecoder(expect_banner=False)
    out: list[object] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    (msg,) = messages(out)
    assert msg.get("CallerIDName") == "Zoë"


def test_oversized_line_is_dropped_and_stream_resyncs() -> None:
    big = b"Event: X\r\nValue: " + b"a" * 5000 + b"\r\n\r\nEvent: Y\r\n\r\n"
    records = AmiDecoder(expect_banner=False, max_line_bytes=1024).feed(big)
    assert isinstance(records[0], FrameError) and records[0].reason == "line too long"
    assert [m.name for m in messages(records)] == ["Y"]


def test_oversized_frame_without_terminator_is_bounded_and_resyncs() -> None:
    decoder = AmiDecoder(expect_banner=False, max_frame_bytes=4096)
    out: list[object] = []
    for _ in range(100):  # 100 KiB of one endless frame, limit 4 KiB
        out += decoder.feed(b"Key: " + b"v" * 1019 + b"\n")
        assert decoder.buffered <= 8 * 4096 + 1024
    out += decoder.feed(b"\r\nEvent: After\r\n\r\n")
    assert [type(r).__name__ for r in out] == ["FrameError", "Message"]
    assert messages(out)[0].name == "After"


def test_encoder_neutralises_header_injection() -> None:
    raw = encode_action(
        "Hangup", {"Channel": "PJSIP/1-01\r\nAction: Command\r\nCommand: core stop now"}, action_id="a1"
    )
    (msg,) = messages(parse_stream(raw, expect_banner=False))
    assert msg.get("Action") == "Hangup"
    assert msg.get_all("Action") == ["Hangup"]
    assert "Command" not in msg
    assert raw.count(b"\r\n\r\n") == 1


def test_encoder_repeats_list_values_and_refuses_bad_keys() -> None:
    raw = encode_action("Originate", {"Variable": ["A=1", "B=2"], "Async": True}, action_id="x")
    (msg,) = messages(parse_stream(raw, expect_banner=False))
    assert msg.get_all("Variable") == ["A=1", "B=2"]
    assert msg.get("Async") == "true"
    with pytest.raises(ValueError):
        encode_message([("Bad\r\nKey", "v")])
    with pytest.raises(ValueError):
        encode_action("Ping", {"ActionID": "sneaky"})


@pytest.mark.parametrize("name", ["answered.ami", "busy.ami", "missed.ami", "bruteforce.ami"])
def test_real_captures_parse_completely(name: str) -> None:
    data = (CAPTURES / name).read_bytes()
    records = parse_stream(data)
    assert records[0] == Banner("11.0.0")
    assert not [r for r in records if isinstance(r, FrameError)]
    msgs = messages(records)
    # Every blank-line-terminated block is one message.
    assert len(msgs) == data.count(b"\r\n\r\n")
    assert msgs[-1].get("Response") == "Goodbye"


# -- properties -----------------------------------------------------------------------------

_line = st.tuples(
    st.sampled_from(["Event", "Channel", "Variable", "Output", "CallerIDName", "X-y"]),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=30
    ),
)
_frame = st.lists(_line, min_size=1, max_size=6)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(_frame, max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
    lf=st.booleans(),
)
def test_any_split_of_a_valid_stream_gives_the_same_messages(
    frames: list[list[tuple[str, str]]], cuts: list[int], lf: bool
) -> None:
    data = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(encode_message(f) for f in frames)
    if lf:
        data = data.replace(b"\r\n", b"\n")
    whole = parse_stream(data)
    decoder = AmiDecoder()
    pieces: list[object] = []
    for piece in _split(data, cuts):
        pieces += decoder.feed(piece)
    assert pieces == whole
    # Values round-trip exactly through encoder and decoder, repeated keys in order.
    assert messages(whole) == [Message.from_pairs(f) for f in frames]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_garbage_never_crashes_and_split_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = AmiDecoder(max_line_bytes=64, max_frame_bytes=256).feed(data)
    decoder = AmiDecoder(max_line_bytes=64, max_frame_bytes=256)
    pieces: list[object] = []
    for piece in _split(data, cuts):
        pieces += decoder.feed(piece)
        assert decoder.buffered <= 8 * 256 + 64 + 3
    assert pieces == whole
    # After garbage, a well-formed frame following a blank line is still decoded.
    tail = decoder.feed(b"\r\n\r\nEvent: Sentinel\r\n\r\n")
    assert messages(tail) and messages(tail)[-1].name == "Sentinel"


def _reference_encode(headers: list[tuple[str, object]]) -> bytes:
    """The encoder as first written (a regex check and a sanitise per value): the fast one must
    give the same bytes."""
    import re

    def clean(value: str) -> str:
        return re.sub(r"[\r\n\x00]", " ", value)

    def render(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    parts = []
    for key, value in headers:
        if isinstance(value, str | int | float | bool):
            parts.append(f"{key}: {clean(render(value))}\r\n")
        else:
            assert isinstance(value, list)
            parts += [f"{key}: {clean(render(item))}\r\n" for item in value]
    return ("".join(parts) + "\r\n").encode("utf-8")


_VALUES = st.one_of(
    st.text(alphabet="ab :\r\n\x00é", max_size=8),
    st.integers(),
    st.booleans(),
    st.lists(st.text(alphabet="ab\r\n: ", max_size=5), max_size=3),
)


@given(st.lists(st.tuples(st.sampled_from(["Event", "Channel", "Value", "X-Var(1)"]), _VALUES), max_size=8))
def test_encoder_gives_the_same_bytes_as_the_plain_renderer(headers: list[tuple[str, object]]) -> None:
    assert encode_message(headers) == _reference_encode(headers)  # type: ignore[arg-type]
