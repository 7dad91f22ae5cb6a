"""Optional transcoding of fetched recordings to Opus or MP3 with ffmpeg, to save space.

A telephone call recorded as 8 kHz 16-bit WAV takes 16 kB a second; as Opus at 24 kbit/s about
3 kB. The fetch worker transcodes a fetched file before storing it (when
``CALLBRIDGE_RECORDINGS_TRANSCODE`` is ``opus`` or ``mp3``); the original's checksum and duration
stay in the recording's row, the stored file's size and content type describe what is served.
A file ffmpeg cannot convert is stored as fetched (nothing is lost), with a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# format → (extension of the stored file, ffmpeg's output options)
FORMATS: dict[str, tuple[str, list[str]]] = {
    # Ogg Opus, tuned for speech; plays in every current browser.
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "24k", "-application", "voip", "-f", "ogg"]),
    # MP3 (LAME VBR quality 7, about 40–60 kbit/s for a phone call): for old players.
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-q:a", "7", "-f", "mp3"]),
}


class Transcoder:
    """``await transcoder(source)`` → the converted file next to ``source``, or ``None`` when
    ffmpeg cannot convert it (the caller stores the original)."""

    def __init__(self, fmt: str, *, ffmpeg: str = "ffmpeg", timeout: float = 600.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown transcoding format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.format = fmt
        self.extension, self._options = FORMATS[fmt]
        self._ffmpeg = ffmpeg
        self.timeout = timeout

    async def __call__(self, source: Path, original_name: str) -> Path | None:
        if original_name.lower().endswith(self.extension):
            return None  # already in the wanted format
        exe = shutil.which(self._ffmpeg)
        if exe is None:
            log.warning("recordings: ffmpeg not found, storing %s as fetched", source.name)
            return None
        target = source.with_name(source.name + self.extension)
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-vn",
            "-map_metadata",
            "-1",
            *self._options,
            str(target),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.timeout):
                _, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            target.unlink(missing_ok=True)
            log.warning(
                "recordings: ffmpeg took longer than %.0f s, storing %s as fetched", self.timeout, source.name
            )
            return None
        if proc.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            target.unlink(missing_ok=True)
            first = err.decode(errors="replace").strip().splitlines()[:1]
            log.warning(
                "recordings: ffmpeg could not convert %s (%s), storing it as fetched",
                source.name,
                first[0][:200] if first else f"exit {proc.returncode}",
            )
            return None
        return target
