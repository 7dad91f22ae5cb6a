"""An Asterisk's MixMonitor files, read from its recordings directory on the hub's own host."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from callbridge.domain.recordings import RecordingNotReady, RecordingUnavailable


class DirectoryRecordings:
    """:class:`~callbridge.services.recordings.RecordingSource` for a hub beside Asterisk: the
    recording's reference (``MIXMONITOR_FILENAME``, absolute or relative) must lie inside
    ``root``; nothing outside it is ever read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def locate(self, reference: str) -> Path:
        given = Path(reference)
        root = self.root.resolve()
        candidate = given if given.is_absolute() else root / given
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise RecordingUnavailable(f"the file is outside the recordings directory {self.root}")
        return resolved

    async def fetch(self, reference: str, dest: Path) -> str:
        source = self.locate(reference)

        def copy() -> None:
            if not source.is_file():
                raise RecordingNotReady(f"no file {source.name} in the recordings directory (yet)")
            shutil.copyfile(source, dest)

        try:
            await asyncio.to_thread(copy)
        except PermissionError as exc:
            raise RecordingNotReady(f"the hub may not read {source.name} (permissions)") from exc
        return source.name
