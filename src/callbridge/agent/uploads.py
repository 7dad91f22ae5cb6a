"""The agent uploads its Asterisk's recordings to the hub: chunked, resumable, checked.

A call's ``RecordingAvailable`` (the tracker emits it when the call's last channel hangs up, so
MixMonitor has stopped writing) leaves an upload row in the outbox, in the same commit as the
event. Once the hub has acknowledged that event (so its pending recording exists), the uploader:

1. finds the file inside the configured recordings directory (never outside it: a name that
   leads elsewhere, also through a symbolic link, is refused and the hub is told why), waits
   until it has not changed for ``upload_settle_seconds``, refuses it when it is over
   ``recordings_max_bytes``, and reads its size and SHA-256;
2. announces it (``POST /agent/v1/recordings``); the hub answers how many bytes it already has,
   or that no such recording is waiting (the row is dropped);
3. sends the rest in chunks (``PUT …/data?offset=``), each with its own SHA-256; a chunk the hub
   refuses as corrupt is sent again, an offset the hub does not expect is corrected from its
   answer;
4. asks the hub to check the whole file (``POST …/complete``); only then is the row deleted.

Anything else (hub down, a cut, a hub restart, an agent restart) leaves the row in the outbox,
tried again with capped back-off: a new try announces the file again and goes on from the bytes
the hub has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from callbridge.agent.config import AgentConfig
from callbridge.agent.outbox import Outbox, Upload
from callbridge.domain.recordings import RecordingUnavailable
from callbridge.pbx.asterisk.recordings import DirectoryRecordings

log = logging.getLogger(__name__)

# A chunk refused as corrupt this many times in a row: give up this try (retried later).
MAX_BAD_CHUNKS = 5
# A file that is still missing after this many tries is reported as gone.
MAX_MISSING_TRIES = 40


class _Later(Exception):
    """This try failed; keep the upload and try again later."""


class _Refuse(Exception):
    """This file will never be sent; tell the hub why and drop it."""


class _Done(Exception):
    """The hub has the file, or does not want it: drop the row."""


class Uploader:
    def __init__(self, config: AgentConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.directory = DirectoryRecordings(config.recordings_dir)
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        # Figures (status report, tests).
        self.sent_bytes = 0  # chunk bytes sent to the hub, re-sent ones included
        self.uploaded = 0  # files the hub confirmed
        self.refused_chunks = 0  # chunks the hub refused as corrupt

    def wake(self) -> None:
        self._wake.set()

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.config.http_url,
                headers={"Authorization": f"Bearer {self.config.token}"},
                timeout=self.config.upload_timeout,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                due = self.outbox.uploads_due(time.time())
                for item in due:
                    await self.upload(item)
                if due:
                    continue
                next_at = self.outbox.uploads_next_at()
                wait = 60.0 if next_at is None else min(60.0, max(0.01, next_at - time.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self.aclose()

    # -- one file ---------------------------------------------------------------------------------

    async def upload(self, item: Upload) -> None:
        """One try at one file; the row goes when the hub confirms, or is moved to a later try."""
        try:
            try:
                await self._send(item)
            except _Refuse as refused:
                await self._refuse(item, str(refused))
        except _Done:
            self.outbox.upload_done(item.id)
        except (_Later, httpx.HTTPError, OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** min(item.attempts, 20))
            delay *= random.uniform(0.8, 1.2)
            log.info(
                "recording %s of call %s not uploaded yet (%s); next try in %.1f s",
                Path(item.reference).name,
                item.call_id,
                reason,
                delay,
            )
            self.outbox.upload_retry(item.id, reason, time.time() + delay)

    async def _send(self, item: Upload) -> None:
        try:
            path = self.directory.locate(item.reference)
        except RecordingUnavailable as exc:
            raise _Refuse(exc.message) from exc
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError as exc:
            if item.attempts + 1 >= MAX_MISSING_TRIES:
                raise _Refuse(f"no file {path.name} in the recordings directory") from exc
            raise _Later(f"no file {path.name} in the recordings directory (yet)") from exc
        except PermissionError as exc:
            raise _Later(f"the agent may not read {path.name} (permissions)") from exc
        if not path.is_file():
            raise _Refuse(f"{path.name} is not a regular file")
        if time.time() - stat.st_mtime < self.config.upload_settle_seconds:
            raise _Later("Asterisk may still be writing the file")
        size = stat.st_size
        if size > self.config.recordings_max_bytes:
            raise _Refuse(
                f"the file has {size} bytes, over the agent's cap of {self.config.recordings_max_bytes}"
                " (recordings_max_bytes)"
            )
        if size == 0:
            raise _Refuse("the file is empty (nothing was recorded)")
        sha256 = await asyncio.to_thread(_sha256, path)
        client = self.client()
        begun = await client.post(
            "/agent/v1/recordings",
            json={"call_id": item.call_id, "reference": item.reference, "size": size, "sha256": sha256},
        )
        if begun.status_code == 404:
            log.warning(
                "the hub has no recording %s of call %s waiting; not sending it",
                path.name,
                item.call_id,
            )
            raise _Done
        if begun.status_code == 413:
            log.error("the hub refused recording %s: %s", path.name, _message(begun))
            raise _Done
        _expect(begun, 200)
        state = begun.json()
        recording_id = int(state["recording_id"])
        if state["status"] == "ready":
            raise _Done
        await self.transfer(
            client, "/agent/v1/recordings", recording_id, path, size, sha256, int(state["offset"]), state
        )
        self.uploaded += 1
        log.info("recording %s of call %s uploaded (%d bytes)", path.name, item.call_id, size)
        raise _Done

    async def transfer(
        self,
        client: httpx.AsyncClient,
        base: str,
        target_id: int,
        path: Path,
        size: int,
        sha256: str,
        offset: int,
        state: dict[str, Any],
    ) -> None:
        """Send ``path`` from ``offset`` in checked chunks to ``{base}/{target_id}/data``, then
        ask the hub to check the whole (``…/complete``). Recordings and voicemails share it.
        Returns once the hub holds the file; raises ``_Done`` when the hub no longer wants it,
        ``_Later`` to try again."""
        chunk = max(1024, min(self.config.upload_chunk_bytes, int(state["chunk_bytes"])))
        query = {"size": str(size), "sha256": sha256}
        bad = 0
        with path.open("rb") as handle:
            while offset < size:
                data = await asyncio.to_thread(_read_at, handle, offset, min(chunk, size - offset))
                if not data:
                    raise _Later("the file became shorter while it was sent")
                sent = await self._put(client, f"{base}/{target_id}/data", offset, data, query)
                if sent.status_code == 200:
                    offset = int(sent.json()["offset"])
                    bad = 0
                elif sent.status_code == 409:
                    offset = int(sent.json()["error"]["details"]["offset"])
                elif sent.status_code == 422:
                    self.refused_chunks += 1
                    bad += 1
                    log.warning(
                        "the hub refused a chunk of %s at byte %d as corrupt; sending it again",
                        path.name,
                        offset,
                    )
                    if bad >= MAX_BAD_CHUNKS:
                        raise _Later(f"the hub refused the chunk at byte {offset} {bad} times")
                elif sent.status_code == 404:
                    raise _Done
                else:
                    _expect(sent, 200)
        done = await client.post(f"{base}/{target_id}/complete", params=query)
        if done.status_code == 404:
            raise _Done
        if done.status_code in (409, 422):
            raise _Later(f"the hub did not accept the whole file: {_message(done)}")
        _expect(done, 200)

    async def _put(
        self, client: httpx.AsyncClient, url: str, offset: int, data: bytes, query: dict[str, str]
    ) -> httpx.Response:
        """Send one chunk (a seam for tests that corrupt a chunk on its way)."""
        self.sent_bytes += len(data)
        chunk_sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        return await client.put(
            url,
            params={**query, "offset": str(offset)},
            content=data,
            headers={
                "X-Chunk-SHA256": chunk_sha256,
                "Content-Type": "application/octet-stream",
            },
        )

    async def _refuse(self, item: Upload, reason: str) -> None:
        log.error("recording %s of call %s is not sent: %s", Path(item.reference).name, item.call_id, reason)
        answer = await self.client().post(
            "/agent/v1/recordings/refused",
            json={"call_id": item.call_id, "reference": item.reference, "reason": reason[:400]},
        )
        if answer.status_code in (204, 404):
            raise _Done
        _expect(answer, 204)


def delete_copy(directory: DirectoryRecordings, reference: str) -> dict[str, str]:
    """The hub purged a recording this agent uploaded: delete the PBX's copy, only when it is a
    file inside the recordings directory. ``{"result": "deleted"|"not_found"|"refused",
    "detail"}``."""
    if not reference or "\x00" in reference:
        return {"result": "refused", "detail": "no file name"}
    try:
        path = directory.locate(reference)
    except RecordingUnavailable as exc:
        return {"result": "refused", "detail": exc.message}
    except (OSError, RuntimeError, ValueError):  # a symbolic link loop, a name too long
        return {"result": "refused", "detail": "the file name cannot be resolved"}
    if path == directory.root.resolve():
        return {"result": "refused", "detail": "the recordings directory itself is not deleted"}
    try:
        if not path.exists():
            return {"result": "not_found", "detail": f"no file {path.name} in the recordings directory"}
        if not path.is_file():
            return {"result": "refused", "detail": f"{path.name} is not a regular file"}
        path.unlink()
    except FileNotFoundError:
        return {"result": "not_found", "detail": f"no file {path.name} in the recordings directory"}
    except PermissionError:
        return {"result": "refused", "detail": f"the agent may not delete {path.name} (permissions)"}
    except OSError as exc:
        return {"result": "refused", "detail": f"{path.name} could not be deleted ({type(exc).__name__})"}
    log.info("recording %s deleted: the hub purged it", path.name)
    return {"result": "deleted", "detail": path.name}


def _read_at(handle: BinaryIO, offset: int, count: int) -> bytes:
    handle.seek(offset)
    return handle.read(count)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            sha.update(block)
    return sha.hexdigest()


def _message(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        body: Any = response.json()
        return str(body["error"]["message"])
    return f"HTTP {response.status_code}"


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise _Later(f"the hub answered {response.status_code}: {_message(response)}")
