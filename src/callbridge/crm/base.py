"""What every ERP connector offers the sync and the outbox (a seam: tests and the bench drive
the real connectors against the simulators on loopback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from callbridge.domain.connectors import CallPush, ExternalContact

PAGE = 500


@dataclass(frozen=True, slots=True)
class Check:
    """One line of "test connection": what was tried and what came of it."""

    what: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Pushed:
    """Where a call went: the ERP record's id and deep link, and anything worth saying."""

    ext_id: str
    url: str
    note: str = ""


class Connector(Protocol):
    #: The directory streams, in the order a sync takes them (companies before their people).
    streams: Sequence[str]

    async def test(self) -> list[Check]: ...

    async def page(self, stream: str, since: str, after: str, limit: int) -> list[ExternalContact]:
        """Records of ``stream`` after the cursor, in (modified, key) order: modified later than
        ``since``, or at ``since`` with a key after ``after`` (the key: what follows the ``/`` of
        the ext id). Keyset paging: a record changed meanwhile moves behind the cursor and is
        read again, and none is skipped as pages shift."""
        ...

    async def count(self, stream: str) -> int:
        """How many records ``stream`` has (for the progress bar)."""
        ...

    async def ids(self, stream: str, after: str, limit: int) -> list[str]:
        """The ext ids of live records of ``stream`` with a key after ``after``, in key order
        (for finding deleted and merged ones)."""
        ...

    async def push(self, call: CallPush, known: str) -> Pushed:
        """Write the call (create it, or update ``known``, the ext id of an earlier write)."""
        ...

    def deep_link(self, ext_id: str) -> str: ...

    async def aclose(self) -> None: ...
