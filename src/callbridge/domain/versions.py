"""Release numbers compared as PEP 440 orders them (stdlib only): 0.10 is newer than 0.9,
1.0rc1 older than 1.0, 1.0.post1 newer; a local part (+abc) does not count."""

from __future__ import annotations

import re

_VERSION = re.compile(
    r"""^\s*v?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?P<pre_n>[0-9]*))?
    (?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>[0-9]*)|-(?P<post_implicit>[0-9]+))?
    (?:[-_.]?dev[-_.]?(?P<dev>[0-9]*))?
    (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PHASES = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2, "pre": 2, "preview": 2}

VersionKey = tuple[tuple[int, ...], tuple[int, int, int], tuple[int, ...], tuple[int, int]]


def version_key(text: str) -> VersionKey | None:
    """A sort key for a version string, or None when it is not a version."""
    m = _VERSION.match(text or "")
    if m is None:
        return None
    release = [int(p) for p in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    post_text = m["post"] if m["post"] is not None else m["post_implicit"]
    dev = m["dev"]
    if m["pre"]:
        pre = (1, _PHASES[m["pre"].lower()], int(m["pre_n"] or 0))
    elif post_text is None and dev is not None:
        pre = (0, 0, 0)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (2, 0, 0)
    post = (int(post_text or 0),) if post_text is not None else (-1,)
    dev_key = (0, int(dev or 0)) if dev is not None else (1, 0)
    return (tuple(release), pre, post, dev_key)


def older_than(version: str, reference: str) -> bool | None:
    """Whether ``version`` is an older release than ``reference``; None when either is unknown."""
    a, b = version_key(version), version_key(reference)
    if a is None or b is None:
        return None
    return a < b
