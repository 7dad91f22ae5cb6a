"""Byte ranges, content types and back-off for recordings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.domain.recordings import RangeNotSatisfiable, byte_range, content_type_for, retry_delay


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=90-500", 100, (90, 99)),  # a last byte past the end is cut to the end
        ("bytes=-10", 100, (90, 99)),  # the last 10 bytes
        ("bytes=-500", 100, (0, 99)),
        ("bytes=5-4", 100, None),  # invalid: ignored, the whole file
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file
        ("items=0-9", 100, None),
        ("bytes=a-b", 100, None),
    ],
)
def test_byte_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_a_range_past_the_end_is_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        byte_range(header, size)
    assert info.value.size == size


@given(st.integers(0, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
def test_a_satisfiable_range_stays_inside_the_file(size: int, first: int, last: int) -> None:
    try:
        span = byte_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiable:
        assert first >= size
        return
    if span is not None:
        assert 0 <= span[0] <= span[1] < size and span[0] == first


def test_content_types_and_backoff() -> None:
    assert content_type_for("x/20220412-1.12-2002-2005-Internal.wav") == "audio/wav"
    assert content_type_for("A.MP3") == "audio/mpeg"
    assert content_type_for("noext") == "application/octet-stream"
    assert [retry_delay(n, base=10, cap=60) for n in (1, 2, 3, 4, 50)] == [10, 20, 40, 60, 60]
