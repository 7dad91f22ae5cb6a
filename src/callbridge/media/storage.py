"""Recording storage: files under ``<data dir>/recordings``.

Every store answers the same small interface (:class:`callbridge.services.recordings.RecordingStorage`):
put a finished local file under a key, read it whole or a byte range of it, tell its size,
whether it exists, delete it. Keys are relative, ``/``-separated, and never leave the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from callbridge.domain.errors import InvalidInput, NotFound

CHUNK = 256 * 1024


def _check_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in key
        or "\0" in key
    ):
        raise InvalidInput(f"not a storage key: {key!r}")
    return key


class LocalStorage:
    """Recordings as files under one directory (by default ``<data dir>/recordings``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @property
    def scratch(self) -> Path:
        """Where fetches write before a file is put: on the same file system, so put is a rename."""
        return self.root / ".incoming"

    async def put(self, key: str, source: Path) -> None:
        """Store ``source`` (a finished local file, which is consumed) under ``key``."""
        target = self.path(key)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
            except OSError:  # another file system: copy, then drop the source
                tmp = target.with_name(target.name + ".part")
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                source.unlink(missing_ok=True)

        await asyncio.to_thread(move)

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no stored recording {key}") from exc

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, True)

    async def read_range(self, key: str, first: int = 0, last: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``first``..``last`` (inclusive; ``None``: to the end), in chunks."""
        try:
            handle = await asyncio.to_thread(self.path(key).open, "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"no stored recording {key}") from exc
        try:
            await asyncio.to_thread(handle.seek, first)
            left = None if last is None else last - first + 1
            while left is None or left > 0:
                want = CHUNK if left is None else min(CHUNK, left)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            # Closed here, not in a thread: when the reader goes away mid-file (a seek, a closed
            # tab) this runs as the generator is cancelled or finalised, where an await may not
            # run, and the file would stay open until the garbage collector found it.
            with contextlib.suppress(OSError):
                handle.close()

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The whole file, in chunks."""
        return self.read_range(key)
