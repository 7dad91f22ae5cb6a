"""Version comparison as PEP 440 orders releases (the agents list's `outdated`)."""

from __future__ import annotations

import itertools

import pytest

from callbridge.domain.versions import older_than, version_key

ORDERED = [
    "0.1.0.dev1",
    "0.1.0a1",
    "0.1.0a2",
    "0.1.0b1",
    "0.1.0rc1",
    "0.1.0",
    "0.1.0.post1",
    "0.1.1",
    "0.2",
    "0.9.0",
    "0.10.0",
    "1.0.0.dev3",
    "1.0",
    "10.0",
]


def test_releases_sort_as_pep_440_says() -> None:
    keys = [version_key(v) for v in ORDERED]
    assert None not in keys
    assert sorted(ORDERED, key=lambda v: version_key(v)) == ORDERED  # type: ignore[arg-type,return-value]
    for older, newer in itertools.pairwise(ORDERED):
        assert older_than(older, newer) is True, (older, newer)
        assert older_than(newer, older) is False, (older, newer)


@pytest.mark.parametrize(
    ("a", "b"), [("1.0", "1.0.0"), ("1.0.0+local.7", "1.0"), ("v2.1", "2.1.0"), ("1.0RC1", "1.0rc1")]
)
def test_same_release_is_not_older(a: str, b: str) -> None:
    assert older_than(a, b) is False and older_than(b, a) is False


@pytest.mark.parametrize("text", ["", "?", "latest", "1..2", "1.0-beta-x", "abc1.0"])
def test_not_a_version_is_unknown(text: str) -> None:
    assert version_key(text) is None
    assert older_than(text, "1.0") is None and older_than("1.0", text) is None
