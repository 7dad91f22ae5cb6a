"""Recording storage in any S3-compatible store (AWS S3, MinIO, Ceph, Garage, …).

The same interface as :class:`callbridge.media.storage.LocalStorage`: put a finished local file
under a key, read it whole or a byte range of it (an HTTP ranged GET: a range never downloads
the whole object), tell its size, whether it exists, delete it. boto3's client is synchronous
and thread-safe: every call runs in a worker thread. Any failure to reach the store, or a refusal
other than "no such key", is a :class:`StorageUnavailable` whose message names the error's kind
only (never an address with credentials, never the secret).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from callbridge.domain.errors import NotFound, StorageUnavailable
from callbridge.domain.recordings import S3Location, content_type_for
from callbridge.media.storage import CHUNK, _check_key

T = TypeVar("T")

_MISSING = {"404", "NoSuchKey", "NotFound"}


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
        return f"the recordings store refused the request ({code})"
    return f"the recordings store could not be reached ({type(exc).__name__})"


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


class S3Storage:
    """Recordings as objects under ``s3://bucket/prefix/``."""

    def __init__(
        self,
        location: S3Location,
        scratch: Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.location = location
        self._scratch = scratch
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.location.bucket}/{self.location.prefix})"

    @property
    def scratch(self) -> Path:
        """Where fetches write before a file is put (uploaded, then removed)."""
        return self._scratch

    def object_key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound("no stored recording") from exc
            raise StorageUnavailable(_describe(exc)) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(_describe(exc)) from exc

    async def put(self, key: str, source: Path) -> None:
        """Upload ``source`` (a finished local file, which is consumed) under ``key``; large files
        go in parts. The object appears whole or not at all."""
        name = self.object_key(key)
        extra = {"ContentType": content_type_for(key)}
        await self._call(self._client.upload_file, str(source), self.location.bucket, name, ExtraArgs=extra)
        await asyncio.to_thread(source.unlink, True)

    async def size(self, key: str) -> int:
        head = await self._call(
            self._client.head_object, Bucket=self.location.bucket, Key=self.object_key(key)
        )
        return int(head["ContentLength"])

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except NotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.location.bucket, Key=self.object_key(key))

    async def read_range(self, key: str, first: int = 0, last: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``first``..``last`` (inclusive; ``None``: to the end), in chunks, from one GET
        with ``Range: bytes=first-last``."""
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.object_key(key)}
        if first or last is not None:
            args["Range"] = f"bytes={first}-{'' if last is None else last}"
        answer = await self._call(self._client.get_object, **args)
        body = answer["Body"]
        try:
            while True:
                chunk: bytes = await self._call(body.read, CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            # Not in a thread: this also runs as the generator is cancelled or finalised (see
            # LocalStorage.read_range); closing the stream releases its connection.
            with contextlib.suppress(Exception):
                body.close()

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The whole object, in chunks."""
        return self.read_range(key)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._client.close)
