"""A Yeastar PBX's recordings, fetched through its OpenAPI (recording/download, then the file)."""

from __future__ import annotations

from pathlib import Path

from callbridge.pbx.yeastar.client import YeastarClient


class YeastarRecordings:
    """:class:`~callbridge.services.recordings.RecordingSource` over the link's client (one token
    per PBX: the link's). PBX errors are ``PbxError``s: the fetcher retries them with back-off."""

    def __init__(self, client: YeastarClient) -> None:
        self.client = client

    async def fetch(self, reference: str, dest: Path) -> str:
        return await self.client.download_recording(reference, dest)
